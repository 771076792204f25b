"""The builder's output: shape, exact amounts, hash/Base64 and determinism, for all eight types."""

from __future__ import annotations

import base64
import hashlib
import json
import re
from datetime import datetime, timedelta, timezone
from decimal import Decimal

import pytest

from connector_core.document import BuiltDocument, build, build_document, serialize, validation_link
from connector_core.model import DocumentType, OriginalReference, TaxLine
from tests.document.factories import (
    BUYER_TIN,
    DEMO_TIN,
    ORIGINAL_UUID,
    make_demo_taxpayer,
    make_invoice,
    make_line,
    make_service_line,
)

ISSUED_AT = datetime(2026, 11, 24, 19, 30, 5, tzinfo=timezone.utc)
ALL_TYPES = list(DocumentType)
NOTE_TYPES = [t for t in DocumentType if t.needs_original_reference]


def parsed(built: BuiltDocument) -> dict:
    """The document as MyInvois would read it, with numbers kept exact."""
    return json.loads(built.content, parse_float=Decimal, parse_int=Decimal)


def body(document: dict) -> dict:
    return document["Invoice"][0]


def value(element: list) -> object:
    """The leaf value of a single-valued element."""
    assert isinstance(element, list) and len(element) == 1
    return element[0]["_"]


def identification(party: dict, scheme: str) -> str:
    matches = [p["ID"][0]["_"] for p in party["PartyIdentification"] if p["ID"][0]["schemeID"] == scheme]
    assert len(matches) == 1, f"expected exactly one {scheme} identification, got {matches}"
    return matches[0]


@pytest.mark.parametrize("document_type", ALL_TYPES, ids=lambda t: t.name)
def test_every_type_builds_a_complete_version_1_0_document(document_type: DocumentType) -> None:
    invoice = make_invoice(document_type=document_type, number=f"DOC-{document_type.value}")
    document = parsed(build(invoice, ISSUED_AT))

    assert document["_D"] == "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
    assert document["_A"] == "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
    assert document["_B"] == "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"
    inv = body(document)
    assert value(inv["ID"]) == f"DOC-{document_type.value}"
    assert inv["InvoiceTypeCode"] == [{"_": document_type.value, "listVersionID": "1.0"}]
    assert value(inv["IssueDate"]) == "2026-11-24"
    assert value(inv["IssueTime"]) == "19:30:05Z"
    assert value(inv["DocumentCurrencyCode"]) == "MYR"
    # Version 1.0 is unsigned: MyInvois refuses these properties in a 1.0 JSON document.
    assert "UBLExtensions" not in inv and "Signature" not in inv
    assert len(inv["InvoiceLine"]) == 2

    supplier = inv["AccountingSupplierParty"][0]["Party"][0]
    buyer = inv["AccountingCustomerParty"][0]["Party"][0]
    assert identification(supplier, "TIN") == invoice.supplier.tin
    assert identification(buyer, "TIN") == invoice.buyer.tin
    assert supplier["IndustryClassificationCode"][0]["_"] == invoice.supplier.msic_code
    for party in (supplier, buyer):
        assert {"TIN", "BRN", "SST", "TTX"} == {p["ID"][0]["schemeID"] for p in party["PartyIdentification"]}


@pytest.mark.parametrize("document_type", NOTE_TYPES, ids=lambda t: t.name)
def test_notes_reference_each_original_with_id_and_uuid(document_type: DocumentType) -> None:
    originals = [
        OriginalReference(internal_id="INV-0998", uuid="AAAAAAAAAAAAAAAAAAAAAAAAAA"),
        OriginalReference(internal_id="INV-0999", uuid=ORIGINAL_UUID),
    ]
    inv = body(build_document(make_invoice(document_type=document_type, original_references=originals), ISSUED_AT))

    references = [ref["InvoiceDocumentReference"][0] for ref in inv["BillingReference"]]
    assert [(value(r["ID"]), value(r["UUID"])) for r in references] == [
        ("INV-0998", "AAAAAAAAAAAAAAAAAAAAAAAAAA"),
        ("INV-0999", ORIGINAL_UUID),
    ]


def test_an_original_without_a_myinvois_uuid_is_referenced_as_na() -> None:
    # The original predates e-invoicing: LHDN's guideline asks for "NA" in place of the uuid.
    invoice = make_invoice(document_type="02", original_references=[OriginalReference(internal_id="OLD-7")])
    inv = body(build_document(invoice, ISSUED_AT))
    assert inv["BillingReference"] == [{"InvoiceDocumentReference": [{"ID": [{"_": "OLD-7"}], "UUID": [{"_": "NA"}]}]}]


@pytest.mark.parametrize("document_type", ["01", "11"])
def test_invoices_carry_no_billing_reference(document_type: str) -> None:
    assert "BillingReference" not in body(build_document(make_invoice(document_type=document_type), ISSUED_AT))


@pytest.mark.parametrize("document_type", ["11", "12", "13", "14"])
def test_self_billed_keeps_supplier_and_buyer_in_their_ubl_roles(document_type: str) -> None:
    # As in LHDN's self-billed sample: the buyer (who issues) stays AccountingCustomerParty.
    invoice = make_invoice(document_type=document_type)
    assert invoice.issuer.tin == DEMO_TIN == invoice.buyer.tin
    inv = body(build_document(invoice, ISSUED_AT))
    assert identification(inv["AccountingCustomerParty"][0]["Party"][0], "TIN") == DEMO_TIN
    assert identification(inv["AccountingSupplierParty"][0]["Party"][0], "TIN") == BUYER_TIN


def test_amounts_come_out_exactly_as_the_model_computes_them() -> None:
    invoice = make_invoice(invoice_discount=Decimal("10.00"), invoice_charge=Decimal("2.50"), rounding_amount=Decimal("-0.01"))
    inv = body(parsed(build(invoice, ISSUED_AT)))

    totals = inv["LegalMonetaryTotal"][0]
    assert list(totals) == [
        "LineExtensionAmount",
        "TaxExclusiveAmount",
        "TaxInclusiveAmount",
        "AllowanceTotalAmount",
        "ChargeTotalAmount",
        "PayableRoundingAmount",
        "PayableAmount",
    ]
    assert {name: value(el) for name, el in totals.items()} == {
        "LineExtensionAmount": Decimal("130.00"),
        "TaxExclusiveAmount": Decimal("122.50"),  # 130 - 10 + 2.50
        "TaxInclusiveAmount": Decimal("133.50"),  # + 11 tax
        "AllowanceTotalAmount": Decimal("10.00"),
        "ChargeTotalAmount": Decimal("2.50"),
        "PayableRoundingAmount": Decimal("-0.01"),
        "PayableAmount": Decimal("133.49"),
    }
    assert all(el[0]["currencyID"] == "MYR" for el in totals.values())
    assert [(value(a["ChargeIndicator"]), value(a["Amount"])) for a in inv["AllowanceCharge"]] == [
        (False, Decimal("10.00")),
        (True, Decimal("2.50")),
    ]


def test_line_amounts_subtotal_total_price_and_discount() -> None:
    line = body(parsed(build(make_invoice(), ISSUED_AT)))["InvoiceLine"][0]
    # 2 x 17.50 = 35.00 subtotal; less the 5.00 discount = 30.00 excluding tax.
    assert line["InvoicedQuantity"] == [{"_": Decimal("2"), "unitCode": "C62"}]
    assert value(line["Price"][0]["PriceAmount"]) == Decimal("17.50")
    assert value(line["ItemPriceExtension"][0]["Amount"]) == Decimal("35.00")
    assert value(line["LineExtensionAmount"]) == Decimal("30.00")
    assert [(value(a["ChargeIndicator"]), value(a["Amount"])) for a in line["AllowanceCharge"]] == [(False, Decimal("5.00"))]
    assert [value(c["ItemClassificationCode"]) for c in line["Item"][0]["CommodityClassification"]] == ["003"]
    assert line["Item"][0]["CommodityClassification"][0]["ItemClassificationCode"][0]["listID"] == "CLASS"


def test_line_tax_has_percent_only_when_a_rate_is_given_and_exemption_reason_when_exempt() -> None:
    exempt = make_service_line(
        taxes=[TaxLine(tax_type="E", taxable_amount=Decimal("100.00"), tax_amount=Decimal("0"), exemption_reason="Exempt under Sales Tax Order")]
    )
    inv = body(build_document(make_invoice(lines=[make_line(), exempt]), ISSUED_AT))
    taxed, untaxed = (ln["TaxTotal"][0]["TaxSubtotal"][0] for ln in inv["InvoiceLine"])

    assert taxed["Percent"] == [{"_": Decimal("10")}]
    assert list(taxed) == ["TaxableAmount", "TaxAmount", "Percent", "TaxCategory"]
    assert "TaxExemptionReason" not in taxed["TaxCategory"][0]
    assert "Percent" not in untaxed
    assert untaxed["TaxCategory"][0]["ID"] == [{"_": "E"}]
    assert untaxed["TaxCategory"][0]["TaxExemptionReason"] == [{"_": "Exempt under Sales Tax Order"}]
    assert untaxed["TaxCategory"][0]["TaxScheme"] == [{"ID": [{"_": "OTH", "schemeID": "UN/ECE 5153", "schemeAgencyID": "6"}]}]


def test_header_tax_total_groups_subtotals_per_tax_type() -> None:
    second_sales_tax_line = make_line(
        line_id="3",
        unit_price=Decimal("10.00"),
        quantity=Decimal("1"),
        discount_amount=Decimal("0"),
        taxes=[TaxLine(tax_type="01", rate=Decimal("5"), taxable_amount=Decimal("10.00"), tax_amount=Decimal("0.50"))],
    )
    invoice = make_invoice(lines=[make_line(), make_service_line(), second_sales_tax_line])
    tax_total = body(build_document(invoice, ISSUED_AT))["TaxTotal"]

    assert len(tax_total) == 1
    assert value(tax_total[0]["TaxAmount"]) == invoice.tax_total == Decimal("11.50")
    grouped = {
        value(s["TaxCategory"][0]["ID"]): (value(s["TaxableAmount"]), value(s["TaxAmount"])) for s in tax_total[0]["TaxSubtotal"]
    }
    assert grouped == {"01": (Decimal("40.00"), Decimal("3.50")), "02": (Decimal("100.00"), Decimal("8.00"))}


def test_foreign_currency_adds_myr_tax_currency_and_exchange_rate() -> None:
    invoice = make_invoice(currency="USD", exchange_rate=Decimal("4.4725"))
    inv = body(parsed(build(invoice, ISSUED_AT)))

    assert value(inv["DocumentCurrencyCode"]) == "USD"
    assert value(inv["TaxCurrencyCode"]) == "MYR"
    assert inv["TaxExchangeRate"] == [
        {"SourceCurrencyCode": [{"_": "USD"}], "TargetCurrencyCode": [{"_": "MYR"}], "CalculationRate": [{"_": Decimal("4.4725")}]}
    ]
    assert value(inv["LegalMonetaryTotal"][0]["PayableAmount"]) == Decimal("141.00")
    assert inv["LegalMonetaryTotal"][0]["PayableAmount"][0]["currencyID"] == "USD"


def test_ringgit_invoice_has_no_exchange_rate() -> None:
    inv = body(build_document(make_invoice(), ISSUED_AT))
    assert "TaxExchangeRate" not in inv
    assert "TaxCurrencyCode" not in inv


def test_issue_date_and_time_are_the_given_moment_in_utc_not_the_erp_date() -> None:
    kuala_lumpur = timezone(timedelta(hours=8))
    issued = datetime(2026, 11, 25, 3, 15, 0, tzinfo=kuala_lumpur)  # = 2026-11-24 19:15:00 UTC
    inv = body(build_document(make_invoice(issue_date=datetime(2020, 1, 1).date()), issued))
    assert value(inv["IssueDate"]) == "2026-11-24"
    assert value(inv["IssueTime"]) == "19:15:00Z"


def test_naive_issue_time_is_refused() -> None:
    with pytest.raises(ValueError, match="timezone-aware"):
        build_document(make_invoice(), datetime(2026, 11, 24, 19, 30))


def test_optional_party_and_header_elements_are_left_out_when_empty() -> None:
    supplier = make_demo_taxpayer(email=None, address=make_demo_taxpayer().address.model_copy(update={"postal_zone": None}))
    inv = body(build_document(make_invoice(supplier=supplier, payment_mode=None, payment_terms=None), ISSUED_AT))
    party = inv["AccountingSupplierParty"][0]["Party"][0]
    assert party["Contact"] == [{"Telephone": [{"_": "+60123456789"}]}]
    assert "PostalZone" not in party["PostalAddress"][0]
    assert "PaymentMeans" not in inv and "PaymentTerms" not in inv and "InvoicePeriod" not in inv


def test_billing_period_and_payment_mode() -> None:
    invoice = make_invoice(
        billing_period_start=datetime(2026, 10, 1).date(), billing_period_end=datetime(2026, 10, 31).date(), billing_frequency="Monthly"
    )
    inv = body(build_document(invoice, ISSUED_AT))
    assert inv["InvoicePeriod"] == [
        {"StartDate": [{"_": "2026-10-01"}], "EndDate": [{"_": "2026-10-31"}], "Description": [{"_": "Monthly"}]}
    ]
    assert inv["PaymentMeans"] == [{"PaymentMeansCode": [{"_": "03"}]}]


def test_tariff_code_and_origin_country_on_the_item() -> None:
    line = make_line(tariff_code="9800.00.0010", origin_country="CHN")
    item = body(build_document(make_invoice(lines=[line]), ISSUED_AT))["InvoiceLine"][0]["Item"][0]
    assert [c["ItemClassificationCode"][0] for c in item["CommodityClassification"]] == [
        {"_": "9800.00.0010", "listID": "PTC"},
        {"_": "003", "listID": "CLASS"},
    ]
    assert item["OriginCountry"] == [{"IdentificationCode": [{"_": "CHN"}]}]


# --- serialisation, hash, Base64 -----------------------------------------------------------------


def test_content_is_minified_utf8_and_keeps_non_ascii_characters() -> None:
    invoice = make_invoice(buyer=make_invoice().buyer.model_copy(update={"name": "Kedai Runcit Ñandú 日本"}))
    built = build(invoice, ISSUED_AT)
    text = built.content.decode("utf-8")
    assert "Kedai Runcit Ñandú 日本" in text
    assert "\\u" not in text
    # Minified: once the string literals are removed, not a single whitespace character is left.
    outside_strings = re.sub(r'"(?:[^"\\]|\\.)*"', '""', text)
    assert not re.search(r"\s", outside_strings)


def test_hash_base64_and_size_describe_exactly_the_content() -> None:
    built = build(make_invoice(), ISSUED_AT)
    assert built.sha256_hex == hashlib.sha256(built.content).hexdigest()
    assert built.sha256_hex == built.sha256_hex.lower() and len(built.sha256_hex) == 64
    assert base64.b64decode(built.base64, validate=True) == built.content
    assert built.size == len(built.content)
    assert built.code_number == "INV-1001"


def test_submission_entry_is_what_the_submit_api_expects() -> None:
    built = build(make_invoice(number="INV-42"), ISSUED_AT)
    assert built.submission_entry() == {
        "format": "JSON",
        "documentHash": built.sha256_hex,
        "codeNumber": "INV-42",
        "document": built.base64,
    }


def test_built_document_is_immutable() -> None:
    built = build(make_invoice(), ISSUED_AT)
    with pytest.raises(AttributeError):
        built.sha256_hex = "0" * 64  # type: ignore[misc]


def test_same_invoice_and_time_give_identical_bytes() -> None:
    # Determinism matters: a rebuilt document must hash the same as the recorded one.
    first = build(make_invoice(), ISSUED_AT)
    second = build(make_invoice(), ISSUED_AT)
    assert first.content == second.content and first.sha256_hex == second.sha256_hex
    assert build(make_invoice(), ISSUED_AT + timedelta(seconds=1)).sha256_hex != first.sha256_hex


def test_decimal_arithmetic_results_serialise_digit_for_digit() -> None:
    # 0.1 + 0.2 is 0.30000000000000004 in binary floating point; as Decimal it stays 0.3.
    price = Decimal("0.1") + Decimal("0.2")
    line = make_line(
        quantity=Decimal("3"),
        unit_price=price,
        discount_amount=Decimal("0"),
        taxes=[TaxLine(tax_type="06", taxable_amount=Decimal("0.90"), tax_amount=Decimal("0"))],
    )
    content = build(make_invoice(lines=[line]), ISSUED_AT).content.decode()
    assert '"PriceAmount":[{"_":0.3,"currencyID":"MYR"}]' in content
    assert '"Amount":[{"_":0.90,"currencyID":"MYR"}]' in content
    assert "0.30000000000000004" not in content


@pytest.mark.parametrize(
    ("amount", "expected"),
    [
        (Decimal("1E+2"), "100"),
        (Decimal("1.5E-7"), "0.00000015"),
        (Decimal("123456789012.34"), "123456789012.34"),
        (Decimal("-0.01"), "-0.01"),
        (Decimal("-0"), "0"),
    ],
)
def test_amounts_never_use_scientific_notation(amount: Decimal, expected: str) -> None:
    assert serialize({"Amount": [{"_": amount}]}) == f'{{"Amount":[{{"_":{expected}}}]}}'.encode()


def test_floats_are_refused_because_they_have_already_lost_precision() -> None:
    # The model turns every amount into a Decimal; only an object built without validation can
    # carry a float, and the builder refuses it rather than let serialize() write it.
    invoice = make_invoice().model_copy(update={"currency": "USD", "exchange_rate": 4.465})
    with pytest.raises(TypeError, match=r"float 4\.465 .*amounts are Decimal"):
        build_document(invoice, ISSUED_AT)


def test_serialize_matches_the_standard_json_reading_of_the_document() -> None:
    document = build_document(make_invoice(), ISSUED_AT)
    reread = json.loads(serialize(document), parse_float=Decimal, parse_int=Decimal)
    # Integers in the dict (none today) and Decimals both come back as Decimal; booleans stay booleans.
    assert json.dumps(reread, default=str, sort_keys=True) == json.dumps(document, default=str, sort_keys=True)


# --- validation link -----------------------------------------------------------------------------


def test_validation_link_joins_portal_uuid_and_long_id() -> None:
    assert (
        validation_link("https://preprod.myinvois.hasil.gov.my/", "F9D425P6DS7D8IU9DS7D8IU9DS", "LIJAF97HJJKH8298KHADH09908570FDKK9S2LSIUHB377373")
        == "https://preprod.myinvois.hasil.gov.my/F9D425P6DS7D8IU9DS7D8IU9DS/share/LIJAF97HJJKH8298KHADH09908570FDKK9S2LSIUHB377373"
    )


def test_validation_link_needs_a_long_id() -> None:
    with pytest.raises(ValueError, match="longId"):
        validation_link("https://myinvois.hasil.gov.my", "F9D425P6DS7D8IU9DS7D8IU9DS", "")
