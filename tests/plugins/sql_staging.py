"""Helpers shared by the SQL plugin tests: the shipped DDL applied to a real database, and
well-formed staging rows for the demo taxpayer."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from sqlalchemy import Engine, MetaData, Table, insert, select, text

from tests.plugin_contract import DEMO_BUYER, DEMO_SUPPLIER, ErpStatus

DDL_DIR = Path(__file__).resolve().parents[2] / "config" / "sql"
DDL_FILE = {"sqlite": "staging-sqlite.sql", "postgresql": "staging-postgres.sql", "mysql": "staging-mariadb.sql"}


def ddl_statements(dialect: str) -> list[str]:
    """The statements of the shipped DDL file for a dialect, comments removed."""
    source = (DDL_DIR / DDL_FILE[dialect]).read_text("utf-8")
    without_comments = "\n".join(line.split("--", 1)[0] for line in source.splitlines())
    return [statement.strip() for statement in without_comments.split(";") if statement.strip()]


def recreate_staging_tables(engine: Engine) -> None:
    """Drop the staging tables and create them again from the shipped DDL file."""
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS einvoice_line"))
        conn.execute(text("DROP TABLE IF EXISTS einvoice_header"))
        for statement in ddl_statements(engine.dialect.name):
            conn.execute(text(statement))


def header_row(key: int, **overrides: Any) -> dict[str, Any]:
    row = {
        "id": key,
        "invoice_number": f"INV-{key:06d}",
        "document_type": "01",
        "issue_date": None,
        "currency": "MYR",
        "supplier_name": DEMO_SUPPLIER["name"],
        "supplier_tin": DEMO_SUPPLIER["tin"],
        "supplier_id_type": "BRN",
        "supplier_id_value": DEMO_SUPPLIER["brn"],
        "supplier_sst": "NA",
        "supplier_msic_code": DEMO_SUPPLIER["msic_code"],
        "supplier_business_activity": "Wholesale of computer hardware, software and peripherals",
        "supplier_address_line1": "Lot 66, Bangunan Merdeka",
        "supplier_address_line2": "Persiaran Jaya",
        "supplier_city": "Kuala Lumpur",
        "supplier_postal_zone": "50480",
        "supplier_state": "14",
        "supplier_country": "MYS",
        "supplier_phone": "+60123456789",
        "supplier_email": "billing@demo.example",
        "buyer_name": DEMO_BUYER["name"],
        "buyer_tin": DEMO_BUYER["tin"],
        "buyer_id_type": "BRN",
        "buyer_id_value": DEMO_BUYER["brn"],
        "buyer_address_line1": "No. 8, Jalan Contoh",
        "buyer_city": "Shah Alam",
        "buyer_postal_zone": "40000",
        "buyer_state": "10",
        "buyer_phone": "+60387654321",
    }
    row.update(overrides)
    return row


def line_rows(header_id: int) -> list[dict[str, Any]]:
    return [
        {
            "header_id": header_id,
            "line_no": 1,
            "description": "Laptop Peripherals",
            "classification_codes": "022",
            "quantity": "2",
            "unit_code": "C62",
            "unit_price": "150.50",
            "tax_type": "01",
            "tax_rate": "10",
            "tax_amount": "30.10",
        },
        {
            "header_id": header_id,
            "line_no": 2,
            "description": "Installation service",
            "classification_codes": "022",
            "quantity": "1",
            "unit_code": None,
            "unit_price": "80.00",
            "tax_type": "02",
            "tax_rate": "8",
            "tax_amount": "6.40",
        },
    ]


class StagingErp:
    """The ERP side of the staging tables: what the ERP writes and what a clerk would see."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        metadata = MetaData()
        self.header = Table("einvoice_header", metadata, autoload_with=engine)
        self.line = Table("einvoice_line", metadata, autoload_with=engine)
        self.next_key = 1

    def add(self, count: int, **overrides: Any) -> list[str]:
        keys = list(range(self.next_key, self.next_key + count))
        self.next_key += count
        with self.engine.begin() as conn:
            conn.execute(insert(self.header), [header_row(key, **overrides) for key in keys])
            conn.execute(insert(self.line), [line for key in keys for line in line_rows(key)])
        return [str(key) for key in keys]

    def status(self, source_key: str) -> ErpStatus:
        h = self.header.c
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    h.myinvois_status, h.myinvois_uuid, h.myinvois_long_id, h.myinvois_validation_link, h.myinvois_errors,
                    h.myinvois_reason,
                ).where(h.id == int(source_key))
            ).one()  # fmt: skip
        return ErpStatus(*row)

    def row(self, source_key: str) -> dict[str, Any]:
        with self.engine.connect() as conn:
            return dict(conn.execute(select(self.header).where(self.header.c.id == int(source_key))).mappings().one())


#: Custom queries that read the staging tables: the same data through the queries mode, so the
#: contract suite also proves the query wrapping on every database.
STAGING_AS_QUERIES = {
    "pending_headers": "SELECT h.id AS source_key, h.* FROM einvoice_header h "
    "WHERE h.myinvois_status IS NULL OR h.myinvois_status = 'pending'",
    "lines": "SELECT * FROM einvoice_line WHERE header_id = :source_key ORDER BY line_no",
    "mark_queued": "UPDATE einvoice_header SET myinvois_status = 'queued' WHERE id = :source_key "
    "AND (myinvois_status IS NULL OR myinvois_status = 'pending')",
    "write_result": "UPDATE einvoice_header SET myinvois_status = :status, myinvois_uuid = :uuid, "
    "myinvois_long_id = :long_id, myinvois_validation_link = :validation_link, myinvois_errors = :errors, "
    "myinvois_submission_uid = :submission_uid, myinvois_updated_at = :updated_at, myinvois_version = :version, "
    "myinvois_reason = :reason, myinvois_event_at = :event_at "
    "WHERE id = :source_key AND (myinvois_version IS NULL OR myinvois_version < :version "
    "OR (myinvois_version = :version AND myinvois_status IN ('valid', 'rejection_requested', 'cancelled', 'cancelling')))",
}
