"""The settings of a ``kind = "odoo"`` source, as written under ``[sources.<name>.options]``."""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connector_core.secrets import Secret

#: Odoo field names: lower-case letters, digits and underscores (custom ones start with x_).
ODOO_FIELD_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")


class OdooFieldMapping(BaseModel):
    """Where the MyInvois data lives in Odoo. Odoo has no standard field for a Malaysian TIN,
    BRN, SST number, MSIC code or classification code, so each is a setting; the defaults
    are the custom fields described in docs/plugin-odoo.md. An optional mapping set to ""
    is not read (or not written)."""

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    # res.partner: customers, vendors and the company's own partner.
    partner_tin_field: str = Field(default="x_tin", description="res.partner field holding the TIN.")
    partner_id_value_field: str = Field(
        default="x_brn", description="res.partner field holding the BRN (or NRIC/passport number)."
    )
    partner_id_type_field: str = Field(
        default="", description="res.partner field holding BRN/NRIC/PASSPORT/ARMY; empty: always BRN."
    )
    partner_sst_field: str = Field(
        default="x_sst", description="res.partner field holding the SST registration; empty value means 'NA'."
    )
    partner_ttx_field: str = Field(default="", description="res.partner field holding the tourism tax registration.")
    partner_msic_field: str = Field(
        default="x_msic_code", description="res.partner field holding the 5-digit MSIC code."
    )
    partner_business_activity_field: str = Field(
        default="x_business_activity", description="res.partner field holding the business activity."
    )
    # product.product (custom fields of product.template are readable on variants too).
    product_classification_field: str = Field(
        default="x_myinvois_class", description="product field holding the 3-digit classification code(s)."
    )
    # account.tax
    tax_type_field: str = Field(
        default="x_myinvois_tax_type",
        description="account.tax field holding the MyInvois tax type (01, 02, 06, E ...).",
    )
    # account.move: where the connector writes the outcome.
    move_status_field: str = Field(
        default="x_myinvois_status", description="account.move field: empty/pending, queued, valid, invalid, ..."
    )
    move_uuid_field: str = Field(
        default="x_myinvois_uuid", description="account.move field receiving the MyInvois UUID."
    )
    move_long_id_field: str = Field(
        default="x_myinvois_long_id", description="account.move field receiving the long id."
    )
    move_validation_link_field: str = Field(
        default="x_myinvois_validation_link", description="account.move field receiving the validation link."
    )
    move_version_field: str = Field(
        default="x_myinvois_version", description="account.move integer field: the version the status belongs to."
    )
    move_cancel_reason_field: str = Field(
        default="x_myinvois_cancel_reason",
        description="account.move field where the ERP writes why an invoice is to be cancelled (with the status "
        "cancel_requested); empty: the ERP does not ask for cancellations.",
    )

    @field_validator("*")
    @classmethod
    def _odoo_field_name(cls, value: str, info) -> str:
        if value and not ODOO_FIELD_NAME.fullmatch(value):
            raise ValueError(
                f"{info.field_name} = {value!r} is not an Odoo field name (lower-case letters, digits, underscores)"
            )
        return value


MANDATORY_MAPPINGS = (
    "partner_tin_field",
    "partner_id_value_field",
    "product_classification_field",
    "tax_type_field",
    "move_status_field",
    "move_uuid_field",
    "move_version_field",
)


class OdooSourceOptions(BaseModel):
    """Options of an Odoo source. Unknown keys are refused so a misspelt setting is reported."""

    # hide_input_in_errors: a rejected value must never echo the API key.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, hide_input_in_errors=True)

    url: str = Field(description="Odoo's base URL, e.g. https://erp.example.com (no path).")
    database: str = Field(description="Odoo database name.")
    login: str = Field(description="Login of the Odoo user the connector acts as.")
    api_key: Secret = Field(description="That user's API key (Preferences > Account Security > New API Key).")
    protocol: Literal["xmlrpc", "jsonrpc"] = Field(default="xmlrpc", description="Odoo external API flavour.")
    timeout_seconds: float = Field(
        default=30.0, gt=0, le=600, description="Give up on one Odoo request after this long."
    )
    page_size: int = Field(default=100, ge=1, le=1000, description="Invoices read per request; bounds memory use.")
    include_vendor_bills: bool = Field(
        default=False, description="Also send posted vendor bills and refunds as self-billed documents (11/12)."
    )
    company_ids: list[int] = Field(
        default_factory=list, description="Only these companies' documents; empty: every company the user sees."
    )
    untaxed_tax_type: str = Field(
        default="06", description="Tax type of a line without any Odoo tax ('06' = not applicable)."
    )
    default_classification: str = Field(
        default="", description="Classification code for lines whose product has none; empty: such lines are refused."
    )
    fields: OdooFieldMapping = Field(
        default_factory=OdooFieldMapping, description="Where the MyInvois data lives in Odoo."
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, value: str) -> str:
        if not re.fullmatch(r"https?://[^\s/?#]+(:\d+)?/?", value):
            raise ValueError(
                "must be Odoo's base URL like https://erp.example.com or http://127.0.0.1:8069, without a path"
            )
        return value.rstrip("/")

    @field_validator("fields")
    @classmethod
    def _mandatory_mappings(cls, value: OdooFieldMapping) -> OdooFieldMapping:
        empty = [name for name in MANDATORY_MAPPINGS if not getattr(value, name)]
        if empty:
            raise ValueError(f"fields.{empty[0]} cannot be empty: the connector needs that field")
        return value
