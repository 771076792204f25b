"""Pre-validation: every rule names its field, valid invoices pass, all problems come at once."""

from __future__ import annotations

from collections.abc import Callable
from datetime import date, datetime, timezone
from decimal import Decimal

import pytest

from connector_core.document import MAX_DOCUMENT_BYTES, Problem, build, check_size, describe_problems, prevalidate
from connector_core.model import DocumentType, Invoice, OriginalReference, TaxLine
from tests.document.factories import make_address, make_counterparty, make_demo_taxpayer, make_invoice, make_line, make_service_line

ISSUED_AT = datetime(2026, 11, 24, 19, 30, tzinfo=timezone.utc)


def problem_fields(invoice: Invoice) -> list[str]:
    return [problem.field for problem in prevalidate(invoice)]


def with_buyer(**changes) -> Invoice:
    return make_invoice(buyer=make_counterparty(msic_code=None, business_activity=None, **changes))


def with_supplier(**changes) -> Invoice:
    return make_invoice(supplier=make_demo_taxpayer(**changes))


def with_buyer_address(**changes) -> Invoice:
    return with_buyer(address=make_address(**changes))


def with_line(**changes) -> Invoice:
    return make_invoice(lines=[make_line(), make_service_line(), make_line(**({"line_id": "3"} | changes))])


def with_tax(**changes) -> Invoice:
    tax = {"tax_type": "01", "rate": Decimal("10"), "taxable_amount": Decimal("30.00"), "tax_amount": Decimal("3.00")} | changes
    return with_line(taxes=[TaxLine(**tax)])


# --- a valid invoice has no problems ------------------------------------------------------------


@pytest.mark.parametrize("document_type", list(DocumentType), ids=lambda t: t.name)
def test_factory_invoices_of_every_type_are_valid(document_type: DocumentType) -> None:
    assert prevalidate(make_invoice(document_type=document_type)) == []


@pytest.mark.parametrize(
    "invoice",
    [
        pytest.param(make_invoice(currency="USD", exchange_rate=Decimal("4.4725")), id="foreign currency with rate"),
        pytest.param(with_buyer(tin="IG12345678912", id_type="NRIC", id_value="880101145678"), id="individual buyer"),
        pytest.param(with_buyer(tin="CS1234567890"), id="two-letter prefix"),
        pytest.param(with_buyer(tin="LE1234560"), id="labuan entity"),
        pytest.param(with_buyer(sst="W10-1808-32000001;W10-1808-32000002"), id="two SST numbers"),
        pytest.param(with_buyer(email=None), id="no e-mail"),
        pytest.param(with_buyer_address(country="SGP", state="17", city="Singapore", postal_zone="018989"), id="foreign buyer address"),
        pytest.param(
            with_buyer(tin="EI00000000020", id_type="PASSPORT", id_value="A12345678", address=make_address(country="SGP", state="17")),
            id="foreign buyer general TIN",
        ),
        pytest.param(with_buyer(tin="EI00000000040", id_value="NA"), id="government buyer general TIN"),
        pytest.param(
            with_line(taxes=[TaxLine(tax_type="E", taxable_amount=Decimal("30"), tax_amount=Decimal("0"), exemption_reason="Sales Tax (Exemption) Order 2025")]),
            id="exempt line with reason",
        ),
        pytest.param(with_line(unit_code=None, tariff_code="9800.00.0010", origin_country="CHN"), id="optional line fields"),
        pytest.param(make_invoice(document_type="02", original_references=[OriginalReference(internal_id="OLD-1")]), id="note of a pre-MyInvois original"),
    ],
)
def test_valid_variations_have_no_problems(invoice: Invoice) -> None:
    assert prevalidate(invoice) == []


def test_consolidated_invoice_may_use_na_for_the_general_public() -> None:
    # API.md §8: the consolidated buyer is "General Public", TIN EI00000000010, NA elsewhere.
    general_public = make_counterparty(
        name="General Public",
        tin="EI00000000010",
        id_value="NA",
        phone="NA",
        email=None,
        msic_code=None,
        business_activity=None,
        address=make_address(lines=["NA"], city="NA", postal_zone=None, state="17"),
    )
    lines = [make_line(classification_codes=["004"], description="Receipt 001 - 100")]
    assert prevalidate(make_invoice(buyer=general_public, lines=lines)) == []


def test_self_billed_invoice_from_a_foreign_supplier_may_use_the_foreign_supplier_tin() -> None:
    foreign_supplier = make_counterparty(
        tin="EI00000000030", id_type="PASSPORT", id_value="E98765432", msic_code="00000",
        address=make_address(lines=["1 Raffles Place"], city="Singapore", state="17", country="SGP"),
    )
    assert prevalidate(make_invoice(document_type="11", supplier=foreign_supplier)) == []


# --- each broken field is named -----------------------------------------------------------------

BROKEN: list[tuple[str, Callable[[], Invoice], str]] = [
    # header
    ("number missing", lambda: make_invoice(number=""), "number"),
    ("number too long", lambda: make_invoice(number="N" * 51), "number"),
    ("unknown currency", lambda: make_invoice(currency="XYZ", exchange_rate=Decimal("1")), "currency"),
    ("foreign currency without rate", lambda: make_invoice(currency="USD"), "exchange_rate"),
    ("zero exchange rate", lambda: make_invoice(currency="USD", exchange_rate=Decimal("0")), "exchange_rate"),
    ("negative exchange rate", lambda: make_invoice(currency="EUR", exchange_rate=Decimal("-4.9")), "exchange_rate"),
    ("unknown payment mode", lambda: make_invoice(payment_mode="99"), "payment_mode"),
    ("payment terms too long", lambda: make_invoice(payment_terms="x" * 301), "payment_terms"),
    ("billing frequency too long", lambda: make_invoice(billing_frequency="x" * 51), "billing_frequency"),
    (
        "billing period backwards",
        lambda: make_invoice(billing_period_start=date(2026, 10, 31), billing_period_end=date(2026, 10, 1)),
        "billing_period_end",
    ),
    # notes
    ("credit note without original", lambda: make_invoice(document_type="02", original_references=[]), "original_references"),
    ("self-billed debit note without original", lambda: make_invoice(document_type="13", original_references=[]), "original_references"),
    (
        "original without number",
        lambda: make_invoice(document_type="04", original_references=[OriginalReference(internal_id="", uuid="F9D425P6DS7D8IU9DS7D8IU9DS")]),
        "original_references[0].internal_id",
    ),
    (
        "original uuid malformed",
        lambda: make_invoice(document_type="12", original_references=[OriginalReference(internal_id="X", uuid="not-a-uuid")]),
        "original_references[0].uuid",
    ),
    # supplier
    ("supplier name missing", lambda: with_supplier(name=""), "supplier.name"),
    ("supplier name too long", lambda: with_supplier(name="S" * 301), "supplier.name"),
    ("supplier TIN missing", lambda: with_supplier(tin=""), "supplier.tin"),
    ("supplier BRN missing", lambda: with_supplier(id_value=""), "supplier.id_value"),
    ("supplier BRN NA with own TIN", lambda: with_supplier(id_value="NA"), "supplier.id_value"),
    ("supplier MSIC missing", lambda: with_supplier(msic_code=None), "supplier.msic_code"),
    ("supplier MSIC unknown", lambda: with_supplier(msic_code="12345"), "supplier.msic_code"),
    ("supplier activity missing", lambda: with_supplier(business_activity=None), "supplier.business_activity"),
    ("supplier activity too long", lambda: with_supplier(business_activity="a" * 301), "supplier.business_activity"),
    ("supplier SST too long", lambda: with_supplier(sst="W" * 36), "supplier.sst"),
    ("supplier three SST numbers", lambda: with_supplier(sst="A1;B2;C3"), "supplier.sst"),
    ("supplier SST empty", lambda: with_supplier(sst=""), "supplier.sst"),
    ("supplier TTX too long", lambda: with_supplier(ttx="T" * 18), "supplier.ttx"),
    ("supplier phone missing", lambda: with_supplier(phone=""), "supplier.phone"),
    ("supplier phone NA", lambda: with_supplier(phone="NA"), "supplier.phone"),
    ("supplier address city missing", lambda: with_supplier(address=make_address(city="")), "supplier.address.city"),
    ("supplier general TIN on a normal invoice", lambda: with_supplier(tin="EI00000000030"), "supplier.tin"),
    # buyer
    ("buyer phone missing", lambda: with_buyer(phone=""), "buyer.phone"),
    ("buyer phone with spaces", lambda: with_buyer(phone="+60 12-345 6789"), "buyer.phone"),
    ("buyer phone too long", lambda: with_buyer(phone="+6012345678901234567890"), "buyer.phone"),
    ("buyer phone too short", lambda: with_buyer(phone="+6012"), "buyer.phone"),
    ("buyer e-mail malformed", lambda: with_buyer(email="accounts.example.my"), "buyer.email"),
    ("buyer TIN too long", lambda: with_buyer(tin="C123456789012340"), "buyer.tin"),
    ("buyer TIN not ending in 0", lambda: with_buyer(tin="C5810123456"), "buyer.tin"),
    ("buyer TIN leading zero", lambda: with_buyer(tin="C0581012340"), "buyer.tin"),
    ("buyer TIN unknown prefix", lambda: with_buyer(tin="X5810123450"), "buyer.tin"),
    ("buyer TIN with dash", lambda: with_buyer(tin="C5810-123450"), "buyer.tin"),
    ("buyer TIN old OG prefix", lambda: with_buyer(tin="OG12345678910"), "buyer.tin"),
    ("buyer TIN individual without digits", lambda: with_buyer(tin="IG"), "buyer.tin"),
    ("buyer foreign-supplier general TIN", lambda: with_buyer(tin="EI00000000030", id_value="NA"), "buyer.tin"),
    ("self-billed issuer with general TIN", lambda: make_invoice(document_type="11", buyer=make_demo_taxpayer(tin="EI00000000010")), "buyer.tin"),
    ("self-billed supplier with foreign-buyer TIN", lambda: make_invoice(document_type="11", supplier=make_counterparty(tin="EI00000000020")), "supplier.tin"),
    ("buyer address first line empty", lambda: with_buyer_address(lines=[""]), "buyer.address.lines[0]"),
    ("buyer address line too long", lambda: with_buyer_address(lines=["Lot 1", "x" * 151]), "buyer.address.lines[1]"),
    ("buyer unknown state", lambda: with_buyer_address(state="99"), "buyer.address.state"),
    ("buyer unknown country", lambda: with_buyer_address(country="MY"), "buyer.address.country"),
    ("buyer state 17 in Malaysia", lambda: with_buyer_address(state="17"), "buyer.address.state"),
    ("buyer postcode too long", lambda: with_buyer_address(postal_zone="9" * 51), "buyer.address.postal_zone"),
    ("buyer city too long", lambda: with_buyer_address(city="C" * 51), "buyer.address.city"),
    # lines
    ("line description missing", lambda: with_line(description=""), "lines[2].description"),
    ("line description too long", lambda: with_line(description="d" * 301), "lines[2].description"),
    ("line id missing", lambda: with_line(line_id=""), "lines[2].line_id"),
    ("unknown classification", lambda: with_line(classification_codes=["003", "999"]), "lines[2].classification_codes[1]"),
    ("unknown unit", lambda: with_line(unit_code="BOX"), "lines[2].unit_code"),
    ("unknown origin country", lambda: with_line(origin_country="ZZZ"), "lines[2].origin_country"),
    ("unknown tax type", lambda: with_tax(tax_type="07"), "lines[2].taxes[0].tax_type"),
    ("tax rate above 100", lambda: with_tax(rate=Decimal("106")), "lines[2].taxes[0].rate"),
    ("exempt without reason", lambda: with_tax(tax_type="E", rate=None, tax_amount=Decimal("0")), "lines[2].taxes[0].exemption_reason"),
    ("exemption reason too long", lambda: with_tax(tax_type="E", exemption_reason="r" * 301), "lines[2].taxes[0].exemption_reason"),
]


@pytest.mark.parametrize(("broken", "expected_field"), [(make, field) for _, make, field in BROKEN], ids=[name for name, _, _ in BROKEN])
def test_each_broken_field_is_named(broken: Callable[[], Invoice], expected_field: str) -> None:
    # Exactly one problem: the rule fires for its own field and nothing else is disturbed.
    problems = prevalidate(broken())
    assert [p.field for p in problems] == [expected_field], describe_problems(problems)
    assert problems[0].message and problems[0].fix


def test_all_problems_are_reported_at_once() -> None:
    invoice = make_invoice(
        number="",
        currency="USD",
        supplier=make_demo_taxpayer(msic_code=None, phone=""),
        buyer=make_counterparty(tin="C5810123456", address=make_address(state="17")),
        lines=[make_line(), make_line(line_id="2", classification_codes=["999"], unit_code="BOX")],
    )
    assert problem_fields(invoice) == [
        "number",
        "exchange_rate",
        "supplier.phone",
        "supplier.msic_code",
        "buyer.tin",
        "buyer.address.state",
        "lines[1].classification_codes[0]",
        "lines[1].unit_code",
    ]


def test_problems_speak_to_a_clerk_and_say_what_to_do() -> None:
    [problem] = prevalidate(with_buyer(phone=""))
    assert problem == Problem(
        field="buyer.phone",
        message="the buyer's telephone number is missing",
        fix="enter it in international form such as +60123456789",
    )
    assert describe_problems([problem]) == [
        "buyer.phone: the buyer's telephone number is missing — enter it in international form such as +60123456789"
    ]


def test_tin_without_trailing_zero_suggests_adding_it() -> None:
    [problem] = prevalidate(with_buyer(tin="C5810123456"))
    assert "end in 0" in problem.message and "add a 0 at the end" in problem.fix


def test_problem_is_immutable() -> None:
    with pytest.raises(AttributeError):
        Problem("number", "m", "f").field = "other"  # type: ignore[misc]


# --- size ---------------------------------------------------------------------------------------


def test_ordinary_invoice_is_well_within_the_size_limit() -> None:
    assert check_size(build(make_invoice(), ISSUED_AT)) == []


def test_invoice_over_300_kb_is_caught() -> None:
    # About 850 bytes per line: 400 lines come to roughly 330 KB.
    lines = [make_line(line_id=str(n), description=f"Spare part {n:05d}") for n in range(1, 401)]
    built = build(make_invoice(lines=lines), ISSUED_AT)
    assert built.size > MAX_DOCUMENT_BYTES == 300 * 1024
    [problem] = check_size(built)
    assert problem.field == "document"
    assert "300 KB" in problem.message and "split" in problem.fix


def test_size_limit_is_inclusive_of_exactly_300_kb() -> None:
    from connector_core.document import BuiltDocument

    assert check_size(BuiltDocument.from_content("N", b"x" * MAX_DOCUMENT_BYTES)) == []
    assert [p.field for p in check_size(BuiltDocument.from_content("N", b"x" * (MAX_DOCUMENT_BYTES + 1)))] == ["document"]


def test_line_problems_count_lines_from_one_for_the_clerk() -> None:
    # The path follows the model (0-based); the sentence follows the printed invoice (1-based).
    [problem] = prevalidate(with_line(description=""))
    assert problem.field == "lines[2].description"
    assert problem.message == "the description of line 3 is missing"
