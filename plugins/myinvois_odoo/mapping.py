"""Odoo records to the canonical invoice: parties, lines, taxes, currency, references.

Every problem of a move is collected and named by Odoo model, record and field, with the
option that points at the field, so the clerk can open the right form and the administrator
the right setting.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from pydantic import ValidationError

from connector_core.codes import code_table
from connector_core.model import Invoice, RejectedRecord
from myinvois_odoo.options import OdooSourceOptions

TWO = Decimal("0.01")

#: move_type -> (document type, whether the company is the supplier).
DOCUMENT_TYPES = {
    "out_invoice": ("01", True),
    "out_refund": ("02", True),
    "in_invoice": ("11", False),
    "in_refund": ("12", False),
}

#: ISO alpha-2 (Odoo's res.country.code) to alpha-3 for countries whose English names differ
#: between Odoo and LHDN's CountryCodes table; the others are matched by name.
ALPHA3_BY_ALPHA2 = {
    "MY": "MYS",
    "SG": "SGP",
    "ID": "IDN",
    "TH": "THA",
    "BN": "BRN",
    "PH": "PHL",
    "VN": "VNM",
    "CN": "CHN",
    "HK": "HKG",
    "TW": "TWN",
    "JP": "JPN",
    "KR": "KOR",
    "IN": "IND",
    "AU": "AUS",
    "NZ": "NZL",
    "US": "USA",
    "GB": "GBR",
    "DE": "DEU",
    "FR": "FRA",
    "NL": "NLD",
    "AE": "ARE",
    "SA": "SAU",
}


def odoo_decimal(value: Any) -> Decimal:
    """Odoo sends amounts as floats; repr() is the shortest decimal that Odoo stored."""
    if value in (False, None):
        return Decimal("0")
    return Decimal(repr(value)) if isinstance(value, float) else Decimal(str(value))


def text(value: Any) -> str | None:
    if value in (False, None):
        return None
    value = str(value).strip()
    return value or None


def many2one_id(value: Any) -> int | None:
    return int(value[0]) if isinstance(value, list) and value else None


def many2one_name(value: Any) -> str | None:
    return str(value[1]) if isinstance(value, list) and len(value) > 1 else None


def _normalise(name: str) -> str:
    name = re.sub(r"\(.*?\)", " ", name)  # "Kuala Lumpur (F.T.)", "Selangor (MY)"
    name = re.sub(r"wilayah persekutuan|federal territory of|w\.p\.", " ", name, flags=re.IGNORECASE)
    return re.sub(r"[^a-z]+", " ", name.lower()).strip()


def state_code(state_display_name: str | None, country_alpha3: str) -> str | None:
    """LHDN state code of an Odoo state; '17' (not applicable) for addresses abroad."""
    if country_alpha3 != "MYS":
        return "17"
    if not state_display_name:
        return None
    wanted = _normalise(state_display_name)
    aliases = {"penang": "pulau pinang", "malacca": "melaka", "negri sembilan": "negeri sembilan"}
    wanted = aliases.get(wanted, wanted)
    for code, name in code_table("StateCodes").items():
        if _normalise(name) == wanted:
            return code
    return None


def country_alpha3(country: dict[str, Any] | None) -> str | None:
    if country is None:
        return None
    alpha2 = (text(country.get("code")) or "").upper()
    if alpha2 in ALPHA3_BY_ALPHA2:
        return ALPHA3_BY_ALPHA2[alpha2]
    wanted = (text(country.get("name")) or "").upper()
    for code, name in code_table("CountryCodes").items():
        if name.upper() == wanted:
            return code
    return None


@dataclass
class Related:
    """The records one page of moves refers to, read in one request per model."""

    partners: dict[int, dict[str, Any]] = field(default_factory=dict)
    company_partner: dict[int, int] = field(default_factory=dict)  # company id -> partner id
    countries: dict[int, dict[str, Any]] = field(default_factory=dict)
    products: dict[int, dict[str, Any]] = field(default_factory=dict)
    taxes: dict[int, dict[str, Any]] = field(default_factory=dict)
    currencies: dict[int, dict[str, Any]] = field(default_factory=dict)
    originals: dict[int, dict[str, Any]] = field(default_factory=dict)
    lines: dict[int, list[dict[str, Any]]] = field(default_factory=dict)


class _Problems:
    def __init__(self) -> None:
        self.messages: list[str] = []

    def field(self, model: str, record: dict[str, Any], field_name: str, option: str | None, fix: str) -> None:
        label = text(record.get("display_name")) or text(record.get("name")) or ""
        where = f"{model} {record.get('id')}" + (f" ({label})" if label else "")
        setting = f" (option fields.{option})" if option else ""
        self.messages.append(f"{where}: field {field_name}{setting} is empty; {fix}")


class MoveMapper:
    def __init__(self, options: OdooSourceOptions) -> None:
        self.options = options
        self.f = options.fields

    def _party(
        self, partner_id: int | None, role: str, related: Related, problems: _Problems, move: dict[str, Any]
    ) -> dict[str, Any]:
        f = self.f
        partner = related.partners.get(partner_id) if partner_id else None
        if partner is None:
            problems.messages.append(f"field partner_id is empty; choose the {role}")
            return {}
        required = {
            f.partner_tin_field: ("partner_tin_field", f"fill in the {role}'s TIN (e.g. C58101234560) on the contact"),
            f.partner_id_value_field: (
                "partner_id_value_field",
                f"fill in the {role}'s BRN or ID number ('NA' if none) on the contact",
            ),
            "street": (None, f"fill in the {role}'s street on the contact"),
            "city": (None, f"fill in the {role}'s city on the contact"),
        }
        if role == "supplier":
            required[f.partner_msic_field] = (
                "partner_msic_field",
                "fill in the supplier's 5-digit MSIC code (e.g. 46510) on the contact",
            )
        for name, (option, fix) in required.items():
            if name and not text(partner.get(name)):
                problems.field("res.partner", partner, name, option, fix)
        phone = text(partner.get("phone")) or text(partner.get("mobile"))
        if not phone:
            problems.field(
                "res.partner", partner, "phone", None, f"fill in the {role}'s phone (or mobile) number on the contact"
            )
        country = related.countries.get(many2one_id(partner.get("country_id")) or 0)
        alpha3 = country_alpha3(country) if country else "MYS"
        if alpha3 is None:
            problems.messages.append(
                f"res.partner {partner['id']} ({partner.get('name')}): country {many2one_name(partner.get('country_id'))!r} "
                "has no ISO 3166 alpha-3 code in LHDN's country table; correct the contact's country"
            )
        state = state_code(many2one_name(partner.get("state_id")), alpha3 or "MYS")
        if state is None:
            problems.field(
                "res.partner", partner, "state_id", None, f"choose the {role}'s Malaysian state on the contact"
            )

        def optional(option: str) -> str | None:
            name = getattr(f, option)
            return text(partner.get(name)) if name else None

        return {
            "name": text(partner.get("name")),
            "tin": optional("partner_tin_field"),
            "id_type": (optional("partner_id_type_field") or "BRN").upper(),
            "id_value": optional("partner_id_value_field"),
            "sst": optional("partner_sst_field") or "NA",
            "ttx": optional("partner_ttx_field") or "NA",
            "msic_code": optional("partner_msic_field"),
            "business_activity": optional("partner_business_activity_field"),
            "address": {
                "lines": [line for line in (text(partner.get("street")), text(partner.get("street2"))) if line],
                "city": text(partner.get("city")),
                "postal_zone": text(partner.get("zip")),
                "state": state or "17",
                "country": alpha3 or "MYS",
            },
            "phone": phone,
            "email": text(partner.get("email")),
        }

    def _line(
        self, line: dict[str, Any], move: dict[str, Any], related: Related, problems: _Problems, position: int
    ) -> dict[str, Any]:
        f = self.f
        quantity = odoo_decimal(line.get("quantity"))
        price_unit = odoo_decimal(line.get("price_unit"))
        discount_percent = odoo_decimal(line.get("discount"))
        subtotal = odoo_decimal(line.get("price_subtotal")).quantize(TWO, ROUND_HALF_UP)
        total = odoo_decimal(line.get("price_total")).quantize(TWO, ROUND_HALF_UP)
        discount = (quantity * price_unit * discount_percent / 100).quantize(TWO, ROUND_HALF_UP)

        product = related.products.get(many2one_id(line.get("product_id")) or 0)
        codes = ""
        if product is not None:
            codes = text(product.get(f.product_classification_field)) or ""
        codes = codes or self.options.default_classification
        if not codes:
            if product is not None:
                problems.field(
                    "product.product",
                    product,
                    f.product_classification_field,
                    "product_classification_field",
                    "fill in the product's 3-digit MyInvois classification code (e.g. 022)",
                )
            else:
                problems.messages.append(
                    f"account.move.line {line['id']} (line {position} of {move.get('name')}): has no product, so no classification "
                    "code; choose a product, or set the option default_classification"
                )

        taxes = []
        line_taxes = [related.taxes[t] for t in line.get("tax_ids") or [] if t in related.taxes]
        tax_total = total - subtotal
        if not line_taxes:
            taxes.append(
                {
                    "tax_type": self.options.untaxed_tax_type,
                    "rate": Decimal("0"),
                    "taxable_amount": subtotal,
                    "tax_amount": tax_total,
                }
            )
        remaining = tax_total
        for index, tax in enumerate(line_taxes):
            tax_type = text(tax.get(f.tax_type_field))
            if not tax_type:
                problems.field(
                    "account.tax",
                    tax,
                    f.tax_type_field,
                    "tax_type_field",
                    "fill in the tax's MyInvois tax type (01 sales, 02 service, 06 not applicable, E exempt)",
                )
            rate = odoo_decimal(tax.get("amount")) if tax.get("amount_type") == "percent" else None
            if index == len(line_taxes) - 1:
                amount = remaining  # the last tax takes the rounding difference, so taxes add up to Odoo's total
            elif rate is not None:
                amount = (subtotal * rate / 100).quantize(TWO, ROUND_HALF_UP)
            else:
                amount = (odoo_decimal(tax.get("amount")) * quantity).quantize(TWO, ROUND_HALF_UP)
            remaining -= amount
            taxes.append({"tax_type": tax_type or "", "rate": rate, "taxable_amount": subtotal, "tax_amount": amount})

        description = text(line.get("name")) or (text(product.get("display_name")) if product else None)
        if not description:
            problems.messages.append(
                f"account.move.line {line['id']} (line {position} of {move.get('name')}): field name (label) is empty; describe the line"
            )
        return {
            "line_id": str(position),
            "description": (description or "").splitlines()[0][:300] if description else "",
            "classification_codes": [c.strip() for c in re.split(r"[;,]", codes) if c.strip()],
            "quantity": quantity,
            "unit_price": price_unit,
            "discount_amount": discount,
            "taxes": taxes,
        }

    def invoice(self, move: dict[str, Any], related: Related) -> Invoice | RejectedRecord:
        problems = _Problems()
        key = str(move["id"])
        number = text(move.get("name"))
        location = f"account.move {move['id']} ({number})"
        document_type, company_supplies = DOCUMENT_TYPES[move["move_type"]]
        company_partner = related.company_partner.get(many2one_id(move.get("company_id")) or 0)
        partner_id = many2one_id(move.get("partner_id"))
        supplier_id, buyer_id = (company_partner, partner_id) if company_supplies else (partner_id, company_partner)
        supplier = self._party(supplier_id, "supplier", related, problems, move)
        buyer = self._party(buyer_id, "buyer", related, problems, move)

        lines = [
            self._line(line, move, related, problems, position)
            for position, line in enumerate(related.lines.get(move["id"], []), start=1)
        ]
        if not lines:
            problems.messages.append("the document has no product lines; add at least one invoice line")

        currency_name = many2one_name(move.get("currency_id")) or "MYR"
        exchange_rate = None
        if currency_name != "MYR":
            currency = related.currencies.get(many2one_id(move.get("currency_id")) or 0) or {}
            rate = odoo_decimal(currency.get("rate"))
            if rate > 0:
                # Odoo's rate is units of the currency per one unit of the company currency (MYR).
                exchange_rate = (1 / rate).quantize(Decimal("0.000001"), ROUND_HALF_UP)
            else:
                problems.messages.append(
                    f"res.currency {currency.get('id')} ({currency_name}): field rate is empty; enter today's rate for {currency_name}"
                )

        originals = []
        original = related.originals.get(many2one_id(move.get("reversed_entry_id")) or 0)
        if original is not None:
            originals.append(
                {
                    "internal_id": text(original.get("name")) or str(original["id"]),
                    "uuid": text(original.get(self.f.move_uuid_field)),
                }
            )

        fields = {
            "source_key": key,
            "number": number,
            "document_type": document_type,
            "issue_date": text(move.get("invoice_date")),
            "currency": currency_name,
            "exchange_rate": exchange_rate,
            "supplier": supplier,
            "buyer": buyer,
            "lines": lines,
            "original_references": originals,
            "notes": (text(move.get("ref")) or None),
        }
        invoice = None
        if supplier and buyer:
            try:
                invoice = Invoice.model_validate(fields)
            except ValidationError as exc:
                for error in exc.errors():
                    if error.get("input") in (None, ""):
                        continue  # an empty value is reported above with the Odoo field that holds it
                    where = ".".join(str(part) for part in error["loc"])
                    problems.messages.append(f"{where} is not accepted: {error['msg']}")
        if invoice is not None and not problems.messages:
            return invoice
        if not problems.messages:
            problems.messages.append("cannot be read as an invoice")
        return RejectedRecord(
            source_key=key,
            number=number,
            location=location,
            errors=[
                *problems.messages,
                f"After correcting it, set its field {self.f.move_status_field} to 'pending' (or empty) to have it sent again.",
            ],
        )
