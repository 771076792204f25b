"""The daemon as an operator runs it: metrics and health while it works, SIGTERM during a
submit, and ``doctor`` on good and broken configurations."""

from __future__ import annotations

import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import httpx
import pytest

from connector_core.simulator import SimulatorConfig, run_in_thread
from tests.core.test_end_to_end import CLI, demo_config, run_cli


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def wait_until(predicate, timeout: float, what: str):
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.05)
    raise AssertionError(f"timed out waiting for {what}")


def submission_states(folder: Path) -> list[str]:
    path = folder / "var/demo/ledger.sqlite"
    if not path.exists():
        return []
    try:
        with sqlite3.connect(path, timeout=1) as conn:
            return [row[0] for row in conn.execute("SELECT state FROM submissions")]
    except sqlite3.OperationalError:
        return []  # the schema is still being created


def daemon_config(folder: Path, base_url: str, metrics_port: int, *, fetch_interval: float = 1, poll_interval: float = 0.5) -> Path:
    """The demo configuration as a daemon: short cycles, metrics on a free port, JSON logs."""
    config = demo_config(folder, api_base_url=base_url)
    cycles = f"[cycles]\nfetch_interval_seconds = {fetch_interval}\npoll_interval_seconds = {poll_interval}\n"
    text = config.read_text().replace("[cycles]\n", cycles, 1)
    config.write_text(text + f'\n[observability]\nmetrics_port = {metrics_port}\nlog_format = "json"\n')
    return config


@pytest.fixture()
def slow_submit_simulator():
    config = SimulatorConfig(
        validation={"delay_seconds": 0.5, "per_document_seconds": 0.01},
        faults={"latency_by_endpoint": {"submit": {"fixed_ms": 2500}}},
    )
    with run_in_thread(config) as sim:
        yield sim


def test_sigterm_during_a_submit_finishes_the_call_records_it_and_exits_cleanly(tmp_path, slow_submit_simulator):
    port = free_port()
    # /healthz calls a cycle late after three intervals without a success, and the first fetch
    # cycle succeeds only after the 2.5 s submit: with a 1 s interval, a busy machine's slow
    # start-up made the daemon unhealthy by the time the submit began. One fetch cycle is
    # all this test needs, and it runs at start whatever the interval.
    config = daemon_config(tmp_path, slow_submit_simulator.base_url, port, fetch_interval=60, poll_interval=10)
    proc = subprocess.Popen([*CLI, "--config", str(config), "run"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        # The submission row is written (state 'sending') before the call; the call takes 2.5 s.
        wait_until(lambda: "sending" in submission_states(tmp_path), 30, "the daemon to start a submit")
        health = httpx.get(f"http://127.0.0.1:{port}/healthz")
        assert health.status_code == 200, health.text
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert proc.returncode == 0, err
    # The answer of the call in flight was recorded: nothing left 'sending' or in doubt.
    assert submission_states(tmp_path) == ["accepted"]
    stats = httpx.get(f"{slow_submit_simulator.base_url}/_simulator/stats").json()
    assert sum(stats["requests"]["submit"].values()) == 1
    assert "finishing the call in flight" in err and '"message": "stopped"' in err


def test_metrics_show_documents_moving_through_their_states(tmp_path):
    port = free_port()
    with run_in_thread(SimulatorConfig(validation={"delay_seconds": 1.0, "per_document_seconds": 0.05})) as sim:
        config = daemon_config(tmp_path, sim.base_url, port)
        proc = subprocess.Popen([*CLI, "--config", str(config), "run"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        seen: set[str] = set()
        try:

            def valid_eleven() -> bool:
                try:
                    text = httpx.get(f"http://127.0.0.1:{port}/metrics", timeout=2).text
                except httpx.HTTPError:
                    return False
                for state in ("submitted", "valid"):
                    if any(line.startswith(f'myinvois_documents{{state="{state}"}}') and not line.endswith(" 0.0") for line in text.splitlines()):
                        seen.add(state)
                return 'myinvois_documents{state="valid"} 11.0' in text

            wait_until(valid_eleven, 60, "eleven valid documents in /metrics")
            text = httpx.get(f"http://127.0.0.1:{port}/metrics").text
            assert 'myinvois_documents{state="locally_invalid"} 2.0' in text
            assert 'myinvois_logins_total{outcome="success",profile="demo"} 1.0' in text
            assert 'myinvois_api_calls_total{endpoint="submit",status="202"} 1.0' in text
            assert "myinvois_document_fetch_to_final_seconds_count" in text
            health = httpx.get(f"http://127.0.0.1:{port}/healthz")
            assert health.status_code == 200 and health.json()["status"] == "ok"
        finally:
            proc.send_signal(signal.SIGTERM)
            proc.communicate(timeout=30)
    assert "submitted" in seen, "the documents were seen on their way, not only at the end"


def test_doctor_on_the_demo_is_ready(tmp_path):
    result = run_cli("--config", str(demo_config(tmp_path)), "doctor", cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "[ok  ] credentials: profile demo: MyInvois accepted client id demo-taxpayer" in result.stdout
    assert result.stdout.strip().endswith("Ready to run.")


def test_doctor_names_each_problem_of_a_broken_configuration(tmp_path):
    config = tmp_path / "broken.toml"
    config.write_text(
        """
environment = "sandbox"
[ledger]
url = "postgresql+psycopg://nobody:topsecretpw@127.0.0.1:1/nodb"
[profiles.acme]
tin = "C25845632020"
client_id = "acme"
client_secret = "$env:MYINVOIS_TEST_NOT_SET"
[sources.books]
kind = "csvv"
profile = "acme"
[sources.shop]
kind = "csv"
profile = "ghost"
"""
    )
    env = {k: v for k, v in os.environ.items() if k != "MYINVOIS_TEST_NOT_SET"}
    result = subprocess.run([*CLI, "--config", str(config), "doctor"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert result.returncode == 2  # ExitCode.CONFIG
    lines = [line for line in result.stdout.splitlines() if line.startswith("[FAIL]")]
    assert any("profiles.acme.client_secret: environment variable MYINVOIS_TEST_NOT_SET is not set" in line for line in lines)
    assert any("sources.books.kind: no installed plugin provides kind 'csvv'" in line for line in lines)
    assert any("sources.shop.profile: no profile named 'ghost'" in line for line in lines)
    assert any(line.startswith("[FAIL] ledger: cannot open postgresql+psycopg://nobody:***@") for line in lines)
    assert "topsecretpw" not in result.stdout + result.stderr
    assert result.stdout.strip().endswith("4 problem(s) to fix.")


def test_doctor_reports_refused_credentials(tmp_path):
    with run_in_thread(SimulatorConfig()) as sim:
        config = demo_config(tmp_path, api_base_url=sim.base_url)
        config.write_text(config.read_text().replace("demo-taxpayer-secret", "not-the-right-one"))
        result = run_cli("--config", str(config), "doctor", cwd=tmp_path)
    assert result.returncode == 5  # ExitCode.MYINVOIS_UNAVAILABLE
    assert "[FAIL] credentials: profile demo: login refused" in result.stdout
    assert "not-the-right-one" not in result.stdout + result.stderr


def test_plugins_command_lists_builtin_plugins_and_their_hooks(tmp_path):
    result = subprocess.run([*CLI, "plugins", "--json"], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    import json

    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert {"csv", "sql", "odoo"} <= set(plugins)
    assert plugins["csv"]["kinds"] == ["csv"]
    assert set(plugins["csv"]["hooks"]) == {
        "register_source_kinds", "fetch_pending_invoices", "on_invoices_recorded", "fetch_cancel_requests",
        "on_submission_result", "check_source",
    }  # fmt: skip
    assert plugins["csv"]["distribution"] == "myinvois-connector"



def test_one_connector_per_state_directory(tmp_path):
    from connector_core.runtime import Connector, StateDirInUse
    from connector_core.settings import load_settings

    settings = load_settings(demo_config(tmp_path))
    settings = settings.model_copy(update={"state_dir": tmp_path / "state"})
    first = Connector(settings)
    try:
        with pytest.raises(StateDirInUse, match="another myinvois-connector is already running"):
            Connector(settings)
    finally:
        first.close()
    Connector(settings).close()  # free again once the first one stopped


def test_an_installation_keeps_its_name_across_restarts_and_signs_its_submissions(tmp_path, monkeypatch):
    """The name lets connectors sharing a ledger tell their own interrupted sends from another's."""
    monkeypatch.chdir(tmp_path)  # the demo's CSV folders are relative to the working directory
    from sqlalchemy import select

    from connector_core.ledger.schema import submissions
    from connector_core.runtime import Connector
    from connector_core.settings import load_settings

    settings = load_settings(demo_config(tmp_path))
    settings = settings.model_copy(update={"state_dir": tmp_path / "state"})
    with Connector(settings) as connector:
        connector.run_once()
        with connector.ledger.engine.connect() as conn:
            senders = {row.sender for row in conn.execute(select(submissions.c.sender))}
    name = (tmp_path / "state" / "instance-id").read_text().strip()
    assert len(name) == 32 and senders == {name}
    with Connector(settings) as again:
        assert again.ledger.sender == name
    other = settings.model_copy(update={"state_dir": tmp_path / "other-state"})
    with Connector(other) as second_installation:
        assert second_installation.ledger.sender not in {name, None}
