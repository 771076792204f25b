"""Secrets never leak: a full demo cycle with planted secrets, searched for everywhere.

The run has one good profile (its secret given as ``$env:``), one profile whose planted secret
MyInvois refuses (so there is an exception, an incident and a Sentry event to search), DEBUG
logs, and a real Sentry SDK reporting to a local collector. Afterwards the planted client
secrets, the access token MyInvois issued and the Sentry DSN key must appear in no log line,
CLI output, exception text, ledger row or Sentry event; the planted buyer phone number and
e-mail in no Sentry event.
"""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
from pathlib import Path

import httpx

from connector_core.simulator import SimulatorConfig, TaxpayerAccount, run_in_thread
from tests.core.test_end_to_end import CLI, DEMO_INVOICES
from tests.observability.sentry_collector import SentryCollector

GOOD_SECRET = "planted-good-secret-Qx7Vr2"
WRONG_SECRET = "planted-wrong-secret-Zk4Pw9"
BUYER_PHONE = "+60177770001"
BUYER_EMAIL = "planted.buyer@secret-example.my"


def ledger_dump(path: Path) -> str:
    with sqlite3.connect(path) as conn:
        return "\n".join(conn.iterdump())


def test_planted_secrets_appear_nowhere(tmp_path):
    seed = tmp_path / "seed"
    seed.mkdir()
    sales = (DEMO_INVOICES / "2026-11-24-sales.csv").read_text()
    (seed / "sales.csv").write_text(sales.replace("+60387654321", BUYER_PHONE).replace("akaun@maju.example.my", BUYER_EMAIL))
    other = tmp_path / "other-seed"
    other.mkdir()
    (other / "one.csv").write_text("\n".join(sales.splitlines()[:2]).replace("DEMO-INV-1001", "OTHER-1") + "\n")

    simulator_config = SimulatorConfig(
        validation={"delay_seconds": 0.3, "per_document_seconds": 0.01},
        taxpayers=[
            TaxpayerAccount(client_id="demo-taxpayer", client_secret=GOOD_SECRET, tin="C25845632020", brn="202001234567", name="Syarikat Demo Sdn. Bhd."),
            TaxpayerAccount(client_id="other-taxpayer", client_secret="the-real-other-secret", tin="C25845632020", brn="202001234567", name="Syarikat Demo Sdn. Bhd."),
        ],
    )
    demo = (Path(__file__).resolve().parents[2] / "config/demo.toml").read_text()
    company = demo[demo.index("[sources.demo.options.company]") :].replace("[sources.demo.options.company]", "[sources.other.options.company]")
    with run_in_thread(simulator_config) as sim, SentryCollector() as collector:
        config = tmp_path / "connector.toml"
        config.write_text(
            demo.replace('environment = "simulator"', f'environment = "simulator"\napi_base_url = "{sim.base_url}"')
            .replace('client_secret = "demo-taxpayer-secret"', 'client_secret = "$env:PLANTED_CLIENT_SECRET"')
            .replace('seed_dir = "demo/invoices"', f'seed_dir = "{seed}"')
            # Paths are relative to the configuration file, here in tmp_path: keep the state there.
            .replace('"../var/demo', '"var/demo')
            + f"""
[profiles.other]
tin = "C25845632020"
client_id = "other-taxpayer"
client_secret = "{WRONG_SECRET}"

[sources.other]
kind = "csv"
profile = "other"

[sources.other.options]
seed_dir = "{other}"
inbox = "var/other/inbox"
archive = "var/other/archive"
outbox = "var/other/outbox.csv"

{company}
[observability]
sentry_dsn = "{collector.dsn}"
sentry_environment = "hygiene-test"
metrics_port = 0
log_format = "json"
log_level = "DEBUG"
"""
        )
        env = {**os.environ, "PLANTED_CLIENT_SECRET": GOOD_SECRET}
        run = subprocess.run([*CLI, "--config", str(config), "run", "--once"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=120)
        status = subprocess.run([*CLI, "--config", str(config), "status", "--json"], cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
        events = collector.wait_for_events(1, timeout=10)
        sentry_bytes = collector.all_bytes().decode("utf-8", "replace")
        stats = httpx.get(f"{sim.base_url}/_simulator/stats").json()

    # The run did what it should: the good profile finished, the other was refused and named.
    assert run.returncode == 5, run.stderr  # ExitCode.MYINVOIS_UNAVAILABLE: the refused profile
    assert "MyInvois refused the login of profile 'other'" in run.stdout
    assert json.loads(status.stdout)["documents"]["valid"] == 9  # the sales file: 11 invoices, 2 invalid
    assert stats["logins"]["demo-taxpayer"] == 1
    assert events, "the refused login was reported to Sentry"
    assert any(e.get("tags", {}).get("profile") == "other" for e in events)

    token = json.loads((tmp_path / "var/demo/token-cache.json").read_text())
    tokens = [entry["access_token"] for entry in token["tokens"].values()]
    assert tokens and all(len(t) > 10 for t in tokens)
    dsn_key = collector.dsn.split("//")[1].split("@")[0]

    places = {
        "CLI output and logs of run": run.stdout + run.stderr,
        "status output": status.stdout + status.stderr,
        "ledger": ledger_dump(tmp_path / "var/demo/ledger.sqlite"),
        "Sentry events": sentry_bytes,
    }
    for place, text in places.items():
        for secret in (GOOD_SECRET, WRONG_SECRET, *tokens):
            assert secret not in text, f"a secret leaked into {place}"
    assert dsn_key not in run.stdout + run.stderr
    for personal in (BUYER_PHONE, BUYER_EMAIL, "Kedai Runcit Maju"):
        assert personal not in sentry_bytes, f"buyer data {personal!r} leaked into Sentry"
    # DEBUG logs were really on, so the absence above means something.
    assert '"level": "DEBUG"' in run.stderr
