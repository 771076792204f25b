"""Our documents against LHDN's official 1.0 samples: same element names, same order, same shape.

MyInvois answers "Invalid structure" for elements in the wrong place or of the wrong shape, and
the official samples are the only structure known to pass. So every element we write must exist
at the same place in the sample, and elements present in both must keep the sample's order.
"""

from __future__ import annotations

from datetime import datetime, timezone
from decimal import Decimal

import pytest

from connector_core.document import build_document
from connector_core.model import DocumentType, TaxLine
from tests.conftest import load_sample
from tests.document.factories import make_invoice, make_line

ISSUED_AT = datetime(2026, 11, 24, 19, 30, tzinfo=timezone.utc)

SAMPLE_FOR_TYPE = {
    DocumentType.INVOICE: "1.0-Invoice-Sample.json",
    DocumentType.CREDIT_NOTE: "1.0-Credit-Note-Sample.json",
    DocumentType.DEBIT_NOTE: "1.0-Debit-Note-Sample.json",
    DocumentType.REFUND_NOTE: "1.0-Refund-Note-Sample.json",
    DocumentType.SELF_BILLED_INVOICE: "1.0-Self-Billed-Invoice-Sample.json",
    # LHDN publishes no self-billed note samples; the self-billed invoice sample has their shape
    # and the notes' billing reference is checked against the credit-note sample below.
    DocumentType.SELF_BILLED_CREDIT_NOTE: "1.0-Credit-Note-Sample.json",
    DocumentType.SELF_BILLED_DEBIT_NOTE: "1.0-Debit-Note-Sample.json",
    DocumentType.SELF_BILLED_REFUND_NOTE: "1.0-Refund-Note-Sample.json",
}


def merged_children(items: list) -> list[str]:
    """The element names under an array of objects, in first-seen order across its items.

    Array items of one element (e.g. two ``BillingReference`` entries holding different
    children) are merged, because each item must follow the same schema order."""
    names: list[str] = []
    for item in items:
        for name in item:
            if name not in names:
                names.append(name)
    return names


def child_items(items: list, name: str) -> list:
    return [child for item in items if isinstance(item.get(name), list) for child in item[name]]


def is_attribute(items: list, name: str) -> bool:
    """Attributes (schemeID, currencyID, ...) are plain strings next to ``"_"``, not arrays."""
    return any(name in item and not isinstance(item[name], list) for item in items)


def structure_differences(ours: list, sample: list, path: str) -> list[str]:
    """Every element of ours missing from the sample, out of the sample's order, or of another kind."""
    problems: list[str] = []
    our_names = [n for n in merged_children(ours) if n != "_"]
    sample_names = [n for n in merged_children(sample) if n != "_"]
    problems += [f"{path}/{n}: not in the official sample" for n in our_names if n not in sample_names]
    shared = [n for n in our_names if n in sample_names]
    sample_order = [n for n in sample_names if n in shared]
    if shared != sample_order:
        problems.append(f"{path}: order {shared} differs from the sample's {sample_order}")
    for name in shared:
        if is_attribute(sample, name):
            if not is_attribute(ours, name) or any(isinstance(item.get(name), list) for item in ours):
                problems.append(f"{path}/{name}: is an attribute in the sample but an element in ours")
            continue
        if is_attribute(ours, name):
            problems.append(f"{path}/{name}: is an element in the sample but an attribute in ours")
            continue
        our_children, sample_children = child_items(ours, name), child_items(sample, name)
        if not all(isinstance(c, dict) for c in our_children):
            problems.append(f"{path}/{name}: must be an array of objects")
            continue
        if any("_" in c for c in our_children) != any("_" in c for c in sample_children):
            problems.append(f"{path}/{name}: leaf in one document and aggregate in the other")
        problems += structure_differences(our_children, sample_children, f"{path}/{name}")
    return problems


def rich_invoice(document_type: DocumentType):
    """An invoice using every optional element the builder can write, so all of them are compared."""
    line = make_line(
        tariff_code="9800.00.0010",
        origin_country="MYS",
        charge_amount=Decimal("1.00"),
        taxes=[TaxLine(tax_type="E", taxable_amount=Decimal("31.00"), tax_amount=Decimal("0"), exemption_reason="Exempt goods")],
    )
    return make_invoice(
        document_type=document_type,
        lines=[line],
        billing_period_start=datetime(2026, 10, 1).date(),
        billing_period_end=datetime(2026, 10, 31).date(),
        billing_frequency="Monthly",
        invoice_discount=Decimal("1.00"),
        invoice_charge=Decimal("1.00"),
        rounding_amount=Decimal("0.01"),
    )


@pytest.mark.parametrize("document_type", list(DocumentType), ids=lambda t: t.name)
def test_elements_and_their_order_follow_the_official_sample(document_type: DocumentType) -> None:
    ours = build_document(rich_invoice(document_type), ISSUED_AT)
    sample = load_sample(SAMPLE_FOR_TYPE[document_type])

    assert [k for k in ours if k != "Invoice"] == [k for k in sample if k != "Invoice"]
    assert structure_differences(ours["Invoice"], sample["Invoice"], "Invoice") == []


def test_foreign_currency_elements_sit_where_ubl_puts_them() -> None:
    # The samples are in ringgit and have no TaxExchangeRate; UBL places it after the header
    # AllowanceCharge and before TaxTotal. TaxCurrencyCode follows DocumentCurrencyCode.
    names = list(build_document(rich_invoice(DocumentType.INVOICE).model_copy(update={"currency": "USD", "exchange_rate": Decimal("4.5")}), ISSUED_AT)["Invoice"][0])
    assert names.index("DocumentCurrencyCode") + 1 == names.index("TaxCurrencyCode")
    assert names.index("AllowanceCharge") < names.index("TaxExchangeRate") < names.index("TaxTotal")


def test_the_comparison_catches_a_misplaced_element() -> None:
    # Guard for the helper itself: swapping two header elements must be reported.
    ours = build_document(make_invoice(), ISSUED_AT)
    header = ours["Invoice"][0]
    swapped = {"IssueDate": header["IssueDate"], "ID": header["ID"]} | {k: v for k, v in header.items() if k not in ("ID", "IssueDate")}
    problems = structure_differences([swapped], load_sample("1.0-Invoice-Sample.json")["Invoice"], "Invoice")
    assert problems and "order" in problems[0]


def test_the_comparison_catches_a_leaf_written_without_its_array() -> None:
    header = dict(build_document(make_invoice(), ISSUED_AT)["Invoice"][0])
    header["ID"] = [{"_": "INV-1"}]
    header["DocumentCurrencyCode"] = "MYR"
    assert structure_differences([header], load_sample("1.0-Invoice-Sample.json")["Invoice"], "Invoice") == [
        "Invoice/DocumentCurrencyCode: is an element in the sample but an attribute in ours"
    ]


def test_the_comparison_catches_an_element_the_sample_does_not_have() -> None:
    header = dict(build_document(make_invoice(), ISSUED_AT)["Invoice"][0])
    header["UBLExtensions"] = [{}]
    assert structure_differences([header], load_sample("1.0-Invoice-Sample.json")["Invoice"], "Invoice") == [
        "Invoice/UBLExtensions: not in the official sample"
    ]
