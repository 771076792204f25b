"""Reading invoice CSV files: one row per line item, header fields repeated on each row.

Every problem names the file, the row number (as a spreadsheet shows it: the header is row 1)
and the column, and says how to fix it. A bad row spoils only its own invoice.
"""

from __future__ import annotations

import csv
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path

from pydantic import ValidationError

from connector_core.model import (
    DocumentType,
    Invoice,
    InvoiceLine,
    OriginalReference,
    Party,
    RejectedRecord,
    TaxLine,
)

REQUIRED_COLUMNS = (
    "invoice_number",
    "party_name",
    "party_tin",
    "description",
    "classification",
    "unit_price",
    "tax_type",
)

#: Columns that describe the invoice as a whole: they must agree on every row of one invoice.
HEADER_COLUMNS = (
    "document_type",
    "issue_date",
    "currency",
    "exchange_rate",
    "original_invoice_number",
    "original_uuid",
    "payment_mode",
    "payment_terms",
    "party_name",
    "party_tin",
    "party_id_type",
    "party_id_value",
    "party_sst",
    "party_email",
    "party_phone",
    "party_address1",
    "party_address2",
    "party_address3",
    "party_city",
    "party_postcode",
    "party_state",
    "party_country",
    "party_msic",
    "party_activity",
)

LINE_COLUMNS = (
    "line_id",
    "description",
    "classification",
    "quantity",
    "unit_code",
    "unit_price",
    "discount",
    "tax_type",
    "tax_rate",
    "tax_amount",
    "tax_exemption_reason",
)

KNOWN_COLUMNS = frozenset(("invoice_number", *HEADER_COLUMNS, *LINE_COLUMNS))

#: Names a clerk may write instead of the code.
DOCUMENT_TYPE_NAMES = {
    "invoice": "01",
    "credit_note": "02",
    "debit_note": "03",
    "refund_note": "04",
    "self_billed_invoice": "11",
    "self_billed_credit_note": "12",
    "self_billed_debit_note": "13",
    "self_billed_refund_note": "14",
}

CENT = Decimal("0.01")

#: Party model field -> the CSV column it comes from, for error messages.
_PARTY_COLUMN = {"id_type": "party_id_type", "lines": "party_address1", "city": "party_city", "state": "party_state", "country": "party_country", "postal_zone": "party_postcode", "msic_code": "party_msic", "business_activity": "party_activity"}


class RowError(ValueError):
    """One bad cell; the message names the column and the fix."""


@dataclass
class _Group:
    number: str
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def read_file(path: Path, *, company: Party, delimiter: str = ",", display_name: str | None = None) -> Iterator[Invoice | RejectedRecord]:
    """Yield each invoice of ``path`` (or a RejectedRecord naming what is wrong with it)."""
    name = display_name or path.name
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Excel writes a byte-order mark
    except UnicodeDecodeError as exc:
        yield _file_rejected(name, f"is not UTF-8 text (byte {exc.start}); save it as 'CSV UTF-8' and drop it in the inbox again")
        return
    reader = csv.DictReader(text.splitlines(), delimiter=delimiter)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        yield _file_rejected(
            name,
            f"has no column {', '.join(repr(c) for c in missing)}; the first row must name the columns "
            "(see docs/plugin-csv.md for the list)",
        )
        return
    unknown = [c for c in columns if c and c not in KNOWN_COLUMNS]
    if unknown:
        yield _file_rejected(name, f"has unknown column(s) {', '.join(repr(c) for c in unknown)}; check their spelling against docs/plugin-csv.md")
        return

    groups: dict[str, _Group] = {}
    for row_number, raw in enumerate(reader, start=2):
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(row.values()):
            continue  # blank line
        number = row.get("invoice_number", "")
        if not number:
            yield RejectedRecord(
                source_key=f"{name}#row={row_number}",
                location=f"{name} row {row_number}",
                errors=["invoice_number is empty; every row must name the invoice it belongs to"],
            )
            continue
        groups.setdefault(number, _Group(number)).rows.append((row_number, row))

    for group in groups.values():
        yield _invoice_from_group(group, name=name, company=company)


def _file_rejected(name: str, problem: str) -> RejectedRecord:
    return RejectedRecord(source_key=f"file:{name}", location=name, errors=[f"the file {problem}"])


def _invoice_from_group(group: _Group, *, name: str, company: Party) -> Invoice | RejectedRecord:
    first_row, header = group.rows[0]
    errors: list[str] = []
    # The location already names a lone row; several rows need each error to say which.
    label = (lambda n: f"row {n}: ") if len(group.rows) > 1 else (lambda n: "")
    for row_number, row in group.rows[1:]:
        for column in HEADER_COLUMNS:
            if row.get(column, "") != header.get(column, ""):
                errors.append(
                    f"row {row_number}: {column} differs from row {first_row} of the same invoice; "
                    "header columns must be the same on every line of an invoice"
                )
    lines: list[InvoiceLine] = []
    for index, (row_number, row) in enumerate(group.rows, start=1):
        try:
            lines.append(_line(row, index))
        except RowError as exc:
            errors.append(f"{label(row_number)}{exc}")
    try:
        head = _header(header)
    except RowError as exc:
        errors.append(f"{label(first_row)}{exc}")
        head = None
    rows = ", ".join(str(r) for r, _ in group.rows)
    location = f"{name} rows {rows}" if len(group.rows) > 1 else f"{name} row {first_row}"
    if errors or head is None:
        return RejectedRecord(source_key=group.number, number=group.number, location=location, errors=errors)

    document_type, counterparty, fields = head
    supplier, buyer = (counterparty, company) if document_type.is_self_billed else (company, counterparty)
    try:
        return Invoice(source_key=group.number, number=group.number, document_type=document_type, supplier=supplier, buyer=buyer, lines=lines, **fields)
    except ValidationError as exc:
        problems = [f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}" for e in exc.errors(include_input=False, include_url=False)]
        return RejectedRecord(source_key=group.number, number=group.number, location=location, errors=problems)


def _header(row: dict[str, str]) -> tuple[DocumentType, Party, dict]:
    raw_type = row.get("document_type", "") or "01"
    code = DOCUMENT_TYPE_NAMES.get(raw_type.lower().replace(" ", "_").replace("-", "_"), raw_type.zfill(2))
    try:
        document_type = DocumentType(code)
    except ValueError:
        raise RowError(
            f"document_type {raw_type!r} is not a MyInvois type; use a code 01-04 or 11-14, or a name such as invoice or credit_note"
        ) from None
    address_lines = [row[c] for c in ("party_address1", "party_address2", "party_address3") if row.get(c)]
    data = {
        "name": row.get("party_name", ""),
        "tin": row.get("party_tin", ""),
        "id_type": (row.get("party_id_type") or "BRN").upper(),
        "id_value": row.get("party_id_value") or "NA",
        "sst": row.get("party_sst") or "NA",
        "msic_code": row.get("party_msic") or None,
        "business_activity": row.get("party_activity") or None,
        "address": {
            "lines": address_lines or [""],
            "city": row.get("party_city", ""),
            "postal_zone": row.get("party_postcode") or None,
            "state": row.get("party_state", ""),
            "country": (row.get("party_country") or "MYS").upper(),
        },
        "phone": row.get("party_phone", ""),
        "email": row.get("party_email") or None,
    }
    try:
        counterparty = Party.model_validate(data)
    except ValidationError as exc:
        problems = []
        for err in exc.errors(include_input=False, include_url=False):
            field = err["loc"][-1] if err["loc"][0] == "address" else err["loc"][0]
            column = _PARTY_COLUMN.get(str(field), f"party_{field}")
            problems.append(f"{column}: {err['msg']}")
        raise RowError("; ".join(problems)) from None
    fields: dict = {
        "currency": (row.get("currency") or "MYR").upper(),
        "exchange_rate": _decimal(row, "exchange_rate", required=False),
        "issue_date": _date(row, "issue_date"),
        "payment_mode": row.get("payment_mode") or None,
        "payment_terms": row.get("payment_terms") or None,
    }
    if row.get("original_invoice_number"):
        fields["original_references"] = [
            OriginalReference(internal_id=row["original_invoice_number"], uuid=row.get("original_uuid") or None)
        ]
    return document_type, counterparty, fields


def _line(row: dict[str, str], index: int) -> InvoiceLine:
    quantity = _decimal(row, "quantity", required=False) or Decimal("1")
    unit_price = _decimal(row, "unit_price", required=True)
    discount = _decimal(row, "discount", required=False) or Decimal("0")
    if not row.get("description"):
        raise RowError("description is empty; describe the goods or service sold")
    codes = [c.strip().zfill(3) for c in row.get("classification", "").replace(",", ";").split(";") if c.strip()]
    if not codes:
        raise RowError("classification is empty; give a 3-digit MyInvois classification code such as 022 (others)")
    taxable = (quantity * unit_price - discount).quantize(CENT, ROUND_HALF_UP)
    rate = _decimal(row, "tax_rate", required=False)
    tax_amount = _decimal(row, "tax_amount", required=False)
    if tax_amount is None:
        tax_amount = (taxable * (rate or Decimal("0")) / 100).quantize(CENT, ROUND_HALF_UP)
    tax_type = row.get("tax_type", "")
    return InvoiceLine(
        line_id=row.get("line_id") or str(index),
        description=row["description"],
        classification_codes=codes,
        quantity=quantity,
        unit_code=row.get("unit_code") or None,
        unit_price=unit_price,
        discount_amount=discount,
        taxes=[
            TaxLine(
                tax_type=tax_type,
                rate=rate,
                taxable_amount=taxable,
                tax_amount=tax_amount,
                exemption_reason=row.get("tax_exemption_reason") or None,
            )
        ],
    )


def _decimal(row: dict[str, str], column: str, *, required: bool) -> Decimal | None:
    text = row.get(column, "")
    if not text:
        if required:
            raise RowError(f"{column} is empty; write a number such as 1250.00")
        return None
    try:
        value = Decimal(text.replace(" ", ""))
    except InvalidOperation:
        raise RowError(f"{column} {text!r} is not a number; write it with a dot for decimals and no thousands separator, e.g. 1250.00") from None
    if not value.is_finite():
        raise RowError(f"{column} {text!r} is not a number; write it like 1250.00")
    return value


def _date(row: dict[str, str], column: str) -> date | None:
    text = row.get(column, "")
    if not text:
        return None
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise RowError(f"{column} {text!r} is not a date; write it as YYYY-MM-DD, e.g. 2026-11-24") from None
