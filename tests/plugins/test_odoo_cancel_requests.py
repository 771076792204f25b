"""ERP-driven cancellation through the Odoo plugin, on the protocol-faithful stand-in: the
status value ``cancel_requested`` and a reason field on the invoice; a connector assembled
in-process against the simulator on loopback."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import create_engine, select

from connector_core.ledger.schema import documents
from connector_core.runtime import Connector
from connector_core.settings import Settings
from connector_core.simulator import SimulatorConfig, run_in_thread
from tests.odoo_standin import OdooStandin, create_move, seed_demo_company
from tests.plugin_contract import DEMO_SUPPLIER

API_KEY = "odoo-api-key-cancel-secret"
LOGIN = "connector@demo.example"


@pytest.fixture()
def simulator():
    with run_in_thread(SimulatorConfig(validation={"delay_seconds": 0.0, "per_document_seconds": 0.0})) as sim:
        yield sim


def connector(tmp_path, sim, odoo: OdooStandin, **fields) -> Connector:
    options = {"url": odoo.url, "database": "demo", "login": LOGIN, "api_key": API_KEY, "fields": fields}
    settings = Settings(
        environment="simulator",
        api_base_url=sim.base_url,
        state_dir=tmp_path / "state",
        ledger={"url": f"sqlite:///{tmp_path / 'ledger.sqlite'}"},
        rate_limits={"backend": "memory"},
        cycles={"first_poll_delay_seconds": 0.0, "poll_min_interval_seconds": 0.0, "poll_max_interval_seconds": 0.1},
        profiles={
            "main": {"tin": DEMO_SUPPLIER["tin"], "client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret"}
        },
        sources={"odoo": {"kind": "odoo", "profile": "main", "options": options}},
    )
    return Connector(settings)


def ledger_state(tmp_path, key: int) -> str:
    engine = create_engine(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    try:
        with engine.connect() as conn:
            return conn.execute(select(documents.c.state).where(documents.c.source_key == str(key))).scalar_one()
    finally:
        engine.dispose()


def status_at_myinvois(sim, number: str) -> str:
    [document] = [d for d in sim.simulator.store.documents.values() if d.internal_id == number]
    return document.status(time.time())


def ask_to_cancel(odoo: OdooStandin, move: int, reason: str) -> None:
    with odoo._lock:
        odoo.records["account.move"][move].update(x_myinvois_status="cancel_requested", x_myinvois_cancel_reason=reason)


def test_odoo_cancel_requested_state_and_reason_field(tmp_path, simulator):
    with OdooStandin(version="17.0") as odoo:
        odoo.add_user(LOGIN, API_KEY)
        demo = seed_demo_company(odoo)
        move = create_move(odoo, demo)
        with connector(tmp_path, simulator, odoo) as c:
            c.run_once()
            assert ledger_state(tmp_path, move) == "valid"
            ask_to_cancel(odoo, move, "Wrong customer")

            c.fetch_and_submit_cycle()

            assert ledger_state(tmp_path, move) == "cancelled"
            assert status_at_myinvois(simulator, odoo.get("account.move", move)["name"]) == "Cancelled"
            # Taken once recorded: the request is not read again.
            assert odoo.get("account.move", move)["x_myinvois_status"] != "cancel_requested"
            reads = odoo.object_calls("account.move", "search_read")
            assert any(
                ["x_myinvois_status", "=", "cancel_requested"] in [list(t) for t in call.model_args[0]]
                for call in reads
            )


def test_odoo_without_the_reason_field_offers_no_cancel_requests(tmp_path, simulator, caplog):
    with OdooStandin(version="17.0") as odoo:
        odoo.add_user(LOGIN, API_KEY)
        demo = seed_demo_company(odoo)
        move = create_move(odoo, demo)
        with connector(tmp_path, simulator, odoo, move_cancel_reason_field="x_not_there") as c:
            c.run_once()
            with odoo._lock:
                odoo.records["account.move"][move]["x_myinvois_status"] = "cancel_requested"
            report = c.fetch_and_submit_cycle()
        assert report.cancels == []
        assert ledger_state(tmp_path, move) == "valid"
        assert "no field 'x_not_there'" in caplog.text and "fields.move_cancel_reason_field" in caplog.text
