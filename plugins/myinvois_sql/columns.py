"""The column contract shared by the staging tables and the custom queries.

Staging mode reads these columns from ``einvoice_header`` / ``einvoice_line``; custom queries
must return columns with the same names (the header key as ``source_key``). Keeping one list
means the documentation, the DDL files and the reader cannot drift apart unnoticed: the tests
compare this module with the shipped DDL.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, DateTime, Integer, LargeBinary, MetaData, String, Table, Text
from sqlalchemy.types import NullType

PARTY_FIELDS = (
    "name",
    "tin",
    "id_type",
    "id_value",
    "sst",
    "ttx",
    "msic_code",
    "business_activity",
    "address_line1",
    "address_line2",
    "address_line3",
    "city",
    "postal_zone",
    "state",
    "country",
    "phone",
    "email",
)

HEADER_DATA_COLUMNS = (
    "invoice_number",
    "document_type",
    "issue_date",
    "currency",
    "exchange_rate",
    *(f"supplier_{f}" for f in PARTY_FIELDS),
    *(f"buyer_{f}" for f in PARTY_FIELDS),
    "original_invoice_number",
    "original_invoice_uuid",
    "payment_mode",
    "payment_terms",
    "billing_period_start",
    "billing_period_end",
    "billing_frequency",
    "invoice_discount",
    "invoice_charge",
    "rounding_amount",
    "notes",
)

STATUS_COLUMNS = (
    "myinvois_status",
    "myinvois_uuid",
    "myinvois_long_id",
    "myinvois_validation_link",
    "myinvois_errors",
    "myinvois_submission_uid",
    "myinvois_updated_at",
    "myinvois_version",
)

#: Optional: the QR code (PNG bytes) of a valid invoice's validation link, written when the
#: header table has it (config/sql/add-qr-column.sql; docs/plugin-sql.md "QR codes").
QR_COLUMN = "myinvois_qr_png"

#: Optional: after Valid, the reason and time of a buyer's rejection request or of a
#: cancellation, written when the header table has them (config/sql/add-lifecycle-columns.sql;
#: docs/plugin-sql.md "After Valid").
LIFECYCLE_COLUMNS = ("myinvois_reason", "myinvois_event_at")

#: Optional, written by the ERP: why an invoice whose myinvois_status it set to
#: 'cancel_requested' is to be cancelled (config/sql/cancel-requests.sql; docs/plugin-sql.md
#: "Cancelling"). A table without it offers no cancel requests.
CANCEL_REQUEST_COLUMNS = ("myinvois_cancel_reason",)

LINE_DATA_COLUMNS = (
    "line_no",
    "description",
    "classification_codes",
    "quantity",
    "unit_code",
    "unit_price",
    "discount_amount",
    "charge_amount",
    "tax_type",
    "tax_rate",
    "taxable_amount",
    "tax_amount",
    "tax_exemption_reason",
    "tariff_code",
    "origin_country",
)

#: Columns an invoice cannot do without, with the fix a clerk should make when one is empty.
PARTY_REQUIRED = {
    "name": "fill in the {party}'s registered name",
    "tin": "fill in the {party}'s tax identification number (TIN), e.g. C58101234560",
    "id_value": "fill in the {party}'s registration number (BRN) or identity number, or 'NA' where none applies",
    "address_line1": "fill in the first line of the {party}'s address",
    "city": "fill in the {party}'s city",
    "state": "fill in the {party}'s state code (01-16, or 17 when not applicable)",
    "phone": "fill in the {party}'s telephone number, e.g. +60123456789",
}
HEADER_REQUIRED = {
    "invoice_number": "fill in the invoice number printed on the document",
    **{f"supplier_{k}": v.format(party="supplier") for k, v in PARTY_REQUIRED.items()},
    "supplier_msic_code": "fill in the supplier's 5-digit MSIC code, e.g. 46510",
    **{f"buyer_{k}": v.format(party="buyer") for k, v in PARTY_REQUIRED.items()},
}
LINE_REQUIRED = {
    "description": "describe the goods or service sold on this line",
    "classification_codes": "fill in a 3-digit classification code, e.g. 022 (Others)",
    "unit_price": "fill in the unit price",
    "tax_type": "fill in the tax type: 01 sales tax, 02 service tax, 06 not applicable, E exempt",
    "tax_amount": "fill in the tax amount of the line (0 when no tax applies)",
}


def staging_tables(
    header_name: str, line_name: str, schema: str | None, *, qr_column: bool = False, lifecycle_columns: bool = False
) -> tuple[Table, Table]:
    """SQLAlchemy Core descriptions of the two staging tables under the configured names.

    Data columns are left untyped so values arrive as the driver gives them and the reader can
    name the column of any value it cannot convert (instead of a driver error deep inside
    SQLAlchemy); the status block is typed because the connector writes it.
    """
    metadata = MetaData(schema=schema)
    header = Table(
        header_name,
        metadata,
        Column("id", BigInteger, primary_key=True),
        *(Column(name, NullType) for name in HEADER_DATA_COLUMNS),
        Column("myinvois_status", String(20)),
        Column("myinvois_uuid", String(64)),
        Column("myinvois_long_id", String(128)),
        Column("myinvois_validation_link", String(300)),
        Column("myinvois_errors", Text),
        Column("myinvois_submission_uid", String(64)),
        Column("myinvois_updated_at", DateTime(timezone=True)),
        Column("myinvois_version", Integer),
        *((Column(QR_COLUMN, LargeBinary),) if qr_column else ()),
        *(
            (Column("myinvois_reason", Text), Column("myinvois_event_at", DateTime(timezone=True)))
            if lifecycle_columns
            else ()
        ),
    )
    line = Table(
        line_name,
        metadata,
        Column("id", BigInteger, primary_key=True),
        Column("header_id", BigInteger),
        *(Column(name, NullType) for name in LINE_DATA_COLUMNS),
    )
    return header, line
