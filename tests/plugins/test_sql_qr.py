"""The SQL plugin writes the QR code of a valid invoice's validation link into the optional
``myinvois_qr_png`` column, added with the statement config/sql/add-qr-column.sql gives for
each database; without the column, write-back goes on as before."""

from __future__ import annotations

import re

import pytest
from sqlalchemy import create_engine, text

from connector_core.contract import DocumentOutcome, DocumentState, Source
from myinvois_sql import plugin
from myinvois_sql.engines import dispose_all
from myinvois_sql.options import SqlSourceOptions
from tests.plugin_contract import invalid_outcome, valid_outcome
from tests.plugins.sql_staging import DDL_DIR, StagingErp, recreate_staging_tables
from tests.qr_decode import decode_qr

DIALECT_LINE = {"postgresql": "PostgreSQL", "mysql": "MariaDB", "sqlite": "SQLite"}


def add_qr_column(engine) -> None:
    """Run the statement the shipped note gives for this database."""
    note = (DDL_DIR / "add-qr-column.sql").read_text("utf-8")
    section = note.split(f"-- {DIALECT_LINE[engine.dialect.name]}", 1)[1]
    statement = re.search(r"--\s+(ALTER TABLE [^;]+);", section).group(1)
    with engine.begin() as conn:
        conn.execute(text(statement))


def source_for(url: str) -> Source:
    return Source(name="erp", kind="sql", profile="demo", options=SqlSourceOptions.model_validate({"url": url}))


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def erp_url(request, tmp_path):
    url = {
        "sqlite": lambda: f"sqlite:///{tmp_path / 'erp.sqlite'}",
        "postgresql": lambda: request.getfixturevalue("postgres_url"),
        "mariadb": lambda: request.getfixturevalue("mariadb_url"),
    }[request.param]()
    yield url
    dispose_all()


def test_a_valid_invoice_gets_its_qr_code_and_a_cancelled_one_loses_it(erp_url):
    engine = create_engine(erp_url)
    try:
        recreate_staging_tables(engine)
        add_qr_column(engine)
        erp = StagingErp(engine)
        erp.add(2)
        source = source_for(erp_url)
        first, second = list(plugin.fetch_pending_invoices(source=source, limit=10))
        valid = valid_outcome(first)
        plugin.on_submission_result(source=source, outcomes=[valid, invalid_outcome(second)])
        with engine.connect() as conn:
            codes = dict(conn.execute(text("SELECT id, myinvois_qr_png FROM einvoice_header ORDER BY id")).all())
        assert decode_qr(bytes(codes[int(first.source_key)])) == [valid.validation_link]
        assert codes[int(second.source_key)] is None

        cancelled = DocumentOutcome(
            first.source_key, first.number, 2, DocumentState.CANCELLED, uuid=valid.uuid, final_at=valid.final_at
        )
        plugin.on_submission_result(source=source, outcomes=[cancelled])
        with engine.connect() as conn:
            row = conn.execute(
                text("SELECT myinvois_status, myinvois_qr_png FROM einvoice_header WHERE id = :id"),
                {"id": int(first.source_key)},
            ).one()
        assert tuple(row) == ("cancelled", None)
    finally:
        engine.dispose()


def test_without_the_column_everything_else_is_written(tmp_path):
    url = f"sqlite:///{tmp_path / 'erp.sqlite'}"
    engine = create_engine(url)
    try:
        recreate_staging_tables(engine)
        StagingErp(engine).add(1)
        source = source_for(url)
        (invoice,) = plugin.fetch_pending_invoices(source=source, limit=10)
        plugin.on_submission_result(source=source, outcomes=[valid_outcome(invoice)])
        with engine.connect() as conn:
            assert conn.execute(text("SELECT myinvois_status FROM einvoice_header")).scalar_one() == "valid"
    finally:
        engine.dispose()
        dispose_all()


def test_custom_queries_may_store_the_qr_code_through_qr_png(tmp_path):
    from tests.plugins.test_sql_plugin import ERP_QUERIES, ERP_SCHEMA

    url = f"sqlite:///{tmp_path / 'erp.sqlite'}"
    engine = create_engine(url)
    try:
        with engine.begin() as conn:
            for statement in ERP_SCHEMA:
                conn.execute(text(statement))
            conn.execute(text("ALTER TABLE ar_invoice ADD COLUMN einv_qr BLOB"))
            conn.execute(
                text("INSERT INTO customer VALUES ('K1', 'Pelanggan Contoh Sdn. Bhd.', 'C58101234560', '200501012345', "
                     "'No. 8, Jalan Contoh', 'Shah Alam', '10', '+60387654321')")
            )  # fmt: skip
            conn.execute(text("INSERT INTO ar_invoice (doc_no, customer_code, posted) VALUES ('A-1', 'K1', 1)"))
            conn.execute(text("INSERT INTO ar_invoice_item VALUES ('A-1', 1, 'Toner', 3, 45.5, '01', 13.65)"))
        queries = dict(
            ERP_QUERIES,
            write_result="UPDATE ar_invoice SET einv_state = :status, einv_qr = :qr_png, einv_version = :version "
            "WHERE doc_no = :source_key AND (einv_version IS NULL OR einv_version < :version)",
        )
        source = Source(
            name="erp",
            kind="sql",
            profile="demo",
            options=SqlSourceOptions.model_validate({"url": url, "mode": "queries", "queries": queries}),
        )
        (invoice,) = plugin.fetch_pending_invoices(source=source, limit=10)
        outcome = valid_outcome(invoice)
        plugin.on_submission_result(source=source, outcomes=[outcome])
        with engine.connect() as conn:
            state, code = conn.execute(text("SELECT einv_state, einv_qr FROM ar_invoice")).one()
        assert state == "valid" and decode_qr(bytes(code)) == [outcome.validation_link]
    finally:
        engine.dispose()
        dispose_all()
