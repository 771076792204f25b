"""Field rules MyInvois enforces since 2025/2026 (API.md §7.4): state 17 only abroad or for the
consolidated general-public party, names and descriptions at most 300 characters, SST at most 35,
telephone at most 20 characters in E.164 form. Each refusal names the property path, in the
documented error shape."""

from __future__ import annotations

import pytest

from .helpers import BUYER_TIN, details, error_codes, invoice, load_sample, login, prepare_sample, submit_one

SUPPLIER = "Invoice.AccountingSupplierParty.Party"
BUYER = "Invoice.AccountingCustomerParty.Party"


@pytest.fixture()
def headers(client):
    return login(client)


def party(document: dict, which: str) -> dict:
    return document["Invoice"][0][which][0]["Party"][0]


def inner_errors(body: dict) -> list[dict]:
    return [inner for step in body["validationResults"]["validationSteps"] if step["status"] == "Invalid"
            for inner in step["error"]["innerError"]]


def refused(client, headers, document: dict, code: str = "RULE-1") -> list[dict]:
    body = details(client, headers, submit_one(client, headers, document, code))
    assert body["status"] == "Invalid", body
    errors = inner_errors(body)
    for error in errors:  # the documented shape, every key present
        assert set(error) == {"propertyName", "propertyPath", "errorCode", "error", "errorMS", "target", "innerError"}
    return errors


def accepted(client, headers, document: dict, code: str = "RULE-OK") -> None:
    body = details(client, headers, submit_one(client, headers, document, code))
    assert body["status"] == "Valid", error_codes(body)


def set_state(node: dict, state: str, country: str = "MYS") -> None:
    address = node["PostalAddress"][0]
    address["CountrySubentityCode"] = [{"_": state}]
    address["Country"][0]["IdentificationCode"][0]["_"] = country


@pytest.mark.parametrize("which, path", [("AccountingSupplierParty", SUPPLIER), ("AccountingCustomerParty", BUYER)])
def test_state_17_on_a_malaysian_address_is_refused(client, headers, which, path):
    document = invoice("ST-1")
    set_state(party(document, which), "17")
    errors = refused(client, headers, document)
    assert [(e["errorCode"], e["propertyPath"]) for e in errors] == [("CD411", f"{path}.PostalAddress.CountrySubentityCode")]
    assert "17" in errors[0]["error"]


def test_state_17_on_a_foreign_address_is_accepted(client, headers):
    document = invoice("ST-2")
    set_state(party(document, "AccountingCustomerParty"), "17", country="SGP")
    accepted(client, headers, document)


def test_state_17_for_the_general_public_buyer_of_a_consolidated_invoice_is_accepted(client, headers):
    document = prepare_sample(load_sample("1.0-Invoice-Consolidated-Sample.json"), internal_id="ST-3")
    buyer = party(document, "AccountingCustomerParty")
    assert buyer["PartyIdentification"][0]["ID"][0]["_"] == "EI00000000010"
    buyer["PostalAddress"][0]["CountrySubentityCode"] = [{"_": "17"}]
    buyer["PostalAddress"][0].setdefault("Country", [{"IdentificationCode": [{"_": "MYS"}]}])
    buyer["PostalAddress"][0]["Country"][0]["IdentificationCode"][0]["_"] = "MYS"
    accepted(client, headers, document)


def test_state_17_for_a_named_buyer_is_refused_even_when_the_supplier_is_fine(client, headers):
    document = invoice("ST-4", buyer_tin=BUYER_TIN)
    set_state(party(document, "AccountingCustomerParty"), "17")
    assert [e["errorCode"] for e in refused(client, headers, document)] == ["CD411"]


def test_names_and_descriptions_over_300_characters_are_refused(client, headers):
    document = invoice("LEN-1")
    party(document, "AccountingSupplierParty")["PartyLegalEntity"][0]["RegistrationName"] = [{"_": "S" * 301}]
    party(document, "AccountingCustomerParty")["PartyLegalEntity"][0]["RegistrationName"] = [{"_": "B" * 301}]
    party(document, "AccountingSupplierParty")["IndustryClassificationCode"][0]["name"] = "A" * 301
    document["Invoice"][0]["InvoiceLine"][0]["Item"][0]["Description"] = [{"_": "D" * 301}]
    found = {(e["errorCode"], e["propertyPath"]) for e in refused(client, headers, document)}
    assert found == {
        ("CF330", f"{SUPPLIER}.PartyLegalEntity.RegistrationName"),
        ("CF330", f"{BUYER}.PartyLegalEntity.RegistrationName"),
        ("CF331", f"{SUPPLIER}.IndustryClassificationCode.name"),
        ("CF332", "Invoice.InvoiceLine[0].Item.Description"),
    }


def test_exactly_300_characters_is_still_accepted(client, headers):
    document = invoice("LEN-2")
    party(document, "AccountingSupplierParty")["PartyLegalEntity"][0]["RegistrationName"] = [{"_": "S" * 300}]
    party(document, "AccountingSupplierParty")["IndustryClassificationCode"][0]["name"] = "A" * 300
    document["Invoice"][0]["InvoiceLine"][0]["Item"][0]["Description"] = [{"_": "D" * 300}]
    party(document, "AccountingCustomerParty")["PartyIdentification"][2]["ID"][0]["_"] = "W10-1808-32000001;W10-1808-32000002"  # 35
    party(document, "AccountingCustomerParty")["Contact"][0]["Telephone"] = [{"_": "+6012345678901234567"}]  # 20
    accepted(client, headers, document)


def test_sst_over_35_characters_is_refused(client, headers):
    document = invoice("SST-1")
    sst = party(document, "AccountingCustomerParty")["PartyIdentification"][2]["ID"]
    assert sst[0]["schemeID"] == "SST"
    sst[0]["_"] = "W10-1808-32000001;W10-1808-320000022"  # 36 characters
    assert len(sst[0]["_"]) == 36
    errors = refused(client, headers, document)
    assert [(e["errorCode"], e["propertyPath"]) for e in errors] == [("CF333", f"{BUYER}.PartyIdentification.ID")]


@pytest.mark.parametrize("telephone", ["+60 12345 6789", "+6012345678901234567890", "+60-123456789", "60123456789ext",
                                       "60+123456789", "NA"])
def test_a_telephone_that_is_not_e164_or_too_long_is_refused(client, headers, telephone):
    document = invoice("TEL-1")
    party(document, "AccountingSupplierParty")["Contact"][0]["Telephone"] = [{"_": telephone}]
    errors = refused(client, headers, document)
    assert [(e["errorCode"], e["propertyPath"]) for e in errors] == [("CF350", f"{SUPPLIER}.Contact.Telephone")]


def test_a_buyer_telephone_with_spaces_is_refused_with_the_buyer_code(client, headers):
    document = invoice("TEL-2")
    party(document, "AccountingCustomerParty")["Contact"][0]["Telephone"] = [{"_": "012 345 6789"}]
    errors = refused(client, headers, document)
    assert [(e["errorCode"], e["propertyPath"]) for e in errors] == [("CF351", f"{BUYER}.Contact.Telephone")]


def test_plain_digits_and_a_leading_plus_are_accepted(client, headers):
    document = invoice("TEL-3")
    party(document, "AccountingCustomerParty")["Contact"][0]["Telephone"] = [{"_": "0123456789"}]
    accepted(client, headers, document)
