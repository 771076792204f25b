"""Ready-made documents for demos, smoke tests and benchmarks of the simulator.

``demo_invoice`` builds a small, valid MyInvois UBL 2.1 JSON 1.0 invoice issued now;
``submission_body`` wraps documents the way Submit Documents expects (Base64 + SHA-256).
The connector has its own document builder; this one exists so the simulator can be tried
without it.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime


def _v(value, **attributes) -> list[dict]:
    return [{"_": value, **attributes}]


def _party(tin: str, brn: str, name: str, *, supplier: bool) -> dict:
    party = {
        "PartyIdentification": [
            {"ID": _v(tin, schemeID="TIN")},
            {"ID": _v(brn, schemeID="BRN")},
            {"ID": _v("NA", schemeID="SST")},
        ],
        "PostalAddress": [
            {
                "CityName": _v("Kuala Lumpur"),
                "PostalZone": _v("50480"),
                "CountrySubentityCode": _v("14"),
                "AddressLine": [{"Line": _v("Lot 66, Bangunan Merdeka")}],
                "Country": [{"IdentificationCode": _v("MYS", listID="ISO3166-1", listAgencyID="6")}],
            }
        ],
        "PartyLegalEntity": [{"RegistrationName": _v(name)}],
        "Contact": [{"Telephone": _v("+60123456789")}],
    }
    if supplier:
        party = {
            "IndustryClassificationCode": _v("46510", name="Wholesale of computer hardware, software and peripherals"),
            **party,
        }
    return party


def demo_invoice(
    internal_id: str,
    *,
    supplier_tin: str = "C25845632020",
    supplier_brn: str = "202001234567",
    supplier_name: str = "Syarikat Demo Sdn. Bhd.",
    buyer_tin: str = "C58101234560",
    buyer_brn: str = "200501012345",
    buyer_name: str = "Pembeli Demo Sdn. Bhd.",
    issued_at: datetime | None = None,
    amount: float = 100.0,
    lines: int = 1,
) -> dict:
    """A valid type-01 invoice in MYR with ``lines`` identical lines of ``amount`` plus 6% service tax."""
    moment = (issued_at or datetime.now(UTC)).astimezone(UTC)
    tax = round(amount * 0.06, 2)

    def tax_total(tax_amount: float, taxable: float) -> list[dict]:
        return [
            {
                "TaxAmount": _v(tax_amount, currencyID="MYR"),
                "TaxSubtotal": [
                    {
                        "TaxableAmount": _v(taxable, currencyID="MYR"),
                        "TaxAmount": _v(tax_amount, currencyID="MYR"),
                        "TaxCategory": [
                            {
                                "ID": _v("02"),
                                "TaxScheme": [{"ID": _v("OTH", schemeID="UN/ECE 5153", schemeAgencyID="6")}],
                            }
                        ],
                    }
                ],
            }
        ]

    invoice_lines = [
        {
            "ID": _v(str(n)),
            "InvoicedQuantity": _v(1, unitCode="C62"),
            "LineExtensionAmount": _v(amount, currencyID="MYR"),
            "TaxTotal": tax_total(tax, amount),
            "Item": [
                {
                    "CommodityClassification": [{"ItemClassificationCode": _v("022", listID="CLASS")}],
                    "Description": _v(f"Consulting service, item {n}"),
                }
            ],
            "Price": [{"PriceAmount": _v(amount, currencyID="MYR")}],
            "ItemPriceExtension": [{"Amount": _v(amount, currencyID="MYR")}],
        }
        for n in range(1, lines + 1)
    ]
    net = round(amount * lines, 2)
    total_tax = round(tax * lines, 2)
    return {
        "_D": "urn:oasis:names:specification:ubl:schema:xsd:Invoice-2",
        "_A": "urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2",
        "_B": "urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2",
        "Invoice": [
            {
                "ID": _v(internal_id),
                "IssueDate": _v(moment.strftime("%Y-%m-%d")),
                "IssueTime": _v(moment.strftime("%H:%M:%SZ")),
                "InvoiceTypeCode": _v("01", listVersionID="1.0"),
                "DocumentCurrencyCode": _v("MYR"),
                "AccountingSupplierParty": [
                    {"Party": [_party(supplier_tin, supplier_brn, supplier_name, supplier=True)]}
                ],
                "AccountingCustomerParty": [{"Party": [_party(buyer_tin, buyer_brn, buyer_name, supplier=False)]}],
                "TaxTotal": tax_total(total_tax, net),
                "LegalMonetaryTotal": [
                    {
                        "LineExtensionAmount": _v(net, currencyID="MYR"),
                        "TaxExclusiveAmount": _v(net, currencyID="MYR"),
                        "TaxInclusiveAmount": _v(round(net + total_tax, 2), currencyID="MYR"),
                        "PayableAmount": _v(round(net + total_tax, 2), currencyID="MYR"),
                    }
                ],
                "InvoiceLine": invoice_lines,
            }
        ],
    }


def encode_document(document: dict | bytes, code_number: str) -> dict:
    """One Submit Documents entry: the minified bytes Base64-encoded, and their SHA-256 in hex."""
    raw = document if isinstance(document, bytes) else json.dumps(document, separators=(",", ":")).encode("utf-8")
    return {
        "format": "JSON",
        "document": base64.b64encode(raw).decode("ascii"),
        "documentHash": hashlib.sha256(raw).hexdigest(),
        "codeNumber": code_number,
    }


def submission_body(documents: list[tuple[dict | bytes, str]]) -> dict:
    """The Submit Documents body for (document, codeNumber) pairs."""
    return {"documents": [encode_document(document, code) for document, code in documents]}


if __name__ == "__main__":
    # python -m connector_core.simulator.demo [INTERNAL-ID]  ->  a valid invoice, issued now, on stdout
    import sys

    sys.stdout.write(json.dumps(demo_invoice(sys.argv[1] if len(sys.argv) > 1 else "INV-0001"), indent=2) + "\n")
