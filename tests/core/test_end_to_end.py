"""The whole path, as a user runs it: the command line, CSV files, the ledger and a simulator.

* The demo exactly as README's Quick start runs it (in-process simulator), from a fresh folder.
* The same invoices against a separately started simulator over real HTTP, whose statistics
  show what the connector really did on the wire.
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import httpx
import pytest

from connector_core.exitcodes import ExitCode
from connector_core.simulator import SimulatorConfig, run_in_thread

REPO = Path(__file__).resolve().parents[2]
DEMO_INVOICES = REPO / "config" / "demo" / "invoices"
CLI = [sys.executable, "-m", "connector_core.cli"]

DEMO_NUMBERS = {
    "DEMO-INV-1001", "DEMO-INV-1002", "DEMO-INV-1003", "DEMO-INV-1004", "DEMO-INV-1005", "DEMO-INV-1006",
    "DEMO-INV-1007", "DEMO-INV-1008", "DEMO-CN-2001", "DEMO-DN-3001", "DEMO-RN-4001", "DEMO-SB-5001", "DEMO-SB-5002",
}  # fmt: skip
INVALID = {"DEMO-INV-1007", "DEMO-INV-1008"}


def run_cli(*args: str, cwd: Path, env: dict[str, str] | None = None, timeout: float = 120) -> subprocess.CompletedProcess:
    full_env = {**os.environ, **(env or {})}
    return subprocess.run([*CLI, *args], cwd=cwd, env=full_env, capture_output=True, text=True, timeout=timeout)


def outbox_rows(path: Path) -> list[dict[str, str]]:
    with path.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


def demo_config(folder: Path, *, api_base_url: str | None = None) -> Path:
    """config/demo.toml written into ``folder``, its state under ``folder``/var/demo (paths in
    a configuration file are relative to the file's folder)."""
    text = (REPO / "config" / "demo.toml").read_text()
    text = text.replace('seed_dir = "demo/invoices"', f'seed_dir = "{DEMO_INVOICES}"').replace('"../var/demo', '"var/demo')
    if api_base_url:
        text = text.replace('environment = "simulator"', f'environment = "simulator"\napi_base_url = "{api_base_url}"')
    path = folder / "connector.toml"
    path.write_text(text)
    return path


def test_quick_start_demo_ends_with_every_invoice_final_and_a_rerun_sends_nothing(tmp_path):
    config = demo_config(tmp_path)
    first = run_cli("--config", str(config), "run", "--once", cwd=tmp_path)
    # Two demo invoices are refused on purpose: every invoice is final, two need the ERP's attention.
    assert first.returncode == ExitCode.NEEDS_ATTENTION, first.stderr
    assert "13 invoice(s) fetched" in first.stdout
    assert "valid            11" in first.stdout and "locally invalid  2" in first.stdout
    # The clerk reads what to fix, naming the invoice, the field or row, and the fix.
    assert "buyer.phone: the buyer's telephone number is missing" in first.stdout
    assert "row 14: unit_price '1,250.00' is not a number" in first.stdout

    rows = outbox_rows(tmp_path / "var/demo/outbox/results.csv")
    assert {r["invoice_number"] for r in rows} == DEMO_NUMBERS
    by_number = {r["invoice_number"]: r for r in rows}
    for number in DEMO_NUMBERS - INVALID:
        row = by_number[number]
        assert row["status"] == "valid" and len(row["uuid"]) == 26 and row["long_id"]
        assert row["validation_link"].endswith(f"/{row['uuid']}/share/{row['long_id']}")
    for number in INVALID:
        assert by_number[number]["status"] == "locally_invalid" and by_number[number]["errors"]
    assert sorted(p.name for p in (tmp_path / "var/demo/archive").iterdir()) == sorted(p.name for p in DEMO_INVOICES.iterdir())

    again = run_cli("--config", str(config), "run", "--once", "--json", cwd=tmp_path)
    # Still needs attention: the two are not corrected yet.
    assert again.returncode == ExitCode.NEEDS_ATTENTION, again.stderr
    summary = json.loads(again.stdout)
    assert (summary["fetched"], summary["submissions"], summary["reported"]) == (0, 0, 0)
    assert len(outbox_rows(tmp_path / "var/demo/outbox/results.csv")) == 13

    # The same files dropped in again are recognised: recorded once, nothing sent twice.
    (tmp_path / "var/demo/inbox/.myinvois-seeded").unlink()
    third = run_cli("--config", str(config), "run", "--once", "--json", cwd=tmp_path)
    summary = json.loads(third.stdout)
    assert summary["fetched"] == 13 and summary["submissions"] == 0

    status = run_cli("--config", str(config), "status", "--json", cwd=tmp_path)
    data = json.loads(status.stdout)
    assert data["documents"] == {"valid": 11, "locally_invalid": 2} and data["unfinished"] == 0


@pytest.fixture()
def simulator():
    config = SimulatorConfig(validation={"delay_seconds": 0.3, "per_document_seconds": 0.01})
    with run_in_thread(config) as sim:
        yield sim


def test_against_a_separate_simulator_one_login_status_from_get_submission_only_no_duplicates(tmp_path, simulator):
    config = demo_config(tmp_path, api_base_url=simulator.base_url)
    result = run_cli("--config", str(config), "run", "--once", cwd=tmp_path)
    assert result.returncode == ExitCode.NEEDS_ATTENTION, result.stderr
    # A second run (a restart) reuses the persisted token: still one login.
    shutil.copy(DEMO_INVOICES / "2026-11-24-sales.csv", tmp_path / "var/demo/inbox/again.csv")
    result = run_cli("--config", str(config), "run", "--once", cwd=tmp_path)
    assert result.returncode == ExitCode.NEEDS_ATTENTION, result.stderr

    stats = httpx.get(f"{simulator.base_url}/_simulator/stats").json()
    assert stats["logins"] == {"demo-taxpayer": 1}
    used = {endpoint for endpoint, by_status in stats["requests"].items() if sum(by_status.values())}
    # Status only through Get Submission; no per-document polling, no search, no recent. The
    # document types are read once per process, for the cancellation window the watch follows:
    # the list, then each type the validated documents have.
    assert used == {"login", "submit", "get_submission", "document_types"}, stats["requests"]
    types = {d.type_code for d in simulator.simulator.store.documents.values() if d.valid}
    assert sum(stats["requests"]["document_types"].values()) == 1 + len(types)
    assert stats["duplicate_documents"] == 0
    assert set(stats["accepted_by_invoice"].values()) == {1}
    assert len(stats["accepted_by_invoice"]) == 11
    # Eleven documents in one submission; polls paced by size, so only a handful of calls.
    assert sum(stats["requests"]["submit"].values()) == 1
    assert sum(stats["requests"]["get_submission"].values()) <= 3
    token_cache = tmp_path / "var/demo/token-cache.json"
    assert token_cache.stat().st_mode & 0o777 == 0o600


def test_invalid_at_myinvois_gets_its_errors_from_details_only_for_that_document(tmp_path, simulator):
    inbox_seed = tmp_path / "seed"
    inbox_seed.mkdir()
    sales = (DEMO_INVOICES / "2026-11-24-sales.csv").read_text()
    # An individual TIN that passes the shape check but that MyInvois refuses (too few digits).
    sales = sales.replace("DEMO-INV-1002,01,2026-11-24,,,,,Gemilang Teknologi Bhd.,C20880050010", "DEMO-INV-1002,01,2026-11-24,,,,,Gemilang Teknologi Bhd.,IG1234")
    (inbox_seed / "sales.csv").write_text(sales)
    config = demo_config(tmp_path, api_base_url=simulator.base_url)
    config.write_text(config.read_text().replace(f'seed_dir = "{DEMO_INVOICES}"', f'seed_dir = "{inbox_seed}"'))
    result = run_cli("--config", str(config), "run", "--once", "--json", cwd=tmp_path)
    assert result.returncode == ExitCode.NEEDS_ATTENTION, result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"]["invalid"] == 1
    # The one invalid at MyInvois and the demo's two locally invalid ones.
    assert summary["needs_attention"] == 3 and summary["exit_code"] == ExitCode.NEEDS_ATTENTION
    (err,) = [e for e in summary["errors"] if e["state"] == "invalid"]
    assert err["invoice"] == "DEMO-INV-1002" and any("MyInvois rejected" in m for m in err["errors"])
    stats = httpx.get(f"{simulator.base_url}/_simulator/stats").json()
    assert sum(stats["requests"]["get_document_details"].values()) == 1


def test_configuration_problems_are_listed_without_a_traceback(tmp_path):
    config = tmp_path / "bad.toml"
    config.write_text('[profiles.demo]\ntin = "C25845632020"\nclient_id = "0"\nclient_secret = "x-secret"\n[sources.s]\nkind = "cvs"\nprofile = "demo"\n')
    result = run_cli("--config", str(config), "run", "--once", cwd=tmp_path)
    assert result.returncode == 2
    assert "profiles.demo.client_id: is empty or a placeholder" in result.stderr
    assert "Traceback" not in result.stderr
    config.write_text('[profiles.demo]\ntin = "C25845632020"\nclient_id = "demo"\nclient_secret = "x-secret"\n[sources.s]\nkind = "cvs"\nprofile = "demo"\n')
    result = run_cli("--config", str(config), "run", "--once", cwd=tmp_path)
    assert result.returncode == 2
    assert "sources.s.kind: no installed plugin provides kind 'cvs'" in result.stderr


def test_refused_credentials_stop_run_once_with_the_reason(tmp_path, simulator):
    config = demo_config(tmp_path, api_base_url=simulator.base_url)
    config.write_text(config.read_text().replace('client_secret = "demo-taxpayer-secret"', 'client_secret = "wrong-secret-value"'))
    result = run_cli("--config", str(config), "run", "--once", cwd=tmp_path, timeout=60)
    assert result.returncode == ExitCode.MYINVOIS_UNAVAILABLE
    assert "MyInvois refused the login of profile 'demo'" in result.stdout
    assert "wrong-secret-value" not in result.stdout + result.stderr
    stats = httpx.get(f"{simulator.base_url}/_simulator/stats").json()
    assert sum(stats["requests"]["login"].values()) <= 2


def test_two_profiles_one_an_intermediary_with_the_ledger_on_postgresql(tmp_path, simulator, postgres_url):
    """Two taxpayers in one connector: one through an intermediary's own credentials acting
    on behalf of it, one with its own; each bound to its own source; ledger on PostgreSQL."""
    other_seed = tmp_path / "other-seed"
    other_seed.mkdir()
    sales = (DEMO_INVOICES / "2026-11-24-sales.csv").read_text().splitlines()
    (other_seed / "other.csv").write_text("\n".join([sales[0], *[l.replace("DEMO-", "KEDAI-") for l in sales[1:4]]]) + "\n")
    config = demo_config(tmp_path, api_base_url=simulator.base_url)
    demo = config.read_text()
    company = demo[demo.index("[sources.demo.options.company]") :]
    other_company = (
        company.replace("[sources.demo.options.company]", "[sources.kedai.options.company]")
        .replace('name = "Syarikat Demo Sdn. Bhd."', 'name = "Kedai Contoh Enterprise"')
        .replace('tin = "C25845632020"', 'tin = "C10000000010"')
        .replace('id_value = "202001234567"', 'id_value = "201901000001"')
    )
    config.write_text(
        demo.replace('client_id = "demo-taxpayer"\nclient_secret = "demo-taxpayer-secret"', 'client_id = "demo-intermediary"\nclient_secret = "demo-intermediary-secret"\non_behalf_of = "C25845632020"')
        + f"""
[ledger]
url = "{postgres_url}"

[profiles.kedai]
tin = "C10000000010"
client_id = "demo-taxpayer-2"
client_secret = "demo-taxpayer-2-secret"

[sources.kedai]
kind = "csv"
profile = "kedai"

[sources.kedai.options]
seed_dir = "{other_seed}"
inbox = "var/kedai/inbox"
archive = "var/kedai/archive"
outbox = "var/kedai/outbox.csv"

{other_company}"""
    )
    result = run_cli("--config", str(config), "run", "--once", "--json", cwd=tmp_path)
    assert result.returncode == ExitCode.NEEDS_ATTENTION, result.stderr
    summary = json.loads(result.stdout)
    assert summary["counts"] == {"valid": 11 + 2, "locally_invalid": 2}
    stats = httpx.get(f"{simulator.base_url}/_simulator/stats").json()
    assert stats["logins"] == {"demo-intermediary": 1, "demo-taxpayer-2": 1}
    kedai = outbox_rows(tmp_path / "var/kedai/outbox.csv")
    assert {r["invoice_number"]: r["status"] for r in kedai} == {"KEDAI-INV-1001": "valid", "KEDAI-INV-1002": "valid"}
    issuers = {key.split("|")[0] for key in stats["accepted_by_invoice"]}
    assert issuers == {"C25845632020", "C10000000010"}
    from sqlalchemy import create_engine, text

    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT count(*) FROM documents WHERE profile = 'kedai'")).scalar() == 2
    # Every table of the ledger's schema, so the next test on this session's database starts empty.
    from connector_core.ledger.schema import metadata

    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()
