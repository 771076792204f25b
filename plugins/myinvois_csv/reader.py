"""Reading invoice CSV files: one row per line item, header fields repeated on each row.

Every problem names the file, the row number (as a spreadsheet shows it: the header is row 1)
and the column, and says how to fix it. A bad row spoils only its own invoice.
"""

from __future__ import annotations

import csv
import hashlib
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import date
from decimal import ROUND_HALF_UP, Decimal, InvalidOperation
from pathlib import Path
from typing import cast

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

_ALL_COLUMNS = ("invoice_number", *HEADER_COLUMNS, *LINE_COLUMNS)
KNOWN_COLUMNS = frozenset(_ALL_COLUMNS)

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
_PARTY_COLUMN = {
    "id_type": "party_id_type",
    "lines": "party_address1",
    "city": "party_city",
    "state": "party_state",
    "country": "party_country",
    "postal_zone": "party_postcode",
    "msic_code": "party_msic",
    "business_activity": "party_activity",
}


class RowError(ValueError):
    """Bad cells of a row; each problem names the column and the fix."""

    def __init__(self, *problems: str) -> None:
        super().__init__("; ".join(problems))
        self.problems = list(problems)


@dataclass
class _Group:
    number: str
    rows: list[tuple[int, dict[str, str]]] = field(default_factory=list)
    #: Rows with fewer or more fields than the header, and what is wrong: their cells cannot be trusted.
    ragged: dict[int, str] = field(default_factory=dict)

    def digest(self) -> bytes:
        """What the rows say, without where they are: equal for the same invoice written twice,
        whatever the order of the file's columns (an absent column reads as empty)."""
        text = "\x1e".join("\x1f".join(row.get(c, "") for c in _ALL_COLUMNS) for _, row in self.rows)
        return hashlib.blake2b(text.encode(), digest_size=20).digest()

    def rows_text(self) -> str:
        numbers = ", ".join(str(n) for n, _ in self.rows)
        return f"rows {numbers}" if len(self.rows) > 1 else f"row {numbers}"


@dataclass
class ParsedFile:
    """One file read and split into invoices, before they are built.

    ``name`` is how the file is known across fetches (the key of a record of the whole file);
    ``shown`` is where a clerk finds it, written into every error (the archive path, since the
    file is moved there as soon as its invoices are recorded).
    """

    path: Path
    name: str
    shown: str
    #: The file as a whole is refused (not UTF-8, empty, header wrong): this one record.
    rejected_file: RejectedRecord | None = None
    #: Rows that belong to no invoice (no invoice_number).
    rejected_rows: list[RejectedRecord] = field(default_factory=list)
    groups: dict[str, _Group] = field(default_factory=dict)

    @property
    def source_keys(self) -> set[str]:
        if self.rejected_file is not None:
            return {self.rejected_file.source_key}
        return {r.source_key for r in self.rejected_rows} | set(self.groups)

    @property
    def has_no_invoices(self) -> bool:
        """A header row and nothing else (blank lines aside)."""
        return self.rejected_file is None and not self.rejected_rows and not self.groups


def read_file(
    path: Path, *, company: Party, delimiter: str = ",", display_name: str | None = None
) -> Iterator[Invoice | RejectedRecord]:
    """Yield each invoice of ``path`` (or a RejectedRecord naming what is wrong with it)."""
    name = display_name or path.name
    yield from build_invoices(parse_file(path, delimiter=delimiter, name=name, shown=name), company=company)


def parse_file(path: Path, *, delimiter: str, name: str, shown: str) -> ParsedFile:
    """Read ``path`` and group its rows by invoice number; nothing is built yet."""
    parsed = ParsedFile(path=path, name=name, shown=shown)
    try:
        text = path.read_text(encoding="utf-8-sig")  # -sig: Excel writes a byte-order mark
    except UnicodeDecodeError as exc:
        parsed.rejected_file = _file_rejected(
            parsed, f"is not UTF-8 text (byte {exc.start}); save it as 'CSV UTF-8' and drop it in the inbox again"
        )
        return parsed
    if not text.strip():
        parsed.rejected_file = _file_rejected(
            parsed,
            "is empty: it has no header row and no invoices; if the ERP's export failed, export again. "
            "An export with nothing to send should write only the header row, or no file",
        )
        return parsed
    lines = text.splitlines()
    reader = csv.DictReader(lines, delimiter=delimiter)
    columns = [c.strip() for c in (reader.fieldnames or [])]
    missing = [c for c in REQUIRED_COLUMNS if c not in columns]
    if missing:
        parsed.rejected_file = _file_rejected(
            parsed,
            f"has no column {', '.join(repr(c) for c in missing)}; the first row must name the columns "
            f"(see docs/plugin-csv.md for the list){_delimiter_hint(lines[0], delimiter)}",
        )
        return parsed
    unknown = [c for c in columns if c and c not in KNOWN_COLUMNS]
    if unknown:
        parsed.rejected_file = _file_rejected(
            parsed,
            f"has unknown column(s) {', '.join(repr(c) for c in unknown)}; check their spelling against docs/plugin-csv.md",
        )
        return parsed

    for row_number, raw in enumerate(reader, start=2):
        # A short row has None for its missing cells; a long one lists the extra cells under None.
        # Unnamed columns and empty extra cells (a trailing separator more or less) say nothing.
        absent = [c.strip() for c, v in raw.items() if c and c.strip() and v is None] if None in raw.values() else []
        extra = cast(list[str], raw.get(None) or [])  # DictReader's list of a long row's extra cells
        row = {(k or "").strip(): (v or "").strip() for k, v in raw.items() if k is not None}
        if not any(row.values()) and not any(v.strip() for v in extra):
            continue  # blank line
        ragged = _ragged_problem(len(columns), absent, extra, delimiter)
        number = row.get("invoice_number", "")
        if not number:
            errors = ["invoice_number is empty; every row must name the invoice it belongs to"]
            if ragged:
                errors.append(ragged)
            parsed.rejected_rows.append(
                RejectedRecord(
                    source_key=f"{name}#row={row_number}", location=f"{shown} row {row_number}", errors=errors
                )
            )
            continue
        group = parsed.groups.setdefault(number, _Group(number))
        group.rows.append((row_number, row))
        if ragged:
            group.ragged[row_number] = ragged
    return parsed


def build_invoices(
    parsed: ParsedFile, *, company: Party, only: set[str] | None = None
) -> Iterator[Invoice | RejectedRecord]:
    """The invoices of a parsed file (those numbered in ``only``, if given), rejected rows first."""
    if parsed.rejected_file is not None:
        yield parsed.rejected_file
        return
    yield from parsed.rejected_rows
    for group in parsed.groups.values():
        if only is None or group.number in only:
            yield _invoice_from_group(group, name=parsed.shown, company=company)


def _delimiter_hint(header_line: str, delimiter: str) -> str:
    """A file saved with another separator (a spreadsheet in a European locale writes ';')."""
    for other, spelt in ((";", '";"'), ("\t", '"\\t"'), (",", '","'), ("|", '"|"')):
        if other == delimiter:
            continue
        names = {c.strip().strip('"') for c in header_line.split(other)}
        if all(c in names for c in REQUIRED_COLUMNS):
            shown = "tabs" if other == "\t" else f"'{other}'"
            return (
                f". Its columns are separated by {shown}, not {delimiter!r}: set delimiter = {spelt} in the "
                "source's options, or save the file comma-separated"
            )
    return ""


def _ragged_problem(width: int, absent: list[str], extra: list[str], delimiter: str) -> str | None:
    if absent:
        return (
            f"the row has {width - len(absent)} fields, the header {width}; missing: {', '.join(absent)}. "
            "A row must have a field for every column (empty between two separators is fine); "
            "was the file still being written, or did a line break end the row early?"
        )
    if any(v.strip() for v in extra):
        return (
            f"the row has {width + len(extra)} fields, {len(extra)} more than the header's {width}; "
            f"a value containing {delimiter!r} must be in double quotes"
        )
    return None


def _file_rejected(parsed: ParsedFile, problem: str) -> RejectedRecord:
    return RejectedRecord(source_key=f"file:{parsed.name}", location=parsed.shown, errors=[f"the file {problem}"])


def _invoice_from_group(group: _Group, *, name: str, company: Party) -> Invoice | RejectedRecord:
    # The location already names a lone row; several rows need each error to say which.
    label = (lambda n: f"row {n}: ") if len(group.rows) > 1 else (lambda n: "")
    # A ragged row's cells are shifted or missing: only its own problem is reported for it.
    errors: list[str] = [f"{label(n)}{problem}" for n, problem in group.ragged.items()]
    sound = [(n, row) for n, row in group.rows if n not in group.ragged]
    head = None
    if sound:
        first_row, header = sound[0]
        for row_number, row in sound[1:]:
            for column in HEADER_COLUMNS:
                if row.get(column, "") != header.get(column, ""):
                    errors.append(
                        f"row {row_number}: {column} differs from row {first_row} of the same invoice; "
                        "header columns must be the same on every line of an invoice"
                    )
    lines: list[InvoiceLine] = []
    for index, (row_number, row) in enumerate(group.rows, start=1):
        if row_number in group.ragged:
            continue
        try:
            lines.append(_line(row, index))
        except RowError as exc:
            errors.extend(f"{label(row_number)}{problem}" for problem in exc.problems)
    if sound:
        try:
            head = _header(header)
        except RowError as exc:
            errors.append(f"{label(first_row)}{exc}")
    location = f"{name} {group.rows_text()}"
    if errors or head is None:
        return RejectedRecord(source_key=group.number, number=group.number, location=location, errors=errors)

    document_type, counterparty, fields = head
    supplier, buyer = (counterparty, company) if document_type.is_self_billed else (company, counterparty)
    try:
        return Invoice(
            source_key=group.number,
            number=group.number,
            document_type=document_type,
            supplier=supplier,
            buyer=buyer,
            lines=lines,
            **fields,
        )
    except ValidationError as exc:
        problems = [
            f"{'.'.join(str(p) for p in e['loc'])}: {e['msg']}"
            for e in exc.errors(include_input=False, include_url=False)
        ]
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
    # Every bad cell of the row at once: a clerk fixing one at a time would need a round trip each.
    problems: list[str] = []

    def number(column: str, *, required: bool = False) -> Decimal | None:
        try:
            return _decimal(row, column, required=required)
        except RowError as exc:
            problems.extend(exc.problems)
            return None

    quantity = number("quantity") or Decimal("1")
    unit_price = number("unit_price", required=True)
    discount = number("discount") or Decimal("0")
    rate = number("tax_rate")
    tax_amount = number("tax_amount")
    if not row.get("description"):
        problems.append("description is empty; describe the goods or service sold")
    codes = [c.strip().zfill(3) for c in row.get("classification", "").replace(",", ";").split(";") if c.strip()]
    if not codes:
        problems.append("classification is empty; give a 3-digit MyInvois classification code such as 022 (others)")
    if problems or unit_price is None:
        raise RowError(*problems)
    taxable = (quantity * unit_price - discount).quantize(CENT, ROUND_HALF_UP)
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
        raise RowError(
            f"{column} {text!r} is not a number; write it with a dot for decimals and no thousands separator, e.g. 1250.00"
        ) from None
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
