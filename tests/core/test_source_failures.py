"""A source that cannot be read is loud, never "0 invoice(s) fetched" and exit 0.

A wrong Odoo API key (against the Odoo stand-in over real XML-RPC) and a missing PostgreSQL
database (the real server) each give: exit code 4 from ``run --once``, one ERROR line naming
the source, the plugin and the cause without the secret, a ``plugin_error`` incident, the
counter ``myinvois_source_errors_total{source}``, and a degraded ``/healthz`` after
``observability.health_source_failures`` failed cycles in a row (200: restarting the connector
would not fix a wrong key), ok again once it works.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
from pathlib import Path

import httpx
import pytest
from sqlalchemy.engine import make_url

from connector_core.exitcodes import ExitCode
from connector_core.observability.health import HealthMonitor
from connector_core.observability.wiring import Monitoring
from connector_core.runtime import Connector, RunSummary
from connector_core.settings import load_settings
from tests.odoo_standin import OdooStandin

CLI = [sys.executable, "-m", "connector_core.cli"]
LOGIN = "connector@demo.example"
API_KEY = "odoo-right-key-5c1e0b7a"
WRONG_KEY = "odoo-wrong-key-77d3e9f1"
DB_PASSWORD = "Pg-Passw0rd-e81f2c"

PROFILE = """
environment = "simulator"
state_dir = "{state_dir}"

[observability]
metrics_port = {port}
health_source_failures = 2

[profiles.demo]
tin = "C25845632020"
client_id = "demo-taxpayer"
client_secret = "demo-taxpayer-secret"
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def write_config(tmp_path: Path, source: str, *, port: int = 0) -> Path:
    path = tmp_path / "connector.toml"
    path.write_text(PROFILE.format(state_dir=tmp_path / "state", port=port) + source, encoding="utf-8")
    return path


def odoo_source(url: str, api_key: str) -> str:
    return f"""
[sources.books]
kind = "odoo"
profile = "demo"

[sources.books.options]
url = "{url}"
database = "demo"
login = "{LOGIN}"
api_key = "{api_key}"
"""


def sql_source(url: str) -> str:
    return f"""
[sources.erp]
kind = "sql"
profile = "demo"

[sources.erp.options]
url = "{url}"
"""


def run_cli(config: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [*CLI, "--config", str(config), *args],
        cwd=config.parent,
        env={**os.environ},
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )


@pytest.fixture()
def odoo():
    with OdooStandin(version="17.0") as standin:
        standin.add_user(LOGIN, API_KEY)
        yield standin


@pytest.fixture()
def missing_postgres_database(postgres_url) -> str:
    """A URL on the real PostgreSQL server (trust auth: any password) of a database that does not exist."""
    return make_url(postgres_url).set(database="myinvois_no_such_database", password=DB_PASSWORD).render_as_string(hide_password=False)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if " ERROR " in line]


# --- run --once -------------------------------------------------------------------------------


def test_wrong_odoo_key_makes_run_once_exit_source_unavailable_with_an_error_line(tmp_path, odoo):
    config = write_config(tmp_path, odoo_source(odoo.url, WRONG_KEY))
    result = run_cli(config, "run", "--once")
    assert result.returncode == ExitCode.SOURCE_UNAVAILABLE, result.stdout + result.stderr
    (line,) = [line for line in error_lines(result.stderr) if "fetch_pending_invoices" in line]
    assert "source 'books'" in line and "plugin 'odoo'" in line
    assert f"refused login '{LOGIN}' on database 'demo'" in line
    assert "Source failed: plugin 'odoo' failed in fetch_pending_invoices for source 'books'" in result.stdout
    assert WRONG_KEY not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr

    status = run_cli(config, "status", "--json")
    assert status.returncode == 0, status.stderr
    incidents = json.loads(status.stdout)["incidents"]
    assert [(i["kind"], i["subject"]) for i in incidents] == [("plugin_error", "books")]
    assert WRONG_KEY not in status.stdout


def test_missing_postgres_database_makes_run_once_exit_source_unavailable_without_the_password(
    tmp_path, missing_postgres_database
):
    config = write_config(tmp_path, sql_source(missing_postgres_database))
    result = run_cli(config, "run", "--once", "--json")
    assert result.returncode == ExitCode.SOURCE_UNAVAILABLE, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["exit_code"] == ExitCode.SOURCE_UNAVAILABLE and summary["fetched"] == 0
    (problem,) = summary["source_problems"]
    (line,) = error_lines(result.stderr)
    for text in (problem, line):
        assert "source 'erp'" in text and "plugin 'sql'" in text
        # Host and database named, the password masked.
        assert "127.0.0.1:5432/myinvois_no_such_database" in text
        assert 'database "myinvois_no_such_database" does not exist' in text
    assert DB_PASSWORD not in result.stdout + result.stderr
    assert "Traceback" not in result.stderr


def test_a_source_that_works_exits_ok_when_nothing_needs_attention(tmp_path, odoo):
    """The same configuration with the right key: nothing pending, nothing wrong, exit 0."""
    config = write_config(tmp_path, odoo_source(odoo.url, API_KEY))
    result = run_cli(config, "run", "--once")
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    assert "Source failed" not in result.stdout and not error_lines(result.stderr)


# --- metric, incident and /healthz ------------------------------------------------------------


def test_failing_source_counts_errors_and_degrades_healthz_until_it_works_again(tmp_path, odoo):
    config = write_config(tmp_path, odoo_source(odoo.url, WRONG_KEY), port=free_port())
    settings = load_settings(config)
    monitoring = Monitoring(settings)
    assert monitoring.server is not None
    connector = Connector(settings, monitoring=monitoring)
    try:
        base = monitoring.server.url

        connector.fetch_and_submit_cycle()
        # One failed cycle is not an outage (health_source_failures = 2).
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok"
        assert 'myinvois_source_errors_total{source="books"} 1.0' in httpx.get(f"{base}/metrics").text

        connector.fetch_and_submit_cycle()
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 200 and health.json()["status"] == "degraded" and health.json()["reasons"] == []
        (reason,) = health.json()["details"]["degraded"]
        assert reason.startswith("source 'books' failed in 2 fetch cycles in a row")
        assert "refused login" in reason and WRONG_KEY not in health.text
        assert health.json()["details"]["sources"]["books"] == {"consecutive_failed_cycles": 2, "failing": True}
        assert 'myinvois_source_errors_total{source="books"} 2.0' in httpx.get(f"{base}/metrics").text
        incidents = connector.ledger.journal.recent_incidents()
        assert [(i["kind"], i["subject"]) for i in incidents] == [("plugin_error", "books")] * 2

        # The key is corrected in Odoo: the next cycle works and /healthz is healthy again.
        odoo.users[LOGIN].api_key = WRONG_KEY
        connector.fetch_and_submit_cycle()
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 200 and health.json()["status"] == "ok", health.text
        assert 'myinvois_source_errors_total{source="books"} 2.0' in httpx.get(f"{base}/metrics").text
    finally:
        connector.close()
        monitoring.close()


def test_a_missing_postgres_database_counts_errors_and_degrades_healthz_without_the_password(
    tmp_path, missing_postgres_database
):
    """The other broken source of the issue, through the same probe: a SQL source whose
    database does not exist degrades /healthz after health_source_failures cycles, named with
    its host and database, and the metric counts every failed cycle."""
    config = write_config(tmp_path, sql_source(missing_postgres_database), port=free_port())
    settings = load_settings(config)
    monitoring = Monitoring(settings)
    assert monitoring.server is not None
    connector = Connector(settings, monitoring=monitoring)
    try:
        base = monitoring.server.url
        connector.fetch_and_submit_cycle()
        assert httpx.get(f"{base}/healthz").json()["status"] == "ok"  # one failed cycle (of 2)
        connector.fetch_and_submit_cycle()
        health = httpx.get(f"{base}/healthz")
        assert health.status_code == 200 and health.json()["status"] == "degraded", health.text
        (reason,) = health.json()["details"]["degraded"]
        assert reason.startswith("source 'erp' failed in 2 fetch cycles in a row")
        assert "127.0.0.1:5432/myinvois_no_such_database" in reason and DB_PASSWORD not in health.text
        metrics = httpx.get(f"{base}/metrics").text
        assert 'myinvois_source_errors_total{source="erp"} 2.0' in metrics and DB_PASSWORD not in metrics
    finally:
        connector.close()
        monitoring.close()


def test_health_counts_failed_source_cycles_per_source():
    health = HealthMonitor(max_consecutive_source_failures=3)
    for _ in range(2):
        health.source_cycle("a", False, error="boom")
        health.source_cycle("b", True)
    assert health.status()[2]["degraded"] == []
    health.source_cycle("a", False, error="still down")
    ok, reasons, details = health.status()
    # Degraded, not unhealthy: the probe still passes, the details name the source.
    assert ok and reasons == []
    assert details["degraded"] == [
        (
            "source 'a' failed in 3 fetch cycles in a row (last error: still down); "
            "run 'myinvois-connector doctor' to check its connection and rights"
        )
    ]
    assert details["sources"]["a"] == {"consecutive_failed_cycles": 3, "failing": True}
    assert details["sources"]["b"] == {"consecutive_failed_cycles": 0, "failing": False}
    health.source_cycle("a", True)
    assert health.status()[2]["degraded"] == []
    with pytest.raises(ValueError):
        HealthMonitor(max_consecutive_source_failures=0)


# --- the exit code of a run -------------------------------------------------------------------


def summary(**fields) -> RunSummary:
    base = {"counts": {}, "fetched": 0, "submissions": 0, "reported": 0, "duration_s": 0.0, "finished": True, "latest_errors": []}
    return RunSummary(**{**base, **fields})


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({}, ExitCode.OK),
        ({"needs_attention": 2}, ExitCode.NEEDS_ATTENTION),
        ({"needs_attention": 2, "source_problems": ["erp down"]}, ExitCode.SOURCE_UNAVAILABLE),
        ({"source_problems": ["erp down"], "myinvois_problem": "refused"}, ExitCode.MYINVOIS_UNAVAILABLE),
        # Unfinished because MyInvois refused the login: that is the reason, not "gave up".
        ({"finished": False, "myinvois_problem": "refused"}, ExitCode.MYINVOIS_UNAVAILABLE),
        ({"finished": False}, ExitCode.GAVE_UP),
        ({"finished": False, "gave_up": True, "myinvois_problem": "down"}, ExitCode.GAVE_UP),
    ],
)
def test_run_summary_exits_with_the_most_severe_code(fields, expected):
    assert summary(**fields).exit_code() is expected


def test_refused_write_back_makes_run_once_exit_source_unavailable(tmp_path):
    """The CSV outbox is a folder, so no outcome can be written back: the invoices are final at
    MyInvois but the ERP never hears of it. That is a source failure (4), not a finished run."""
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    sales = Path(__file__).resolve().parents[2] / "connector_core" / "demo" / "invoices" / "2026-11-24-sales.csv"
    (inbox / "sales.csv").write_text(sales.read_text(encoding="utf-8"), encoding="utf-8")
    outbox = tmp_path / "outbox-is-a-folder"
    outbox.mkdir()
    company = (
        'name = "Syarikat Demo Sdn. Bhd.", tin = "C25845632020", id_type = "BRN", id_value = "202001234567", '
        'msic_code = "46510", business_activity = "Wholesale", phone = "+60312345678", '
        'address = { lines = ["Lot 66"], city = "Kuala Lumpur", postal_zone = "50480", state = "14" }'
    )
    config = write_config(
        tmp_path,
        f"""
[sources.files]
kind = "csv"
profile = "demo"

[sources.files.options]
inbox = "{inbox}"
archive = "{tmp_path / 'archive'}"
outbox = "{outbox}"
settle_seconds = 0
company = {{ {company} }}
""",
    )
    text = config.read_text(encoding="utf-8").replace("[observability]", "[cycles]\nonce_timeout_seconds = 8\n\n[observability]")
    config.write_text(text, encoding="utf-8")
    result = run_cli(config, "run", "--once", "--json")
    assert result.returncode == ExitCode.SOURCE_UNAVAILABLE, result.stdout + result.stderr
    summary = json.loads(result.stdout)
    assert summary["fetched"] > 0 and summary["reported"] == 0
    assert any("failed in on_submission_result for source 'files'" in p for p in summary["source_problems"]), summary
    refused = [line for line in error_lines(result.stderr) if "refused the outcome" in line]
    assert refused and all("source files (plugin " in line for line in refused), result.stderr[-2000:]


def test_status_exits_config_in_one_line_when_the_ledger_cannot_be_opened(tmp_path):
    config = write_config(tmp_path, odoo_source("http://127.0.0.1:9", API_KEY))
    config.write_text(
        config.read_text(encoding="utf-8") + '\n[ledger]\nurl = "postgresql+psycopg://nobody:Ledger-Pw-2291@127.0.0.1:1/nodb"\n',
        encoding="utf-8",
    )
    result = run_cli(config, "status")
    assert result.returncode == ExitCode.CONFIG, result.stdout + result.stderr
    assert result.stderr.startswith("error: cannot open the ledger postgresql+psycopg://nobody:***@127.0.0.1:1/nodb: ")
    assert "ledger.url" in result.stderr and "Traceback" not in result.stderr
    assert "Ledger-Pw-2291" not in result.stdout + result.stderr
