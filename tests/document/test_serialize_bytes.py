"""``serialize`` (orjson) writes exactly the bytes of the connector's earlier hand-written writer.

The bytes are what MyInvois hashes and what the ledger compares on a re-send after a lost
answer, so a change of a single byte for the same document would make an identical re-send
look like a different document. The earlier writer is kept here, verbatim, as the oracle; every
official JSON sample LHDN publishes (1.0, 1.1 and the signed UBL example, vendored under
tests/fixtures so that the test needs nothing outside the repository) and documents built from
the canonical model must come out byte for byte the same.
"""

from __future__ import annotations

import json
from datetime import UTC, date, datetime
from decimal import Decimal
from pathlib import Path

import pytest

from connector_core.document import build_document, serialize
from connector_core.model import DocumentType, OriginalReference, TaxLine
from tests.document.factories import make_demo_taxpayer, make_invoice, make_line

FIXTURES = Path(__file__).parent.parent / "fixtures"
# samples/ holds the 1.0 samples the simulator's validation tests submit; samples-more/ the
# rest of LHDN's JSON samples (other 1.0 types, 1.1 with signatures), used only here.
SAMPLES = sorted([*(FIXTURES / "samples").glob("*.json"), *(FIXTURES / "samples-more").glob("*.json")])
ISSUED_AT = datetime(2026, 11, 24, 19, 30, tzinfo=UTC)


# --- the oracle: the writer serialize() used before orjson, unchanged ---------------------------


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"amount {value} is not a finite number")
    text = format(value, "f")
    return "0" if text in ("-0", "-0.0") else text


_quote = json.encoder.encode_basestring  # type: ignore[attr-defined]


def _write(value: object, out: list[str]) -> None:
    if isinstance(value, bool):
        out.append("true" if value else "false")
    elif isinstance(value, Decimal):
        out.append(_decimal_text(value))
    elif isinstance(value, int):
        out.append(str(value))
    elif isinstance(value, str):
        out.append(_quote(value))
    elif isinstance(value, dict):
        out.append("{")
        for index, (key, item) in enumerate(value.items()):
            if index:
                out.append(",")
            out.append(_quote(str(key)))
            out.append(":")
            _write(item, out)
        out.append("}")
    elif isinstance(value, (list, tuple)):
        out.append("[")
        for index, item in enumerate(value):
            if index:
                out.append(",")
            _write(item, out)
        out.append("]")
    elif value is None:
        out.append("null")
    else:
        raise TypeError(f"cannot serialise {type(value).__name__} {value!r} into a MyInvois document")


def oracle(document: object) -> bytes:
    out: list[str] = []
    _write(document, out)
    return "".join(out).encode("utf-8")


# --- the official samples --------------------------------------------------------------------


def test_every_official_json_sample_is_vendored() -> None:
    # 11 of version 1.0, 11 of 1.1 and the signed UBL 2.1 example: a lost file would shrink
    # the comparison below without failing it.
    assert len(SAMPLES) == 23, [p.name for p in SAMPLES]


@pytest.mark.parametrize("path", SAMPLES, ids=lambda p: p.name)
@pytest.mark.parametrize("parse_int", [int, Decimal], ids=["int", "Decimal-int"])
def test_official_sample_bytes_are_identical(path: Path, parse_int: type) -> None:
    # Numbers as the builder holds them: Decimal amounts (and integers either way).
    document = json.loads(path.read_text("utf-8"), parse_float=Decimal, parse_int=parse_int)
    expected = oracle(document)
    assert serialize(document) == expected
    # And the bytes read back as the same document: nothing was dropped by both writers alike.
    assert json.loads(expected, parse_float=Decimal, parse_int=parse_int) == document


# --- documents built from the model ----------------------------------------------------------


@pytest.mark.parametrize("document_type", list(DocumentType), ids=lambda t: t.name)
def test_built_document_bytes_are_identical(document_type: DocumentType) -> None:
    document = build_document(make_invoice(document_type=document_type), ISSUED_AT)
    assert serialize(document) == oracle(document)


def test_foreign_currency_note_with_every_optional_element_gives_identical_bytes() -> None:
    invoice = make_invoice(
        document_type=DocumentType.CREDIT_NOTE,
        original_references=[OriginalReference(internal_id="INV-1", uuid=None)],
        currency="USD",
        exchange_rate=Decimal("4.4650"),
        billing_period_start=date(2026, 11, 1),
        billing_period_end=date(2026, 11, 30),
        billing_frequency="Monthly",
        invoice_charge=Decimal("2.00"),
        rounding_amount=Decimal("-0.01"),
    )
    document = build_document(invoice, ISSUED_AT)
    assert serialize(document) == oracle(document)


def test_awkward_strings_and_amounts_give_identical_bytes() -> None:
    # Every character JSON must escape, the ones it must not (DEL, U+2028, '/', non-ASCII,
    # astral), and amounts whose text is easy to get wrong.
    awkward = "".join(chr(c) for c in range(0x80)) + 'é Bhd. 中文 \u2028\u2029 \U0001f600 "q" \\ /'
    line = make_line(
        description=awkward,
        quantity=Decimal("1E+2"),
        unit_price=Decimal("0.0000015"),
        discount_amount=Decimal("-0.00"),
        charge_amount=Decimal("12345678901234.123456789"),
        taxes=[TaxLine(tax_type="06", rate=Decimal("-0"), taxable_amount=Decimal("-0.0"), tax_amount=Decimal("0E-7"))],
    )
    invoice = make_invoice(
        supplier=make_demo_taxpayer(name=awkward), lines=[line], invoice_discount=Decimal("1.50"), payment_terms=awkward
    )
    document = build_document(invoice, ISSUED_AT)
    content = serialize(document)
    assert content == oracle(document)
    assert "\U0001f600".encode() in content  # non-ASCII kept as is, not \u-escaped


@pytest.mark.parametrize(
    "value",
    [True, False, None, 0, -1, 2**63 - 1, -(2**63), "", [], {}, (1, "a"), Decimal("-0.00"), Decimal("1.5E-7")],
    ids=repr,
)
def test_scalars_and_empty_containers_give_identical_bytes(value: object) -> None:
    document = {"a": [{"_": value, "k": "v"}], "b": value}
    assert serialize(document) == oracle(document)


def test_a_non_finite_amount_is_refused_with_its_value_named() -> None:
    with pytest.raises(ValueError, match="NaN is not a finite number"):
        serialize({"Amount": [{"_": Decimal("NaN")}]})


def test_an_unknown_type_is_refused_with_its_name() -> None:
    with pytest.raises(TypeError, match="cannot serialise datetime"):
        serialize({"IssueDate": [{"_": ISSUED_AT}]})
