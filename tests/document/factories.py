"""Valid canonical invoices for tests: ``make_invoice(**overrides)``.

The supplier is the simulator's demo taxpayer (the one ``demo-taxpayer`` logs in as), so an
invoice from here can be submitted to the simulator unchanged. For self-billed types the
*buyer* issues and submits the document, so there the demo taxpayer is the buyer and the other
company sells — otherwise the simulator would rightly refuse a document issued for someone else.

Every amount is consistent: line totals, taxes and the invoice totals add up.
"""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any

from connector_core.model import Address, DocumentType, Invoice, InvoiceLine, OriginalReference, Party, TaxLine

DEMO_TIN = "C25845632020"
DEMO_BRN = "202001234567"
DEMO_NAME = "Syarikat Demo Sdn. Bhd."
DEMO_MSIC = "46510"

BUYER_TIN = "C58101234560"
BUYER_BRN = "200501012345"
BUYER_NAME = "Pelanggan Contoh Sdn. Bhd."

# A MyInvois-style uuid (26 upper-case alphanumerics) for the original of notes.
ORIGINAL_UUID = "F9D425P6DS7D8IU9DS7D8IU9DS"


def make_address(**overrides: Any) -> Address:
    fields: dict[str, Any] = {
        "lines": ["Lot 66", "Bangunan Merdeka", "Persiaran Jaya"],
        "city": "Kuala Lumpur",
        "postal_zone": "50480",
        "state": "14",
        "country": "MYS",
    }
    return Address(**(fields | overrides))


def make_demo_taxpayer(**overrides: Any) -> Party:
    """The simulator's demo taxpayer, with the MSIC code and activity a supplier needs."""
    fields: dict[str, Any] = {
        "name": DEMO_NAME,
        "tin": DEMO_TIN,
        "id_type": "BRN",
        "id_value": DEMO_BRN,
        "sst": "NA",
        "ttx": "NA",
        "msic_code": DEMO_MSIC,
        "business_activity": "Wholesale of computer hardware, software and peripherals",
        "address": make_address(),
        "phone": "+60123456789",
        "email": "accounts@demo.example.my",
    }
    return Party(**(fields | overrides))


def make_counterparty(**overrides: Any) -> Party:
    """The other company: buyer of ordinary documents, seller of self-billed ones (it carries
    an MSIC code so that it is a complete supplier too)."""
    fields: dict[str, Any] = {
        "name": BUYER_NAME,
        "tin": BUYER_TIN,
        "id_type": "BRN",
        "id_value": BUYER_BRN,
        "sst": "NA",
        "ttx": "NA",
        "msic_code": "62010",
        "business_activity": "Computer programming activities",
        "address": make_address(lines=["No. 8, Jalan Pelabur 23/1"], city="Shah Alam", postal_zone="40300", state="10"),
        "phone": "+60387654321",
        "email": "ap@pelanggan.example.my",
    }
    return Party(**(fields | overrides))


def make_line(**overrides: Any) -> InvoiceLine:
    """2 × 17.50 less 5.00 discount = 30.00, sales tax 10 % = 3.00."""
    fields: dict[str, Any] = {
        "line_id": "1",
        "description": "Laptop peripherals",
        "classification_codes": ["003"],
        "quantity": Decimal("2"),
        "unit_code": "C62",
        "unit_price": Decimal("17.50"),
        "discount_amount": Decimal("5.00"),
        "taxes": [TaxLine(tax_type="01", rate=Decimal("10"), taxable_amount=Decimal("30.00"), tax_amount=Decimal("3.00"))],
    }
    return InvoiceLine(**(fields | overrides))


def make_service_line(**overrides: Any) -> InvoiceLine:
    """1 × 100.00, service tax 8 % = 8.00."""
    fields: dict[str, Any] = {
        "line_id": "2",
        "description": "Annual maintenance service",
        "classification_codes": ["022"],
        "quantity": Decimal("1"),
        "unit_code": "E48",
        "unit_price": Decimal("100.00"),
        "taxes": [TaxLine(tax_type="02", rate=Decimal("8"), taxable_amount=Decimal("100.00"), tax_amount=Decimal("8.00"))],
    }
    return InvoiceLine(**(fields | overrides))


def make_invoice(**overrides: Any) -> Invoice:
    """A fully valid invoice (totals: 130.00 excl. tax, 11.00 tax, 141.00 payable).

    Any :class:`Invoice` field can be overridden. Notes (02–04, 12–14) get an original
    reference unless ``original_references`` is given; self-billed types get the demo taxpayer
    as buyer (the issuer) unless ``supplier``/``buyer`` are given.
    """
    document_type = DocumentType(overrides.get("document_type", DocumentType.INVOICE))
    if document_type.is_self_billed:
        supplier, buyer = make_counterparty(), make_demo_taxpayer()
    else:
        supplier, buyer = make_demo_taxpayer(), make_counterparty(msic_code=None, business_activity=None)
    fields: dict[str, Any] = {
        "source_key": "erp-1001",
        "number": "INV-1001",
        "document_type": document_type,
        "issue_date": date(2026, 11, 24),
        "currency": "MYR",
        "supplier": supplier,
        "buyer": buyer,
        "lines": [make_line(), make_service_line()],
        "payment_mode": "03",
        "payment_terms": "Payment within 30 days",
    }
    if document_type.needs_original_reference:
        fields["original_references"] = [OriginalReference(internal_id="INV-0999", uuid=ORIGINAL_UUID)]
    return Invoice(**(fields | overrides))
