"""Turn a header row and its line rows into a canonical :class:`Invoice`, or say what is wrong.

Every problem of a record is collected before giving up, so the clerk fixes the row once, not
once per cycle. Each message names the table (or query), the key, the column and the fix.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date, datetime
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import ValidationError

from connector_core.model import Invoice, RejectedRecord
from myinvois_sql.columns import HEADER_REQUIRED, LINE_REQUIRED

_PARTY_MODEL_TO_COLUMN = {
    "name": "name",
    "tin": "tin",
    "id_type": "id_type",
    "id_value": "id_value",
    "sst": "sst",
    "ttx": "ttx",
    "msic_code": "msic_code",
    "business_activity": "business_activity",
    "phone": "phone",
    "email": "email",
}
_ADDRESS_MODEL_TO_COLUMN = {
    "lines": "address_line1",
    "city": "city",
    "postal_zone": "postal_zone",
    "state": "state",
    "country": "country",
}
_HEADER_MODEL_TO_COLUMN = {
    "number": "invoice_number",
    "source_key": "invoice_number",
    "original_references": "original_invoice_number",
    "lines": "(lines)",
}
_LINE_MODEL_TO_COLUMN = {"line_id": "line_no", "classification_codes": "classification_codes"}
_TAX_MODEL_TO_COLUMN = {
    "tax_type": "tax_type",
    "rate": "tax_rate",
    "taxable_amount": "taxable_amount",
    "tax_amount": "tax_amount",
    "exemption_reason": "tax_exemption_reason",
}


class RowProblems:
    """The problems found in one record, each already phrased for a clerk.

    The record's own location is not repeated in each message: the connector shows it in front
    of every error. Problems of a line name the line row.
    """

    def __init__(self, record_where: str) -> None:
        self.record_where = record_where
        self.messages: list[str] = []

    def add(self, where: str, column: str, problem: str) -> None:
        prefix = "" if where == self.record_where else f"{where}: "
        self.messages.append(f"{prefix}column {column} {problem}")


def _blank(value: Any) -> bool:
    return value is None or (isinstance(value, str) and not value.strip())


def _text(value: Any) -> str | None:
    # _blank's test inlined: an invoice's columns go through here about a hundred times.
    if value is None:
        return None
    if isinstance(value, str):
        return value.strip() or None
    return str(value).strip()


def _decimal(value: Any, where: str, column: str, problems: RowProblems) -> Decimal | None:
    if _blank(value):
        return None
    try:
        if isinstance(value, float):
            # SQLite keeps NUMERIC values with a fraction as REAL; repr gives the shortest
            # decimal that round-trips, which is what the ERP wrote.
            return Decimal(repr(value))
        return Decimal(str(value).strip())
    except InvalidOperation:
        problems.add(
            where, column, f"holds {str(value)[:40]!r}, which is not a number; write a plain decimal like 1234.50"
        )
        return None


def _date(value: Any, where: str, column: str, problems: RowProblems) -> date | None:
    if _blank(value):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    try:
        return date.fromisoformat(str(value).strip()[:10])
    except ValueError:
        problems.add(where, column, f"holds {str(value)[:40]!r}, which is not a date; write it as YYYY-MM-DD")
        return None


def _party(row: Mapping[str, Any], prefix: str) -> dict[str, Any]:
    lines = [line for line in (_text(row.get(f"{prefix}_address_line{i}")) for i in (1, 2, 3)) if line]
    party: dict[str, Any] = {
        "name": _text(row.get(f"{prefix}_name")),
        "tin": _text(row.get(f"{prefix}_tin")),
        "id_type": _text(row.get(f"{prefix}_id_type")) or "BRN",
        "id_value": _text(row.get(f"{prefix}_id_value")),
        "sst": _text(row.get(f"{prefix}_sst")) or "NA",
        "ttx": _text(row.get(f"{prefix}_ttx")) or "NA",
        "msic_code": _text(row.get(f"{prefix}_msic_code")),
        "business_activity": _text(row.get(f"{prefix}_business_activity")),
        "address": {
            "lines": lines,
            "city": _text(row.get(f"{prefix}_city")),
            "postal_zone": _text(row.get(f"{prefix}_postal_zone")),
            "state": _text(row.get(f"{prefix}_state")),
            "country": (_text(row.get(f"{prefix}_country")) or "MYS").upper(),
        },
        "phone": _text(row.get(f"{prefix}_phone")),
        "email": _text(row.get(f"{prefix}_email")),
    }
    return party


def _split_codes(value: Any) -> list[str]:
    return [code.strip() for code in str(value).replace(",", ";").split(";") if code.strip()]


def _column_for(loc: Sequence[Any]) -> tuple[int | None, str]:
    """Map a pydantic error location in the Invoice model back to (line index, column)."""
    if not loc:
        return None, "(record)"
    head = loc[0]
    if head in ("supplier", "buyer"):
        if len(loc) > 2 and loc[1] == "address":
            return None, f"{head}_{_ADDRESS_MODEL_TO_COLUMN.get(str(loc[2]), str(loc[2]))}"
        return (
            (None, f"{head}_{_PARTY_MODEL_TO_COLUMN.get(str(loc[1]), str(loc[1]))}") if len(loc) > 1 else (None, head)
        )
    if head == "lines" and len(loc) > 2 and isinstance(loc[1], int):
        if loc[2] == "taxes" and len(loc) > 4:
            return loc[1], _TAX_MODEL_TO_COLUMN.get(str(loc[4]), str(loc[4]))
        return loc[1], _LINE_MODEL_TO_COLUMN.get(str(loc[2]), str(loc[2]))
    return None, _HEADER_MODEL_TO_COLUMN.get(str(head), str(head))


def build_invoice(
    source_key: str,
    header: Mapping[str, Any],
    lines: Sequence[Mapping[str, Any]],
    header_where: str,
    line_where: Sequence[str],
    no_lines_hint: str,
    retry_hint: str,
) -> Invoice | RejectedRecord:
    """The invoice of one header row and its lines, or a RejectedRecord listing every problem.

    ``header_where`` locates the header ("einvoice_header id=17"); ``line_where[i]`` locates
    line ``i``; ``no_lines_hint`` says where lines were looked for when there are none;
    ``retry_hint`` tells the clerk how to have the corrected record sent again.
    """
    problems = RowProblems(header_where)
    number = _text(header.get("invoice_number"))

    for column, fix in HEADER_REQUIRED.items():
        if _blank(header.get(column)):
            problems.add(header_where, column, f"is empty; {fix}")

    canonical_lines = []
    for index, row in enumerate(lines):
        where = line_where[index]
        for column, fix in LINE_REQUIRED.items():
            if _blank(row.get(column)):
                problems.add(where, column, f"is empty; {fix}")
        quantity = _decimal(row.get("quantity"), where, "quantity", problems)
        unit_price = _decimal(row.get("unit_price"), where, "unit_price", problems)
        discount = _decimal(row.get("discount_amount"), where, "discount_amount", problems) or Decimal("0")
        charge = _decimal(row.get("charge_amount"), where, "charge_amount", problems) or Decimal("0")
        tax_amount = _decimal(row.get("tax_amount"), where, "tax_amount", problems)
        taxable = _decimal(row.get("taxable_amount"), where, "taxable_amount", problems)
        rate = _decimal(row.get("tax_rate"), where, "tax_rate", problems)
        if quantity is None:
            quantity = Decimal("1")
        if taxable is None and unit_price is not None:
            taxable = (quantity * unit_price - discount + charge).quantize(Decimal("0.01"))
        line_no = row.get("line_no")
        canonical_lines.append(
            {
                "line_id": str(line_no if not _blank(line_no) else index + 1),
                "description": _text(row.get("description")),
                "classification_codes": _split_codes(row.get("classification_codes") or ""),
                "quantity": quantity,
                "unit_code": _text(row.get("unit_code")),
                "unit_price": unit_price,
                "discount_amount": discount,
                "charge_amount": charge,
                "taxes": [
                    {
                        "tax_type": _text(row.get("tax_type")),
                        "rate": rate,
                        "taxable_amount": taxable,
                        "tax_amount": tax_amount,
                        "exemption_reason": _text(row.get("tax_exemption_reason")),
                    }
                ],
                "tariff_code": _text(row.get("tariff_code")),
                "origin_country": _text(row.get("origin_country")),
            }
        )
    if not lines:
        problems.messages.append(f"the invoice has no lines; {no_lines_hint}")

    originals = []
    original_numbers = _split_codes(header.get("original_invoice_number") or "")
    original_uuids = _split_codes(header.get("original_invoice_uuid") or "")
    for position, internal_id in enumerate(original_numbers):
        originals.append(
            {"internal_id": internal_id, "uuid": original_uuids[position] if position < len(original_uuids) else None}
        )

    fields: dict[str, Any] = {
        "source_key": source_key,
        "number": number,
        "document_type": _text(header.get("document_type")) or "01",
        "issue_date": _date(header.get("issue_date"), header_where, "issue_date", problems),
        "currency": (_text(header.get("currency")) or "MYR").upper(),
        "exchange_rate": _decimal(header.get("exchange_rate"), header_where, "exchange_rate", problems),
        "supplier": _party(header, "supplier"),
        "buyer": _party(header, "buyer"),
        "lines": canonical_lines,
        "original_references": originals,
        "payment_mode": _text(header.get("payment_mode")),
        "payment_terms": _text(header.get("payment_terms")),
        "billing_period_start": _date(
            header.get("billing_period_start"), header_where, "billing_period_start", problems
        ),
        "billing_period_end": _date(header.get("billing_period_end"), header_where, "billing_period_end", problems),
        "billing_frequency": _text(header.get("billing_frequency")),
        "invoice_discount": _decimal(header.get("invoice_discount"), header_where, "invoice_discount", problems)
        or Decimal("0"),
        "invoice_charge": _decimal(header.get("invoice_charge"), header_where, "invoice_charge", problems)
        or Decimal("0"),
        "rounding_amount": _decimal(header.get("rounding_amount"), header_where, "rounding_amount", problems)
        or Decimal("0"),
        "notes": _text(header.get("notes")),
    }

    # Validate even when problems were found already, so codes and types are reported in the
    # same round; a column already reported (empty, not a number) is not reported twice.
    already = set(problems.messages)
    try:
        invoice = Invoice.model_validate(fields)
    except ValidationError as exc:
        for error in exc.errors():
            line_index, column = _column_for(error["loc"])
            where = line_where[line_index] if line_index is not None and line_index < len(line_where) else header_where
            # An empty input is either reported above or the consequence of a value reported
            # above (a taxable amount that could not be computed from a bad price).
            if error.get("input") is None or (column == "(lines)" and not lines):
                continue
            prefix = "" if where == header_where else f"{where}: "
            if not any(message.startswith(f"{prefix}column {column} ") for message in already):
                problems.add(where, column, f"is not accepted: {error['msg']}")
    else:
        if not problems.messages:
            return invoice

    return RejectedRecord(
        source_key=source_key,
        number=number,
        location=header_where,
        errors=[*problems.messages, retry_hint],
    )
