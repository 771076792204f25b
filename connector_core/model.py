"""The canonical invoice model: what every ERP plugin produces and the document builder consumes.

It knows nothing of MyInvois's wire format, of the ledger or of plugins; it imports nothing of
ours but the code tables. Money is ``Decimal`` throughout: floats never touch an amount.

Field-level rules that are purely about shape (lengths, code tables, TIN formats) live in
:mod:`connector_core.document.prevalidate`, not here, so that a plugin can always build an
``Invoice`` from whatever the ERP holds and the connector can then report *every* problem of
that invoice at once, naming each field, instead of failing on the first one.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from enum import Enum
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, computed_field

TWO_PLACES = Decimal("0.01")


class DocumentType(str, Enum):
    """LHDN e-invoice type codes (codes/EInvoiceTypes.json)."""

    INVOICE = "01"
    CREDIT_NOTE = "02"
    DEBIT_NOTE = "03"
    REFUND_NOTE = "04"
    SELF_BILLED_INVOICE = "11"
    SELF_BILLED_CREDIT_NOTE = "12"
    SELF_BILLED_DEBIT_NOTE = "13"
    SELF_BILLED_REFUND_NOTE = "14"

    @property
    def is_self_billed(self) -> bool:
        return self.value >= "11"

    @property
    def needs_original_reference(self) -> bool:
        """Credit, debit and refund notes must reference the document(s) they adjust."""
        return self.value not in ("01", "11")


IdType = Literal["BRN", "NRIC", "PASSPORT", "ARMY"]


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, frozen=False)


class Address(_Model):
    lines: list[str] = Field(min_length=1, max_length=5, description="Address lines; the first is mandatory.")
    city: str
    postal_zone: str | None = None
    state: str = Field(description="State code from codes/StateCodes.json ('17' = not applicable).")
    country: str = Field(default="MYS", description="ISO 3166-1 alpha-3 country code.")


class Party(_Model):
    """A supplier or a buyer. For self-billed documents the buyer is the issuer."""

    name: str
    tin: str
    id_type: IdType = "BRN"
    id_value: str = Field(description="Registration or identity number; 'NA' where none applies.")
    sst: str = Field(default="NA", description="SST registration number(s), ';'-separated; 'NA' if not registered.")
    ttx: str = Field(default="NA", description="Tourism tax registration; 'NA' if not registered.")
    msic_code: str | None = Field(default=None, description="5-digit MSIC code (mandatory for the supplier).")
    business_activity: str | None = Field(default=None, description="Business activity description (supplier).")
    address: Address
    phone: str
    email: str | None = None


class TaxLine(_Model):
    tax_type: str = Field(description="Tax type code from codes/TaxTypes.json ('06' = not applicable, 'E' = exempt).")
    rate: Decimal | None = Field(default=None, description="Percent, e.g. 6 for 6 %.")
    taxable_amount: Decimal
    tax_amount: Decimal
    exemption_reason: str | None = None


class InvoiceLine(_Model):
    line_id: str
    description: str
    classification_codes: list[str] = Field(
        min_length=1, description="3-digit codes from codes/ClassificationCodes.json."
    )
    quantity: Decimal = Decimal("1")
    unit_code: str | None = Field(default=None, description="UN/ECE Rec 20 unit code (codes/UnitTypes.json).")
    unit_price: Decimal
    discount_amount: Decimal = Decimal("0")
    charge_amount: Decimal = Decimal("0")
    taxes: list[TaxLine] = Field(min_length=1)
    tariff_code: str | None = None
    origin_country: str | None = None

    def totals(self) -> LineTotals:
        """Every amount of the line, computed once (the properties below each compute them all)."""
        subtotal = (self.quantity * self.unit_price).quantize(TWO_PLACES)
        return LineTotals(
            subtotal=subtotal,
            total_excluding_tax=(subtotal - self.discount_amount + self.charge_amount).quantize(TWO_PLACES),
            tax_amount=sum((t.tax_amount for t in self.taxes), Decimal("0")).quantize(TWO_PLACES),
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def subtotal(self) -> Decimal:
        """Quantity times unit price, before discounts and charges."""
        return self.totals().subtotal

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_excluding_tax(self) -> Decimal:
        return self.totals().total_excluding_tax

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tax_amount(self) -> Decimal:
        return self.totals().tax_amount


@dataclass(frozen=True, slots=True)
class LineTotals:
    """A line's computed amounts (:meth:`InvoiceLine.totals`)."""

    subtotal: Decimal
    total_excluding_tax: Decimal
    tax_amount: Decimal


@dataclass(frozen=True, slots=True)
class InvoiceTotals:
    """An invoice's computed amounts, its lines' included (:meth:`Invoice.totals`): the builder
    writes each several times, and the properties recomputed every line for each one."""

    lines: list[LineTotals]
    #: The lines' totals excluding tax, before the invoice's own discount and charge.
    lines_total: Decimal
    total_excluding_tax: Decimal
    tax_total: Decimal
    total_including_tax: Decimal
    payable_amount: Decimal


class OriginalReference(_Model):
    """The document a credit, debit or refund note adjusts."""

    internal_id: str
    uuid: str | None = Field(default=None, description="MyInvois uuid of the original, when it has one.")


class Invoice(_Model):
    """One ERP invoice, whatever its document type.

    ``source_key`` identifies the invoice inside its ERP source and never changes; ``number`` is
    the e-invoice number printed on the document (``cbc:ID``). They are often the same string.
    """

    source_key: str = Field(description="The ERP's stable id for this invoice (row id, record id, invoice number).")
    number: str = Field(description="E-invoice code/number, at most 50 characters.")
    document_type: DocumentType = DocumentType.INVOICE
    issue_date: date | None = Field(
        default=None,
        description="The ERP's invoice date. MyInvois needs the issue time to be 'now', so the builder stamps that.",
    )
    currency: str = "MYR"
    exchange_rate: Decimal | None = Field(
        default=None, description="MYR per unit of currency; mandatory when currency is not MYR."
    )
    supplier: Party
    buyer: Party
    lines: list[InvoiceLine] = Field(min_length=1)
    original_references: list[OriginalReference] = Field(default_factory=list)
    payment_mode: str | None = Field(default=None, description="Payment method code (codes/PaymentMethods.json).")
    payment_terms: str | None = None
    billing_period_start: date | None = None
    billing_period_end: date | None = None
    billing_frequency: str | None = None
    invoice_discount: Decimal = Decimal("0")
    invoice_charge: Decimal = Decimal("0")
    rounding_amount: Decimal = Decimal("0")
    notes: str | None = None

    @property
    def issuer(self) -> Party:
        """The party that submits the document: the buyer for self-billed types."""
        return self.buyer if self.document_type.is_self_billed else self.supplier

    def totals(self) -> InvoiceTotals:
        """Every computed amount of the invoice and its lines, each line computed once."""
        lines = [line.totals() for line in self.lines]
        lines_total = sum((ln.total_excluding_tax for ln in lines), Decimal("0"))
        total_excluding_tax = (lines_total - self.invoice_discount + self.invoice_charge).quantize(TWO_PLACES)
        tax_total = sum((ln.tax_amount for ln in lines), Decimal("0")).quantize(TWO_PLACES)
        total_including_tax = (total_excluding_tax + tax_total).quantize(TWO_PLACES)
        return InvoiceTotals(
            lines=lines,
            lines_total=lines_total,
            total_excluding_tax=total_excluding_tax,
            tax_total=tax_total,
            total_including_tax=total_including_tax,
            payable_amount=(total_including_tax + self.rounding_amount).quantize(TWO_PLACES),
        )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_excluding_tax(self) -> Decimal:
        return self.totals().total_excluding_tax

    @computed_field  # type: ignore[prop-decorator]
    @property
    def tax_total(self) -> Decimal:
        return self.totals().tax_total

    @computed_field  # type: ignore[prop-decorator]
    @property
    def total_including_tax(self) -> Decimal:
        return self.totals().total_including_tax

    @computed_field  # type: ignore[prop-decorator]
    @property
    def payable_amount(self) -> Decimal:
        return self.totals().payable_amount

    def fingerprint(self) -> str:
        """SHA-256 of the invoice's content: equal for the same invoice fetched twice,
        different once anything in the ERP changed (which makes it a new version)."""
        return hashlib.sha256(self.model_dump_json(exclude_computed_fields=True).encode()).hexdigest()


class RejectedRecord(_Model):
    """What a plugin yields instead of an :class:`Invoice` when ERP data cannot be read as one.

    The connector records it as *locally invalid* and reports it back through
    ``on_submission_result``; the other invoices of the same fetch go on.
    """

    source_key: str = Field(description="The ERP's id for the record, or a locator like 'inbox/a.csv#row=7'.")
    number: str | None = Field(default=None, description="The invoice number, where it could be read.")
    location: str = Field(description="Where the bad data is: file and row, table and key, model and record id.")
    errors: list[str] = Field(
        min_length=1, description="Each problem in words a clerk can act on, naming the field and the fix."
    )
