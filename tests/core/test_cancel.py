"""Cancelling a validated invoice, as a clerk does it (``myinvois-connector cancel``) and as the
ERP asks for it (``fetch_cancel_requests``), against the simulator on loopback with a CSV source.

Each test submits its invoices with ``run --once`` first; the simulator validates at once.
"""

from __future__ import annotations

import csv
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner
from sqlalchemy import create_engine, select, update

from connector_core.cli import main
from connector_core.exitcodes import ExitCode
from connector_core.ledger.database import utcnow
from connector_core.ledger.schema import documents
from connector_core.simulator import SimulatorConfig, run_in_thread
from tests.exactly_once.conftest import ledger_url, set_faults  # noqa: F401 - ledger_url is a fixture

REPO = Path(__file__).resolve().parents[2]
SALES = REPO / "config" / "demo" / "invoices" / "2026-11-24-sales.csv"


@pytest.fixture()
def simulator():
    config = SimulatorConfig(validation={"delay_seconds": 0.0, "per_document_seconds": 0.0})
    with run_in_thread(config) as sim:
        yield sim


def demo_rows(*numbers: str) -> list[dict[str, str]]:
    with SALES.open(encoding="utf-8", newline="") as fh:
        return [row for row in csv.DictReader(fh) if row["invoice_number"] in numbers]


def write_csv(path: Path, rows: list[dict[str, str]], columns: list[str] | None = None) -> None:
    columns = columns or list(rows[0])
    with path.open("w", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns)
        writer.writeheader()
        writer.writerows(rows)


def configure(tmp_path: Path, sim, ledger: str) -> Path:
    """config/demo.toml pointed at ``sim`` and the ledger ``ledger``, its inbox in ``tmp_path``,
    every wait short."""
    text = (REPO / "config" / "demo.toml").read_text()
    text = text.replace('seed_dir = "demo/invoices"', "settle_seconds = 0").replace('"../var/demo', '"var')
    text = text.replace('environment = "simulator"', f'environment = "simulator"\napi_base_url = "{sim.base_url}"')
    text = text.replace("first_poll_delay_seconds = 1.5", "first_poll_delay_seconds = 0")
    text = text.replace("poll_min_interval_seconds = 1.0", "poll_min_interval_seconds = 0.05")
    text += f'\n[ledger]\nurl = "{ledger}"\n'
    (tmp_path / "var" / "inbox").mkdir(parents=True)
    path = tmp_path / "connector.toml"
    path.write_text(text)
    return path


def cli(config: Path, *args: str):
    return CliRunner().invoke(main, ["--config", str(config), *args], catch_exceptions=False)


def outbox(tmp_path: Path) -> list[dict[str, str]]:
    path = tmp_path / "var" / "outbox" / "results.csv"
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def submitted(tmp_path: Path, config: Path, *numbers: str) -> dict[str, str]:
    """Run the invoices ``numbers`` through MyInvois; their uuids by number."""
    write_csv(tmp_path / "var" / "inbox" / "sales.csv", demo_rows(*numbers))
    result = cli(config, "run", "--once")
    assert result.exit_code == ExitCode.OK, result.output
    uuids = {row["invoice_number"]: row["uuid"] for row in outbox(tmp_path) if row["status"] == "valid"}
    assert set(uuids) == set(numbers)
    return uuids


def status_at_myinvois(sim, uuid: str) -> str:
    return sim.simulator.store.documents[uuid].status(time.time())


def cancel_errors(ledger: str) -> dict[str, str]:
    engine = create_engine(ledger)
    try:
        with engine.connect() as conn:
            return {
                r.number: r.cancel_error or ""
                for r in conn.execute(select(documents.c.number, documents.c.cancel_error))
            }
    finally:
        engine.dispose()


def cancel_calls(sim) -> int:
    stats = httpx.get(f"{sim.base_url}/_simulator/stats").json()
    return sum(stats["requests"].get("cancel", {}).values())


def test_cancel_within_the_window_ends_cancelled_at_myinvois_and_in_the_erp(tmp_path, simulator, ledger_url):  # noqa: F811
    config = configure(tmp_path, simulator, ledger_url)
    uuids = submitted(tmp_path, config, "DEMO-INV-1002")

    result = cli(config, "cancel", "DEMO-INV-1002", "--reason", "Wrong quantity on line 1")

    assert result.exit_code == ExitCode.OK, result.output
    assert "cancelled at MyInvois" in result.output
    assert status_at_myinvois(simulator, uuids["DEMO-INV-1002"]) == "Cancelled"
    rows = [r for r in outbox(tmp_path) if r["invoice_number"] == "DEMO-INV-1002"]
    assert [r["status"] for r in rows] == ["valid", "cancelled"]
    # Asked again: nothing is sent, nothing changes.
    again = cli(config, "cancel", "DEMO-INV-1002", "--reason", "Wrong quantity on line 1")
    assert again.exit_code == ExitCode.OK and "already cancelled" in again.output
    assert cancel_calls(simulator) == 1
    unknown = cli(config, "cancel", "DEMO-INV-9999", "--reason", "Wrong quantity on line 1")
    assert unknown.exit_code == ExitCode.UNKNOWN_INVOICE and "DEMO-INV-9999" in unknown.output


def test_cancel_after_the_window_surfaces_operation_period_over_once_and_is_not_retried(
    tmp_path,
    simulator,
    ledger_url,  # noqa: F811
):
    config = configure(tmp_path, simulator, ledger_url)
    uuids = submitted(tmp_path, config, "DEMO-INV-1002")
    # The window at MyInvois ends now; the ledger does not know it yet.
    httpx.post(f"{simulator.base_url}/_simulator/windows", json={"lifecycle_window_seconds": 0.001}).raise_for_status()

    result = cli(config, "cancel", "DEMO-INV-1002", "--reason", "Wrong customer")

    assert result.exit_code == ExitCode.REFUSED, result.output
    assert "OperationPeriodOver" in result.output and "issue a credit note instead" in result.output
    assert status_at_myinvois(simulator, uuids["DEMO-INV-1002"]) == "Valid"
    # The ERP hears the refusal with its advice (the invoice's row again, the advice in errors).
    assert "issue a credit note instead" in cancel_errors(ledger_url)["DEMO-INV-1002"]
    rows = [r for r in outbox(tmp_path) if r["invoice_number"] == "DEMO-INV-1002"]
    assert [r["status"] for r in rows] == ["valid", "valid"]
    assert "OperationPeriodOver" in rows[1]["errors"] and "issue a credit note instead" in rows[1]["errors"]
    # More cycles send nothing again.
    assert cli(config, "run", "--once").exit_code == ExitCode.OK
    assert cancel_calls(simulator) == 1


def test_cancel_refused_locally_when_the_ledger_knows_the_window_is_over(tmp_path, simulator, ledger_url):  # noqa: F811
    config = configure(tmp_path, simulator, ledger_url)
    submitted(tmp_path, config, "DEMO-INV-1002")
    engine = create_engine(ledger_url)
    with engine.begin() as conn:
        conn.execute(update(documents).values(watch_until=utcnow()))
    engine.dispose()

    result = cli(config, "cancel", "DEMO-INV-1002", "--reason", "Wrong customer")

    assert result.exit_code == ExitCode.REFUSED, result.output
    assert "issue a credit note instead" in result.output and "not sent" in result.output
    assert cancel_calls(simulator) == 0


def test_cancelling_an_invoice_a_credit_note_references_names_the_note(tmp_path, simulator, ledger_url):  # noqa: F811
    config = configure(tmp_path, simulator, ledger_url)
    uuids = submitted(tmp_path, config, "DEMO-INV-1001")
    notes = demo_rows("DEMO-CN-2001")
    for row in notes:
        row["original_uuid"] = uuids["DEMO-INV-1001"]
    write_csv(tmp_path / "var" / "inbox" / "notes.csv", notes)
    assert cli(config, "run", "--once").exit_code == ExitCode.OK
    note_uuid = next(r["uuid"] for r in outbox(tmp_path) if r["invoice_number"] == "DEMO-CN-2001")

    result = cli(config, "cancel", "DEMO-INV-1001", "--reason", "Wrong price")

    assert result.exit_code == ExitCode.REFUSED, result.output
    assert "ActiveReferencingDocuments" in result.output
    assert f"DEMO-CN-2001 (uuid {note_uuid})" in result.output and "cancel that note first" in result.output
    refused = [r for r in outbox(tmp_path) if r["invoice_number"] == "DEMO-INV-1001" and r["errors"]]
    assert refused and "DEMO-CN-2001" in refused[-1]["errors"]
    assert status_at_myinvois(simulator, uuids["DEMO-INV-1001"]) == "Valid"


def test_a_lost_cancel_answer_is_checked_through_get_submission_and_never_sent_twice(tmp_path, simulator, ledger_url):  # noqa: F811
    config = configure(tmp_path, simulator, ledger_url)
    uuids = submitted(tmp_path, config, "DEMO-INV-1002")
    # MyInvois cancels it, and the answer never arrives.
    set_faults(simulator, lost_response_rate={"cancel": 1.0})
    polls_before = httpx.get(f"{simulator.base_url}/_simulator/stats").json()["requests"]["get_submission"]

    result = cli(config, "cancel", "DEMO-INV-1002", "--reason", "Duplicate of DEMO-INV-1001")

    assert result.exit_code == ExitCode.OK, result.output
    assert status_at_myinvois(simulator, uuids["DEMO-INV-1002"]) == "Cancelled"
    assert cancel_calls(simulator) == 1
    polls_after = httpx.get(f"{simulator.base_url}/_simulator/stats").json()["requests"]["get_submission"]
    assert sum(polls_after.values()) > sum(polls_before.values()), "the status was not read after the lost answer"
    assert [r["status"] for r in outbox(tmp_path) if r["invoice_number"] == "DEMO-INV-1002"] == ["valid", "cancelled"]


def test_erp_cancel_requests_through_the_csv_plugin(tmp_path, simulator, ledger_url):  # noqa: F811
    config = configure(tmp_path, simulator, ledger_url)
    uuids = submitted(tmp_path, config, "DEMO-INV-1002", "DEMO-INV-1003")
    requests = tmp_path / "var" / "inbox" / "cancel-requests-1.csv"
    write_csv(
        requests,
        [
            {"invoice_number": "DEMO-INV-1002", "reason": "Customer returned the goods"},
            {"invoice_number": "DEMO-INV-1003", "reason": ""},
            {"invoice_number": "DEMO-INV-9999", "reason": "Never sent"},
        ],
    )

    assert cli(config, "run", "--once").exit_code == ExitCode.OK

    assert status_at_myinvois(simulator, uuids["DEMO-INV-1002"]) == "Cancelled"
    assert status_at_myinvois(simulator, uuids["DEMO-INV-1003"]) == "Valid"
    assert [r["status"] for r in outbox(tmp_path) if r["invoice_number"] == "DEMO-INV-1002"] == ["valid", "cancelled"]
    # Archived once recorded; the bad row named with its fix beside it; the unknown invoice in status.
    assert not requests.exists()
    errors = (tmp_path / "var" / "archive" / "cancel-requests-1.csv.errors.txt").read_text()
    assert "row 3: reason is blank for invoice DEMO-INV-1003" in errors
    status = cli(config, "status", "--json")
    assert "DEMO-INV-9999" in status.output and "never recorded" in status.output


def test_cancel_while_a_connector_runs_is_recorded_and_sent_by_its_next_cycle(tmp_path, simulator, ledger_url):  # noqa: F811
    from connector_core.runtime import Connector
    from connector_core.settings import load_settings

    config = configure(tmp_path, simulator, ledger_url)
    uuids = submitted(tmp_path, config, "DEMO-INV-1002")
    with Connector(load_settings(config)) as running:  # holds the state folder, as the daemon does
        result = cli(config, "cancel", "DEMO-INV-1002", "--reason", "Wrong customer")

        assert result.exit_code == ExitCode.OK, result.output
        assert "a connector is running" in result.output
        assert cancel_calls(simulator) == 0
        assert status_at_myinvois(simulator, uuids["DEMO-INV-1002"]) == "Valid"

        running.fetch_and_submit_cycle()

    assert status_at_myinvois(simulator, uuids["DEMO-INV-1002"]) == "Cancelled"
    assert [r["status"] for r in outbox(tmp_path) if r["invoice_number"] == "DEMO-INV-1002"] == ["valid", "cancelled"]


def test_cancel_refuses_an_in_process_simulator_and_a_bad_reason(tmp_path):
    text = (REPO / "config" / "demo.toml").read_text().replace('"../var/demo', '"var')
    text = text.replace('seed_dir = "demo/invoices"', f'seed_dir = "{REPO / "config" / "demo" / "invoices"}"')
    config = tmp_path / "demo.toml"
    config.write_text(text)

    result = cli(config, "cancel", "DEMO-INV-1001", "--reason", "Wrong price")
    assert result.exit_code == ExitCode.CONFIG
    assert "starts an empty simulator" in result.output and "api_base_url" in result.output

    too_long = cli(config, "cancel", "DEMO-INV-1001", "--reason", "x" * 301)
    assert too_long.exit_code == ExitCode.CONFIG and "1 to 300 characters (it has 301)" in too_long.output
