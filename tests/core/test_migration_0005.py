"""Migration 0005 (what happens after Valid) on every backend: the rows already there keep
everything, are not watched, and have never been cancelled; a downgrade gives 0004 back."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, select, text

from connector_core.ledger import Ledger, migrate
from connector_core.ledger.schema import documents, metadata

NEW_COLUMNS = {
    "validated_at",
    "watch_until",
    "status_reason",
    "event_at",
    "cancel_reason",
    "cancel_requested_at",
    "cancel_error",
    "cancel_attempts",
}


@pytest.fixture(params=["sqlite", "postgresql", "mariadb"])
def database_url(request, tmp_path):
    url = (
        f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        if request.param == "sqlite"
        else request.getfixturevalue("postgres_url" if request.param == "postgresql" else "mariadb_url")
    )
    _drop_everything(url)
    yield url
    _drop_everything(url)


def _drop_everything(url: str) -> None:
    engine = create_engine(url)
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


def _migrate(url: str, revision: str, *, down: bool = False) -> None:
    engine = create_engine(url)
    with migrate.migration_lock(engine) as conn:
        cfg = migrate._config()
        cfg.attributes["connection"] = conn
        (command.downgrade if down else command.upgrade)(cfg, revision)
    engine.dispose()


def test_migration_0005_adds_the_lifecycle_columns_and_keeps_every_row(database_url):
    _migrate(database_url, "0004")
    now = datetime(2026, 12, 1, tzinfo=UTC)
    engine = create_engine(database_url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO documents (source, source_key, version, fingerprint, profile, number, state, uuid, "
                "attempts, fetched_at, updated_at, final_at, refused_as_batch, report_attempts) VALUES "
                "('s', 'A', 1, :fp, 'p', 'A', 'valid', 'UUID-A', 1, :now, :now, :now, :false, 0)"
            ),
            {"fp": "a" * 64, "now": now, "false": False},
        )
    engine.dispose()

    led = Ledger(database_url)  # upgrades to head
    try:
        assert led.schema_revision() == migrate.head_revision()
        assert {c["name"] for c in inspect(led.engine).get_columns("documents")} >= NEW_COLUMNS
        with led.engine.connect() as conn:
            row = conn.execute(select(documents)).one()
        assert (row.state, row.uuid) == ("valid", "UUID-A")
        # Validated before the watch existed: not watched, never cancelled.
        assert row.watch_until is None and row.validated_at is None and row.cancel_reason is None
        assert row.cancel_attempts == 0
    finally:
        led.close()

    _migrate(database_url, "0004", down=True)
    engine = create_engine(database_url)
    try:
        assert not NEW_COLUMNS & {c["name"] for c in inspect(engine).get_columns("documents")}
        with engine.connect() as conn:
            assert conn.execute(text("SELECT state, uuid FROM documents")).one() == ("valid", "UUID-A")
    finally:
        engine.dispose()
