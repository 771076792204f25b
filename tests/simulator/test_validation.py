"""Asynchronous validation: official samples pass, and each rule refuses what it should."""

from __future__ import annotations

import copy
from datetime import timedelta

import pytest

from .helpers import (
    BUYER,
    SAMPLES_DIR,
    TAXPAYER_TIN,
    details,
    error_codes,
    invoice,
    load_sample,
    login,
    make_client,
    now_utc,
    prepare_sample,
    submit,
    submit_one,
    wait_final,
)

SAMPLE_NAMES = sorted(p.name for p in SAMPLES_DIR.glob("1.0-*.json"))


@pytest.fixture()
def headers(client):
    return login(client)


def outcome(client, headers, document, code="DOC-1") -> dict:
    return details(client, headers, submit_one(client, headers, document, code))


def test_there_are_official_samples_to_check():
    assert len(SAMPLE_NAMES) >= 6


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_each_official_sample_validates_once_dated_now_with_real_identifiers(client, name):
    sample = load_sample(name)
    self_billed = sample["Invoice"][0]["InvoiceTypeCode"][0]["_"] in {"11", "12", "13", "14"}
    headers = login(client, BUYER) if self_billed else login(client)
    issuer = "C58101234560" if self_billed else TAXPAYER_TIN
    document = prepare_sample(sample, issuer_tin=issuer, issuer_brn="200501012345" if self_billed else "202001234567")
    body = outcome(client, headers, document, name)
    assert body["status"] == "Valid", error_codes(body)
    assert body["validationResults"]["status"] == "Valid"
    assert body["longId"]
    assert body["issuerTin"] == issuer


@pytest.mark.parametrize("name", SAMPLE_NAMES)
def test_official_samples_as_published_are_invalid(client, name):
    """The placeholders ("Supplier's TIN") and the 2024 dates must not pass."""
    sample = load_sample(name)
    sample["Invoice"][0]["AccountingSupplierParty"][0]["Party"][0]["PartyIdentification"][0]["ID"][0]["_"] = TAXPAYER_TIN
    sample["Invoice"][0]["AccountingCustomerParty"][0]["Party"][0]["PartyIdentification"][0]["ID"][0]["_"] = TAXPAYER_TIN
    codes = error_codes(outcome(client, login(client), sample))
    assert "CF321" in codes  # issued in 2024: too old


def test_invalid_document_has_documented_error_shape_and_empty_long_id(client, headers):
    document = invoice("BAD-TEL")
    del document["Invoice"][0]["AccountingCustomerParty"][0]["Party"][0]["Contact"]
    body = outcome(client, headers, document)
    assert body["status"] == "Invalid"
    assert body["longId"] == ""
    assert body["dateTimeValidated"]
    steps = body["validationResults"]["validationSteps"]
    assert body["validationResults"]["status"] == "Invalid"
    invalid = [s for s in steps if s["status"] == "Invalid"]
    assert [s["name"] for s in invalid] == ["Step02-Core Fields Validator"]
    error = invalid[0]["error"]
    assert error["errorCode"] == "Error02"
    (inner,) = error["innerError"]
    assert set(inner) >= {"errorCode", "error", "errorMS", "propertyName", "propertyPath", "innerError"}
    assert inner["errorCode"] == "CF349"
    assert inner["error"] == "Contact number - BUYER is required"
    assert inner["propertyPath"] == "Invoice.AccountingCustomerParty.Party.Contact.Telephone"
    assert inner["errorMS"]


@pytest.mark.parametrize("path, code", [
    (("ID",), "CF301"),
    (("IssueTime",), "CF301"),
    (("DocumentCurrencyCode",), "CF301"),
    (("LegalMonetaryTotal",), "CF301"),
    (("TaxTotal",), "CF301"),
    (("InvoiceLine",), "CF306"),
    (("AccountingSupplierParty", "Party", "IndustryClassificationCode"), "CF301"),
    (("AccountingSupplierParty", "Party", "Contact"), "CF348"),
    (("AccountingSupplierParty", "Party", "PostalAddress"), "CF301"),
    (("AccountingCustomerParty", "Party", "PartyLegalEntity"), "CF301"),
    (("InvoiceLine", "Item"), "CF301"),
    (("InvoiceLine", "Price"), "CF301"),
    (("InvoiceLine", "ItemPriceExtension"), "CF301"),
])
def test_missing_mandatory_fields_are_reported(client, headers, path, code):
    document = invoice("MISSING")
    node = document["Invoice"][0]
    for name in path[:-1]:
        node = node[name][0]
    del node[path[-1]]
    body = outcome(client, headers, document)
    assert body["status"] == "Invalid"
    assert code in error_codes(body)


def test_internal_id_longer_than_50_characters(client, headers):
    assert "CF302" in error_codes(outcome(client, headers, invoice("X" * 51)))


def test_notes_need_the_original_reference(client, headers):
    document = invoice("CN-1")
    document["Invoice"][0]["InvoiceTypeCode"][0]["_"] = "02"
    assert "CF307" in error_codes(outcome(client, headers, document))


@pytest.mark.parametrize("where, value, code", [
    (("InvoiceTypeCode",), "99", "CD401"),
    (("DocumentCurrencyCode",), "XYZ", "CD403"),
    (("TaxTotal", "TaxSubtotal", "TaxCategory", "ID"), "99", "CD404"),
    (("AccountingSupplierParty", "Party", "PostalAddress", "CountrySubentityCode"), "99", "CD405"),
    (("AccountingCustomerParty", "Party", "PostalAddress", "Country", "IdentificationCode"), "XXX", "CD406"),
    (("AccountingSupplierParty", "Party", "IndustryClassificationCode"), "99999", "CD407"),
    (("InvoiceLine", "Item", "CommodityClassification", "ItemClassificationCode"), "999", "CD409"),
])
def test_codes_are_checked_against_the_official_tables(client, headers, where, value, code):
    document = invoice("CODES")
    node = document["Invoice"][0]
    for name in where:
        node = node[name][0]
    node["_"] = value
    body = outcome(client, headers, document)
    assert body["status"] == "Invalid"
    assert code in error_codes(body)


def test_unit_code_and_version_are_checked(client, headers):
    document = invoice("UNIT")
    document["Invoice"][0]["InvoiceLine"][0]["InvoicedQuantity"][0]["unitCode"] = "NOT-A-UNIT"
    document["Invoice"][0]["InvoiceTypeCode"][0]["listVersionID"] = "9.9"
    codes = error_codes(outcome(client, headers, document))
    assert "CD410" in codes and "CD402" in codes


@pytest.mark.parametrize("tin", ["C0123456780", "C12345", "X12345678900", "IG12", "C123456789", "OG12345678901"])
def test_malformed_buyer_tins_are_refused(client, headers, tin):
    body = outcome(client, headers, invoice("TIN", buyer_tin=tin))
    assert "TX301" in error_codes(body)


@pytest.mark.parametrize("tin", ["IG12345678912", "C58101234560", "D1234567890", "EI00000000010",
                                 "EI00000000020", "EI00000000040"])
def test_well_formed_and_general_buyer_tins_pass(client, headers, tin):
    assert outcome(client, headers, invoice("TIN", buyer_tin=tin))["status"] == "Valid"


def test_general_tin_in_the_wrong_role_is_refused(client, headers):
    body = outcome(client, headers, invoice("GEN", buyer_tin="EI00000000030"))
    assert "TX302" in error_codes(body)


def test_self_billed_may_have_a_foreign_supplier_general_tin(client):
    headers = login(client, BUYER)
    document = invoice("SB-GEN", supplier_tin="EI00000000030", buyer_tin="C58101234560")
    document["Invoice"][0]["InvoiceTypeCode"][0]["_"] = "11"
    assert outcome(client, headers, document)["status"] == "Valid"


def test_general_public_buyer_may_leave_address_and_phone_blank(client, headers):
    document = invoice("CONS", buyer_tin="EI00000000010", buyer_brn="NA")
    party = document["Invoice"][0]["AccountingCustomerParty"][0]["Party"][0]
    del party["PostalAddress"], party["Contact"]
    assert outcome(client, headers, document)["status"] == "Valid"


def test_issue_date_older_than_72_hours_is_refused(client, headers):
    old = outcome(client, headers, invoice("OLD", issued_at=now_utc() - timedelta(hours=72, minutes=1)))
    assert "CF321" in error_codes(old)
    recent = outcome(client, headers, invoice("RECENT", issued_at=now_utc() - timedelta(hours=71)), "RECENT")
    assert recent["status"] == "Valid"


def test_issue_date_in_the_future_is_refused(client, headers):
    body = outcome(client, headers, invoice("FUTURE", issued_at=now_utc() + timedelta(minutes=10)))
    assert "CF322" in error_codes(body)
    assert any("in the future" in e["error"] for s in body["validationResults"]["validationSteps"]
               if s["status"] == "Invalid" for e in s["error"]["innerError"])


def test_badly_formatted_issue_time_is_refused(client, headers):
    document = invoice("FMT")
    document["Invoice"][0]["IssueTime"][0]["_"] = "10:00"
    assert "CF303" in error_codes(outcome(client, headers, document))


def test_non_myr_documents_need_an_exchange_rate(client, headers):
    document = invoice("USD-1")
    document["Invoice"][0]["DocumentCurrencyCode"][0]["_"] = "USD"
    assert "CF501" in error_codes(outcome(client, headers, document, "USD-1"))
    with_rate = copy.deepcopy(document)
    with_rate["Invoice"][0]["ID"][0]["_"] = "USD-2"
    with_rate["Invoice"][0]["TaxExchangeRate"] = [{"SourceCurrencyCode": [{"_": "USD"}],
                                                   "TargetCurrencyCode": [{"_": "MYR"}],
                                                   "CalculationRate": [{"_": 4.35}]}]
    assert outcome(client, headers, with_rate, "USD-2")["status"] == "Valid"
    wrong = copy.deepcopy(with_rate)
    wrong["Invoice"][0]["ID"][0]["_"] = "USD-3"
    wrong["Invoice"][0]["TaxExchangeRate"][0]["TargetCurrencyCode"][0]["_"] = "SGD"
    assert "CF502" in error_codes(outcome(client, headers, wrong, "USD-3"))


def test_signed_versions_need_a_signature(client, headers):
    document = invoice("V11")
    document["Invoice"][0]["InvoiceTypeCode"][0]["listVersionID"] = "1.1"
    assert "DS301" in error_codes(outcome(client, headers, document))


def test_duplicate_document_within_two_hours_is_ds302_naming_the_earlier_uuid(client, headers):
    moment = now_utc()
    first = submit_one(client, headers, invoice("SAME-1", issued_at=moment), "SAME-1")
    second = submit_one(client, headers, invoice("SAME-1", issued_at=moment, amount=5), "SAME-1b")
    assert details(client, headers, first)["status"] == "Valid"
    body = details(client, headers, second)
    assert body["status"] == "Invalid"
    step = next(s for s in body["validationResults"]["validationSteps"] if s["status"] == "Invalid")
    assert step["name"] == "Step03-Duplicated Submission Validator"
    (inner,) = step["error"]["innerError"]
    assert inner["errorCode"] == "DS302"
    assert first in inner["error"] and second in inner["error"]
    assert inner["propertyName"] == "document"


def test_a_different_issue_moment_or_number_is_not_a_duplicate(client, headers):
    moment = now_utc()
    a = submit_one(client, headers, invoice("NUM-1", issued_at=moment), "A")
    b = submit_one(client, headers, invoice("NUM-2", issued_at=moment), "B")
    c = submit_one(client, headers, invoice("NUM-1", issued_at=moment - timedelta(seconds=1)), "C")
    assert [details(client, headers, u)["status"] for u in (a, b, c)] == ["Valid"] * 3


def test_same_number_from_another_supplier_is_not_a_duplicate(client):
    moment = now_utc()
    one = login(client)
    two = login(client, ("demo-taxpayer-2", "demo-taxpayer-2-secret"))
    a = submit_one(client, one, invoice("SHARED", issued_at=moment), "A")
    b = submit_one(client, two, invoice("SHARED", issued_at=moment, supplier_tin="C10000000010"), "B")
    assert details(client, one, a)["status"] == details(client, two, b)["status"] == "Valid"


def test_duplicate_window_is_configurable():
    client = make_client(validation={"duplicate_document_window_seconds": 0})
    headers = login(client)
    moment = now_utc()
    submit_one(client, headers, invoice("W-1", issued_at=moment), "A")
    second = submit_one(client, headers, invoice("W-1", issued_at=moment, amount=2), "B")
    assert details(client, headers, second)["status"] == "Valid"


def test_an_invalid_first_document_does_not_block_its_corrected_resubmission(client, headers):
    moment = now_utc()
    broken = invoice("FIX-1", issued_at=moment)
    del broken["Invoice"][0]["AccountingCustomerParty"][0]["Party"][0]["Contact"]
    first = submit_one(client, headers, broken, "A")
    second = submit_one(client, headers, invoice("FIX-1", issued_at=moment), "B")
    assert details(client, headers, first)["status"] == "Invalid"
    assert details(client, headers, second)["status"] == "Valid"


def test_self_billed_duplicates_key_on_the_buyer(client):
    headers = login(client, BUYER)
    moment = now_utc()
    uuids = []
    for supplier in ("C25845632020", "C10000000010"):
        document = invoice("SB-DUP", issued_at=moment, supplier_tin=supplier)
        document["Invoice"][0]["InvoiceTypeCode"][0]["_"] = "11"
        uuids.append(submit_one(client, headers, document, supplier))
    statuses = [details(client, headers, u)["status"] for u in uuids]
    assert statuses == ["Valid", "Invalid"]


def test_validation_is_asynchronous_with_a_configurable_delay():
    client = make_client(validation={"delay_seconds": 0.4, "per_document_seconds": 0.0})
    headers = login(client)
    response = submit(client, headers, [(invoice("ASYNC"), "ASYNC")])
    uid = response.json()["submissionUid"]
    early = client.get(f"/api/v1.0/documentsubmissions/{uid}", headers=headers).json()
    assert early["documentSummary"][0]["status"] == "Submitted"
    assert early["documentSummary"][0]["longId"] == ""
    assert early["documentSummary"][0]["dateTimeValidated"] is None
    steps = client.get(f"/api/v1.0/documents/{early['documentSummary'][0]['uuid']}/details",
                       headers=headers).json()["validationResults"]
    assert steps["status"] == "Submitted"
    final = wait_final(client, headers, uid)
    assert final["documentSummary"][0]["status"] == "Valid"
