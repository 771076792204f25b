"""ERP-driven cancellation through the SQL plugin: a status value and a reason column in the
staging table (added by config/sql/cancel-requests.sql), or the custom queries; a connector
assembled in-process against the simulator on loopback, its ledger on every database."""

from __future__ import annotations  # noqa: I001

import time
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, select, text

from connector_core.ledger.schema import documents
from connector_core.runtime import Connector
from connector_core.settings import Settings
from connector_core.simulator import SimulatorConfig, run_in_thread
from tests.exactly_once.conftest import ledger_url  # noqa: F401 - the fixture: a fresh ledger on each database
from tests.plugins.sql_staging import DDL_DIR, STAGING_AS_QUERIES, StagingErp, recreate_staging_tables
from tests.plugin_contract import DEMO_SUPPLIER


@pytest.fixture()
def simulator():
    with run_in_thread(SimulatorConfig(validation={"delay_seconds": 0.0, "per_document_seconds": 0.0})) as sim:
        yield sim


@pytest.fixture()
def staging(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'erp.sqlite'}")
    recreate_staging_tables(engine)
    yield engine
    engine.dispose()


def add_reason_column(engine) -> None:
    """The shipped migration note, run as an operator would."""
    statement = "\n".join(
        line for line in (DDL_DIR / "cancel-requests.sql").read_text().splitlines() if not line.startswith("--")
    )
    with engine.begin() as conn:
        conn.execute(text(statement.strip().rstrip(";")))


def connector(tmp_path: Path, sim, ledger: str, staging_url: str, **options) -> Connector:
    settings = Settings(
        environment="simulator",
        api_base_url=sim.base_url,
        state_dir=tmp_path / "state",
        ledger={"url": ledger},
        rate_limits={"backend": "memory"},
        cycles={"first_poll_delay_seconds": 0.0, "poll_min_interval_seconds": 0.0, "poll_max_interval_seconds": 0.1},
        profiles={
            "main": {"tin": DEMO_SUPPLIER["tin"], "client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret"}
        },
        sources={"erp": {"kind": "sql", "profile": "main", "options": {"url": staging_url, **options}}},
    )
    return Connector(settings)


def ledger_states(ledger: str) -> dict[str, tuple[str, str | None]]:
    engine = create_engine(ledger)
    try:
        with engine.connect() as conn:
            rows = conn.execute(select(documents.c.source_key, documents.c.state, documents.c.cancel_error))
            return {r.source_key: (r.state, r.cancel_error) for r in rows}
    finally:
        engine.dispose()


def status_at_myinvois(sim, number: str) -> str:
    [document] = [d for d in sim.simulator.store.documents.values() if d.internal_id == number]
    return document.status(time.time())


def ask_to_cancel(engine, key: str, reason: str | None) -> None:
    with engine.begin() as conn:
        conn.execute(
            text(
                "UPDATE einvoice_header SET myinvois_status = 'cancel_requested', myinvois_cancel_reason = :reason "
                "WHERE id = :key"
            ),
            {"key": int(key), "reason": reason},
        )


def cancel_calls(sim) -> int:
    return sum(sim.simulator.stats.requests.get("cancel", {}).values())


def header_status(engine, key: str) -> str:
    with engine.connect() as conn:
        return conn.execute(text("SELECT myinvois_status FROM einvoice_header WHERE id = :k"), {"k": int(key)}).scalar()


def test_sql_staging_cancel_requested_status_and_reason_column(tmp_path, simulator, staging, ledger_url):  # noqa: F811
    erp = StagingErp(staging)
    keys = erp.add(2)
    with connector(tmp_path, simulator, ledger_url, str(staging.url)) as c:
        c.run_once()
        assert {ledger_states(ledger_url)[k][0] for k in keys} == {"valid"}
        ask_to_cancel(staging, keys[0], "Wrong price on line 1")
        ask_to_cancel(staging, keys[1], None)

        c.fetch_and_submit_cycle()

        states = ledger_states(ledger_url)
        assert states[keys[0]][0] == "cancelled"
        assert status_at_myinvois(simulator, "INV-000001") == "Cancelled"
        # No reason: refused without a call, the fix kept for the ERP.
        assert states[keys[1]][0] == "valid" and "reason" in (states[keys[1]][1] or "")
        assert status_at_myinvois(simulator, "INV-000002") == "Valid"
        # Taken: not offered again.
        assert header_status(staging, keys[0]) != "cancel_requested"
        assert header_status(staging, keys[1]) != "cancel_requested"

        # Asked again once cancelled: nothing is sent, and the ERP hears "cancelled" again.
        ask_to_cancel(staging, keys[0], "Wrong price on line 1")
        calls = cancel_calls(simulator)
        c.fetch_and_submit_cycle()
        assert cancel_calls(simulator) == calls
        assert header_status(staging, keys[0]) == "cancelled"


def test_sql_staging_table_from_before_the_reason_column_offers_none_until_the_migration_note_ran(
    tmp_path, simulator, staging, caplog
):
    with staging.begin() as conn:  # a table created by the DDL before cancellation existed
        conn.execute(text("ALTER TABLE einvoice_header DROP COLUMN myinvois_cancel_reason"))
    erp = StagingErp(staging)
    [key] = erp.add(1)
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    with connector(tmp_path, simulator, ledger, str(staging.url)) as c:
        c.run_once()
        with staging.begin() as conn:
            conn.execute(text("UPDATE einvoice_header SET myinvois_status = 'cancel_requested' WHERE id = 1"))
        report = c.fetch_and_submit_cycle()
    assert report.cancels == []
    assert ledger_states(ledger)[key][0] == "valid"
    assert "has no column myinvois_cancel_reason" in caplog.text and "cancel-requests.sql" in caplog.text

    add_reason_column(staging)
    assert "myinvois_cancel_reason" in {column["name"] for column in inspect(staging).get_columns("einvoice_header")}


def test_sql_queries_mode_cancel_requests(tmp_path, simulator, staging):
    erp = StagingErp(staging)
    keys = erp.add(1)
    ledger = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    queries = {
        **STAGING_AS_QUERIES,
        "cancel_requests": "SELECT id AS source_key, myinvois_cancel_reason AS reason FROM einvoice_header "
        "WHERE myinvois_status = 'cancel_requested'",
        "mark_cancel_taken": "UPDATE einvoice_header SET myinvois_status = 'cancelling' WHERE id = :source_key "
        "AND myinvois_status = 'cancel_requested'",
    }
    with connector(tmp_path, simulator, ledger, str(staging.url), mode="queries", queries=queries) as c:
        c.run_once()
        ask_to_cancel(staging, keys[0], "Duplicate")
        c.fetch_and_submit_cycle()
    assert ledger_states(ledger)[keys[0]][0] == "cancelled"
    assert status_at_myinvois(simulator, "INV-000001") == "Cancelled"
    assert header_status(staging, keys[0]) != "cancel_requested"
