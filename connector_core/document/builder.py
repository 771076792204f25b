"""Canonical :class:`~connector_core.model.Invoice` → MyInvois UBL 2.1 JSON, version 1.0.

The output follows the JSON notation of LHDN's official samples (API.md §7.3): namespace keys
``_D``/``_A``/``_B`` at the top, every element an array of objects, a leaf's value under ``"_"``
and its XML attributes as sibling keys. Element order follows the official 1.0 samples, which
LHDN's validator is known to accept (the samples place the buyer's ``PostalAddress`` before its
``PartyIdentification``; we do the same rather than guess).

Amounts stay :class:`~decimal.Decimal` inside the document dict; :func:`serialize` writes them as
plain JSON numbers digit for digit, so no float rounding and no scientific notation ever reach
MyInvois, and the hash covers exactly the bytes that are Base64-encoded (§7.6).

Only version 1.0 is produced: no ``UBLExtensions`` and no ``Signature``.
"""

from __future__ import annotations

import base64
import hashlib
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal

import orjson

from connector_core.codes import describe
from connector_core.model import Address, Invoice, InvoiceLine, InvoiceTotals, LineTotals, Party, TaxLine

NAMESPACE_INVOICE = "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
NAMESPACE_AGGREGATE = "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
NAMESPACE_BASIC = "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2"

DOCUMENT_VERSION = "1.0"
#: MyInvois reports and converts tax in ringgit.
TAX_CURRENCY = "MYR"
#: What LHDN's guideline asks for when the original of a note never went through MyInvois.
NO_ORIGINAL_UUID = "NA"

# Every tax category names the same scheme (API.md §7.4).
_TAX_SCHEME = {"ID": [{"_": "OTH", "schemeID": "UN/ECE 5153", "schemeAgencyID": "6"}]}

Element = list[dict]


def _leaf(value: object, **attributes: str) -> Element:
    """One UBL basic element: ``[{"_": value, attr: ...}]``."""
    if type(value) is float:
        # A float amount has already lost its exact value (the model holds Decimals; only an
        # object built without validation can carry one), and serialize() would write it.
        raise TypeError(f"cannot put float {value!r} into a MyInvois document: amounts are Decimal")
    return [{"_": value, **attributes}]


def _amount(value: Decimal, currency: str) -> Element:
    return _leaf(value, currencyID=currency)


def _drop_empty(element: dict) -> dict:
    """Optional elements are passed as ``None`` and left out, keeping the order of the rest."""
    return {key: value for key, value in element.items() if value is not None}


# ---------------------------------------------------------------------------------------------
# Parties


def _address(address: Address) -> Element:
    return [
        _drop_empty(
            {
                "CityName": _leaf(address.city),
                "PostalZone": _leaf(address.postal_zone) if address.postal_zone else None,
                "CountrySubentityCode": _leaf(address.state),
                "AddressLine": [{"Line": _leaf(line)} for line in address.lines],
                "Country": [{"IdentificationCode": _leaf(address.country, listID="ISO3166-1", listAgencyID="6")}],
            }
        )
    ]


def _identifications(party: Party) -> Element:
    return [
        {"ID": _leaf(party.tin, schemeID="TIN")},
        {"ID": _leaf(party.id_value, schemeID=party.id_type)},
        {"ID": _leaf(party.sst, schemeID="SST")},
        {"ID": _leaf(party.ttx, schemeID="TTX")},
    ]


def _contact(party: Party) -> Element:
    return [
        _drop_empty(
            {
                "Telephone": _leaf(party.phone),
                "ElectronicMail": _leaf(party.email) if party.email else None,
            }
        )
    ]


def _supplier(party: Party) -> Element:
    industry = None
    if party.msic_code is not None:
        # The activity description is the supplier's own words; fall back to the MSIC table's.
        activity = party.business_activity or describe("MSICSubCategoryCodes", party.msic_code) or ""
        industry = _leaf(party.msic_code, name=activity)
    inner = _drop_empty(
        {
            "IndustryClassificationCode": industry,
            "PartyIdentification": _identifications(party),
            "PostalAddress": _address(party.address),
            "PartyLegalEntity": [{"RegistrationName": _leaf(party.name)}],
            "Contact": _contact(party),
        }
    )
    return [{"Party": [inner]}]


def _customer(party: Party) -> Element:
    # Same order as the customer party of LHDN's samples (address first).
    inner = {
        "PostalAddress": _address(party.address),
        "PartyLegalEntity": [{"RegistrationName": _leaf(party.name)}],
        "PartyIdentification": _identifications(party),
        "Contact": _contact(party),
    }
    return [{"Party": [inner]}]


# ---------------------------------------------------------------------------------------------
# Taxes, allowances and lines


def _tax_category(tax_type: str, exemption_reason: str | None) -> Element:
    return [
        _drop_empty(
            {
                "ID": _leaf(tax_type),
                "TaxExemptionReason": _leaf(exemption_reason) if exemption_reason else None,
                "TaxScheme": [_TAX_SCHEME],
            }
        )
    ]


def _line_tax_subtotal(tax: TaxLine, currency: str) -> dict:
    return _drop_empty(
        {
            "TaxableAmount": _amount(tax.taxable_amount, currency),
            "TaxAmount": _amount(tax.tax_amount, currency),
            "Percent": _leaf(tax.rate) if tax.rate is not None else None,
            "TaxCategory": _tax_category(tax.tax_type, tax.exemption_reason),
        }
    )


def _header_tax_total(invoice: Invoice, totals: InvoiceTotals) -> Element:
    """One ``TaxSubtotal`` per tax type, summed over every line (first-seen order).

    Exemption reasons stay on the lines, where LHDN's samples and field list put them."""
    taxable: dict[str, Decimal] = {}
    tax: dict[str, Decimal] = {}
    for line in invoice.lines:
        for tax_line in line.taxes:
            kind = tax_line.tax_type
            taxable[kind] = taxable.get(kind, Decimal("0")) + tax_line.taxable_amount
            tax[kind] = tax.get(kind, Decimal("0")) + tax_line.tax_amount
    currency = invoice.currency
    subtotals = [
        {
            "TaxableAmount": _amount(taxable[kind], currency),
            "TaxAmount": _amount(tax[kind], currency),
            "TaxCategory": _tax_category(kind, None),
        }
        for kind in taxable
    ]
    return [{"TaxAmount": _amount(totals.tax_total, currency), "TaxSubtotal": subtotals}]


def _allowance_charges(discount: Decimal, charge: Decimal, currency: str) -> Element | None:
    """Discounts (``ChargeIndicator`` false) and charges (true); ``None`` when both are zero."""
    entries = []
    for is_charge, amount, reason in ((False, discount, "Discount"), (True, charge, "Charge")):
        if amount:
            entries.append(
                {
                    "ChargeIndicator": _leaf(is_charge),
                    "AllowanceChargeReason": _leaf(reason),
                    "Amount": _amount(amount, currency),
                }
            )
    return entries or None


def _invoice_line(line: InvoiceLine, totals: LineTotals, currency: str) -> dict:
    classifications = []
    if line.tariff_code:
        classifications.append({"ItemClassificationCode": _leaf(line.tariff_code, listID="PTC")})
    classifications += [{"ItemClassificationCode": _leaf(code, listID="CLASS")} for code in line.classification_codes]
    item = _drop_empty(
        {
            "CommodityClassification": classifications,
            "Description": _leaf(line.description),
            "OriginCountry": [{"IdentificationCode": _leaf(line.origin_country)}] if line.origin_country else None,
        }
    )
    quantity = _leaf(line.quantity, unitCode=line.unit_code) if line.unit_code else _leaf(line.quantity)
    return _drop_empty(
        {
            "ID": _leaf(line.line_id),
            "InvoicedQuantity": quantity,
            "LineExtensionAmount": _amount(totals.total_excluding_tax, currency),
            "AllowanceCharge": _allowance_charges(line.discount_amount, line.charge_amount, currency),
            "TaxTotal": [
                {
                    "TaxAmount": _amount(totals.tax_amount, currency),
                    "TaxSubtotal": [_line_tax_subtotal(tax, currency) for tax in line.taxes],
                }
            ],
            "Item": [item],
            "Price": [{"PriceAmount": _amount(line.unit_price, currency)}],
            "ItemPriceExtension": [{"Amount": _amount(totals.subtotal, currency)}],
        }
    )


# ---------------------------------------------------------------------------------------------
# Header


def _invoice_period(invoice: Invoice) -> Element | None:
    if not (invoice.billing_period_start or invoice.billing_period_end or invoice.billing_frequency):
        return None
    return [
        _drop_empty(
            {
                "StartDate": _leaf(invoice.billing_period_start.isoformat()) if invoice.billing_period_start else None,
                "EndDate": _leaf(invoice.billing_period_end.isoformat()) if invoice.billing_period_end else None,
                "Description": _leaf(invoice.billing_frequency) if invoice.billing_frequency else None,
            }
        )
    ]


def _billing_references(invoice: Invoice) -> Element | None:
    if not invoice.document_type.needs_original_reference:
        return None
    return [
        {"InvoiceDocumentReference": [{"ID": _leaf(ref.internal_id), "UUID": _leaf(ref.uuid or NO_ORIGINAL_UUID)}]}
        for ref in invoice.original_references
    ] or None


def _exchange_rate(invoice: Invoice) -> Element | None:
    if invoice.currency == TAX_CURRENCY or invoice.exchange_rate is None:
        return None
    return [
        {
            "SourceCurrencyCode": _leaf(invoice.currency),
            "TargetCurrencyCode": _leaf(TAX_CURRENCY),
            "CalculationRate": _leaf(invoice.exchange_rate),
        }
    ]


def _monetary_total(invoice: Invoice, totals: InvoiceTotals) -> Element:
    currency = invoice.currency
    return [
        {
            "LineExtensionAmount": _amount(totals.lines_total, currency),
            "TaxExclusiveAmount": _amount(totals.total_excluding_tax, currency),
            "TaxInclusiveAmount": _amount(totals.total_including_tax, currency),
            "AllowanceTotalAmount": _amount(invoice.invoice_discount, currency),
            "ChargeTotalAmount": _amount(invoice.invoice_charge, currency),
            "PayableRoundingAmount": _amount(invoice.rounding_amount, currency),
            "PayableAmount": _amount(totals.payable_amount, currency),
        }
    ]


def _utc(issued_at: datetime) -> datetime:
    if issued_at.tzinfo is None or issued_at.utcoffset() is None:
        # A naive time could be local or UTC; guessing would shift the issue time by hours
        # and MyInvois refuses documents issued in the future or more than 72 h ago.
        raise ValueError("issued_at must be timezone-aware (e.g. datetime.now(timezone.utc))")
    return issued_at.astimezone(UTC)


def build_document(invoice: Invoice, issued_at: datetime) -> dict:
    """The MyInvois 1.0 UBL JSON document for ``invoice``, issued at ``issued_at`` (any timezone;
    written in UTC). Amounts are left as ``Decimal``; use :func:`serialize` to get the bytes."""
    issued = _utc(issued_at)
    currency = invoice.currency
    totals = invoice.totals()
    body = _drop_empty(
        {
            "ID": _leaf(invoice.number),
            "IssueDate": _leaf(issued.strftime("%Y-%m-%d")),
            "IssueTime": _leaf(issued.strftime("%H:%M:%SZ")),
            "InvoiceTypeCode": _leaf(invoice.document_type.value, listVersionID=DOCUMENT_VERSION),
            "DocumentCurrencyCode": _leaf(currency),
            "TaxCurrencyCode": _leaf(TAX_CURRENCY) if currency != TAX_CURRENCY else None,
            "InvoicePeriod": _invoice_period(invoice),
            "BillingReference": _billing_references(invoice),
            "AccountingSupplierParty": _supplier(invoice.supplier),
            "AccountingCustomerParty": _customer(invoice.buyer),
            "PaymentMeans": [{"PaymentMeansCode": _leaf(invoice.payment_mode)}] if invoice.payment_mode else None,
            "PaymentTerms": [{"Note": _leaf(invoice.payment_terms)}] if invoice.payment_terms else None,
            "AllowanceCharge": _allowance_charges(invoice.invoice_discount, invoice.invoice_charge, currency),
            "TaxExchangeRate": _exchange_rate(invoice),
            "TaxTotal": _header_tax_total(invoice, totals),
            "LegalMonetaryTotal": _monetary_total(invoice, totals),
            "InvoiceLine": [
                _invoice_line(line, line_totals, currency)
                for line, line_totals in zip(invoice.lines, totals.lines, strict=True)
            ],
        }
    )
    return {
        "_D": NAMESPACE_INVOICE,
        "_A": NAMESPACE_AGGREGATE,
        "_B": NAMESPACE_BASIC,
        "Invoice": [body],
    }


# ---------------------------------------------------------------------------------------------
# Serialisation


def _decimal_text(value: Decimal) -> str:
    if not value.is_finite():
        raise ValueError(f"amount {value} is not a finite number")
    # Fixed-point, every digit kept: Decimal('1E+2') -> '100', Decimal('0.30') -> '0.30'.
    text = format(value, "f")
    return "0" if text in ("-0", "-0.0") else text


def _decimal_fragment(value: object) -> orjson.Fragment:
    # orjson asks only for the types it does not know; a Decimal goes in as its digits, verbatim.
    if isinstance(value, Decimal):
        return orjson.Fragment(_decimal_text(value))
    raise TypeError(f"cannot serialise {type(value).__name__} {value!r} into a MyInvois document")


# orjson would write dates and dataclasses its own way; the builder writes dates as text, so a
# datetime or dataclass here is a mistake, refused by _decimal_fragment as before orjson.
_REFUSE_WHAT_THE_BUILDER_NEVER_WRITES = orjson.OPT_PASSTHROUGH_DATETIME | orjson.OPT_PASSTHROUGH_DATACLASS


def serialize(document: dict) -> bytes:
    """Minified UTF-8 JSON (no spaces, non-ASCII kept as is), keys in insertion order.

    Equal documents always give identical bytes, hence an identical ``documentHash``. orjson
    writes strings, booleans, integers and the structure exactly as ``json.dumps(...,
    ensure_ascii=False, separators=(",", ":"))`` would, and each ``Decimal`` as its fixed-point
    digits (tests/document/test_serialize_bytes.py checks this over every official sample).
    Floats never get here: :func:`build_document` refuses them where amounts go in (``_leaf``).
    """
    try:
        return orjson.dumps(document, default=_decimal_fragment, option=_REFUSE_WHAT_THE_BUILDER_NEVER_WRITES)
    except orjson.JSONEncodeError as exc:
        # orjson wraps what _decimal_fragment raised; that error names the amount.
        if isinstance(exc.__cause__, (ValueError, TypeError)):
            raise exc.__cause__ from None
        raise


# ---------------------------------------------------------------------------------------------
# The built document, ready to submit


@dataclass(frozen=True)
class BuiltDocument:
    """A serialised document plus what the submission envelope needs (API.md §3, §7.6)."""

    code_number: str
    content: bytes = field(repr=False)
    sha256_hex: str
    base64: str = field(repr=False)
    size: int

    @classmethod
    def from_content(cls, code_number: str, content: bytes) -> BuiltDocument:
        return cls(
            code_number=code_number,
            content=content,
            sha256_hex=hashlib.sha256(content).hexdigest(),
            base64=base64.b64encode(content).decode("ascii"),
            size=len(content),
        )

    def submission_entry(self) -> dict:
        """One item of ``documents[]`` in ``POST /api/v1.0/documentsubmissions``."""
        return {
            "format": "JSON",
            "documentHash": self.sha256_hex,
            "codeNumber": self.code_number,
            "document": self.base64,
        }


def build(invoice: Invoice, issued_at: datetime) -> BuiltDocument:
    """Build, serialise and hash ``invoice`` in one step."""
    return BuiltDocument.from_content(invoice.number, serialize(build_document(invoice, issued_at)))


def validation_link(portal_base_url: str, uuid: str, long_id: str) -> str:
    """The public validation link printed (or QR-encoded) on the invoice (API.md §7.7):
    ``{portal}/{uuid}/share/{longId}``. ``long_id`` exists only once the document is Valid."""
    if not uuid or not long_id:
        raise ValueError("a validation link needs both the document uuid and its longId (set once Valid)")
    return f"{portal_base_url.rstrip('/')}/{uuid}/share/{long_id}"
