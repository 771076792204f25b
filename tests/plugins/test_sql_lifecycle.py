"""The SQL plugin writes what happens after Valid into the same row and version: a rejection
request or a cancellation with its reason and time (``myinvois_reason``, ``myinvois_event_at``),
and a refused cancel's advice in ``myinvois_errors``. A staging table created before those
columns gets them from config/sql/add-lifecycle-columns.sql; until then the status alone is
written. On SQLite, PostgreSQL and MariaDB."""

from __future__ import annotations

import logging
import re
from dataclasses import replace
from datetime import UTC, datetime

import pytest
from sqlalchemy import create_engine, text

from connector_core.contract import DocumentState, Source
from myinvois_sql import plugin
from myinvois_sql.engines import dispose_all
from myinvois_sql.options import SqlSourceOptions
from tests.plugin_contract import valid_outcome
from tests.plugins.sql_staging import DDL_DIR, StagingErp, recreate_staging_tables

DIALECT_LINE = {"postgresql": "PostgreSQL", "mysql": "MariaDB", "sqlite": "SQLite"}
REQUESTED_AT = datetime(2026, 11, 25, 9, 30, 15, tzinfo=UTC)


def migration_statements(engine) -> list[str]:
    """The statements the shipped migration note gives for this database."""
    note = (DDL_DIR / "add-lifecycle-columns.sql").read_text("utf-8")
    section = note.split(f"-- {DIALECT_LINE[engine.dialect.name]}", 1)[1]
    statements = []
    for line in section.splitlines()[1:]:
        found = re.match(r"--\s+(ALTER TABLE [^;]+);", line)
        if found is None:
            break
        statements.append(found.group(1))
    return statements


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


def _row(engine, key: str) -> dict:
    with engine.connect() as conn:
        return dict(
            conn.execute(text("SELECT * FROM einvoice_header WHERE id = :id"), {"id": int(key)}).mappings().one()
        )


def _as_utc(value) -> datetime:
    if isinstance(value, str):  # SQLite keeps TIMESTAMP as text
        value = datetime.fromisoformat(value)
    return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)


def test_rejection_request_cancellation_and_refused_cancel_are_written_with_reason_and_time(erp_url):
    engine = create_engine(erp_url)
    try:
        recreate_staging_tables(engine)
        erp = StagingErp(engine)
        (key,) = erp.add(1)
        source = source_for(erp_url)
        (invoice,) = list(plugin.fetch_pending_invoices(source=source, limit=10))
        plugin.on_invoices_recorded(source=source, source_keys=[key])
        valid = valid_outcome(invoice)
        plugin.on_submission_result(source=source, outcomes=[valid])

        requested = replace(
            valid, state=DocumentState.REJECTION_REQUESTED, reason="Wrong quantity on line 2", event_at=REQUESTED_AT
        )
        plugin.on_submission_result(source=source, outcomes=[requested])
        row = _row(engine, key)
        assert (row["myinvois_status"], row["myinvois_version"], row["myinvois_uuid"]) == (
            "rejection_requested",
            1,
            valid.uuid,
        )
        assert row["myinvois_reason"] == "Wrong quantity on line 2"
        assert _as_utc(row["myinvois_event_at"]) == REQUESTED_AT

        # The clerk asked for a cancel, the connector took it; MyInvois refused it.
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE einvoice_header SET myinvois_status = 'cancelling' WHERE id = :id"), {"id": int(key)}
            )
        refused = replace(requested, cancel_error=["OperationPeriodOver: issue a credit note instead"])
        plugin.on_submission_result(source=source, outcomes=[refused])
        row = _row(engine, key)
        assert row["myinvois_status"] == "rejection_requested"
        assert row["myinvois_errors"] == "cancel refused: OperationPeriodOver: issue a credit note instead"

        cancelled = replace(requested, state=DocumentState.CANCELLED, reason="Cancelled on the portal", event_at=None)
        plugin.on_submission_result(source=source, outcomes=[cancelled])
        row = _row(engine, key)
        assert (row["myinvois_status"], row["myinvois_reason"], row["myinvois_event_at"]) == (
            "cancelled",
            "Cancelled on the portal",
            None,
        )
        # A late repeat of an outcome of an older kind (not news after Valid) changes nothing.
        plugin.on_submission_result(source=source, outcomes=[replace(valid, state=DocumentState.INVALID)])
        assert _row(engine, key)["myinvois_status"] == "cancelled"
    finally:
        engine.dispose()


def test_the_erps_own_cancel_request_is_not_overwritten_by_news_of_the_same_version(erp_url):
    engine = create_engine(erp_url)
    try:
        recreate_staging_tables(engine)
        erp = StagingErp(engine)
        (key,) = erp.add(1)
        source = source_for(erp_url)
        (invoice,) = list(plugin.fetch_pending_invoices(source=source, limit=10))
        valid = valid_outcome(invoice)
        plugin.on_submission_result(source=source, outcomes=[valid])
        with engine.begin() as conn:
            conn.execute(
                text("UPDATE einvoice_header SET myinvois_status = 'cancel_requested' WHERE id = :id"), {"id": int(key)}
            )
        requested = replace(valid, state=DocumentState.REJECTION_REQUESTED, reason="Wrong price", event_at=REQUESTED_AT)
        plugin.on_submission_result(source=source, outcomes=[requested])
        assert _row(engine, key)["myinvois_status"] == "cancel_requested"
    finally:
        engine.dispose()


def test_a_table_from_before_gets_the_status_only_until_the_migration_note_is_run(erp_url, caplog):
    engine = create_engine(erp_url)
    try:
        recreate_staging_tables(engine)
        with engine.begin() as conn:  # the staging table as it was shipped before issue 12
            for column in ("myinvois_event_at", "myinvois_reason"):
                conn.execute(text(f"ALTER TABLE einvoice_header DROP COLUMN {column}"))
        erp = StagingErp(engine)
        keys = erp.add(2)
        source = source_for(erp_url)
        first, second = list(plugin.fetch_pending_invoices(source=source, limit=10))
        valid = valid_outcome(first)
        with caplog.at_level(logging.WARNING, logger="myinvois_sql"):
            plugin.on_submission_result(source=source, outcomes=[valid])
            plugin.on_submission_result(
                source=source, outcomes=[replace(valid, state=DocumentState.REJECTION_REQUESTED, reason="Wrong price")]
            )
        assert _row(engine, keys[0])["myinvois_status"] == "rejection_requested"
        warnings = [r.getMessage() for r in caplog.records if "add-lifecycle-columns.sql" in r.getMessage()]
        assert len(warnings) == 1 and "myinvois_reason" in warnings[0]

        statements = migration_statements(engine)
        assert len(statements) == 2
        with engine.begin() as conn:
            for statement in statements:
                conn.execute(text(statement))
        dispose_all()  # a restart: the columns are looked up once per start
        later = valid_outcome(second)
        plugin.on_submission_result(source=source, outcomes=[later])
        plugin.on_submission_result(
            source=source,
            outcomes=[replace(later, state=DocumentState.CANCELLED, reason="Duplicate", event_at=REQUESTED_AT)],
        )
        row = _row(engine, keys[1])
        assert (row["myinvois_status"], row["myinvois_reason"]) == ("cancelled", "Duplicate")
        assert _as_utc(row["myinvois_event_at"]) == REQUESTED_AT
    finally:
        engine.dispose()
