"""``status`` and the ``run --once`` summary as an operator reads them: invoices by their latest
version, errors to correct without the ones already corrected, and ``status`` that only reads."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import create_engine, inspect

REPO = Path(__file__).resolve().parents[2]
CLI = [sys.executable, "-m", "connector_core.cli"]
DEMO_SALES = REPO / "config" / "demo" / "invoices" / "2026-11-24-sales.csv"


def run_cli(*args: str, cwd: Path, timeout: float = 180) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYINVOIS_")}
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


def _demo_config(folder: Path, ledger_url: str | None = None) -> Path:
    """The demo's configuration with absolute paths, so the test does not depend on how
    relative ones resolve (another test covers that)."""
    text = (REPO / "config" / "demo.toml").read_text()
    lines = []
    for line in text.splitlines():
        key = line.split("=", 1)[0].strip()
        if key in ("state_dir", "seed_dir", "inbox", "archive", "outbox"):
            continue
        lines.append(line)
        if line.strip() == "[sources.demo.options]":
            lines += [
                f'seed_dir = "{DEMO_SALES.parent}"',
                f'inbox = "{folder / "inbox"}"',
                f'archive = "{folder / "archive"}"',
                f'outbox = "{folder / "outbox" / "results.csv"}"',
            ]
    text = f'state_dir = "{folder / "state"}"\n' + "\n".join(lines) + "\n"
    if ledger_url:
        text = text.replace("[simulator]", f'[ledger]\nurl = "{ledger_url}"\n\n[simulator]', 1)
    path = folder / "connector.toml"
    path.write_text(text)
    return path


def _correct_demo_inv_1008(inbox: Path) -> None:
    """What the clerk does after reading the summary: the unit price written without the
    thousands separator, dropped into the inbox as a new file."""
    header, *rows = DEMO_SALES.read_text().splitlines()
    (row,) = [r for r in rows if r.startswith("DEMO-INV-1008,")]
    corrected = row.replace('"1,250.00"', "1250.00")
    path = inbox / "2026-11-25-correction.csv"
    path.write_text(f"{header}\n{corrected}\n")
    # Written a while ago as far as the plugin can tell: it leaves files still being written.
    os.utime(path, (path.stat().st_mtime - 60, path.stat().st_mtime - 60))


def test_a_corrected_invoice_leaves_the_errors_to_correct_and_counts_once(tmp_path):
    config = _demo_config(tmp_path)
    first = run_cli("--config", str(config), "run", "--once", cwd=tmp_path)
    assert "DEMO-INV-1008 (version 1, locally invalid)" in first.stdout, first.stdout + first.stderr

    _correct_demo_inv_1008(tmp_path / "inbox")
    second = run_cli("--config", str(config), "run", "--once", cwd=tmp_path)
    assert "1 invoice(s) fetched" in second.stdout, second.stdout + second.stderr
    errors_part = second.stdout.split("Errors to correct in the ERP:", 1)[1]
    assert "DEMO-INV-1007" in errors_part and "DEMO-INV-1008" not in errors_part
    assert "valid            12" in second.stdout and "locally invalid  1" in second.stdout

    data = json.loads(run_cli("--config", str(config), "status", "--json", cwd=tmp_path).stdout)
    assert data["documents"] == {"valid": 12, "locally_invalid": 1}
    assert data["documents_by_version"] == {"valid": 12, "locally_invalid": 2}
    assert [e["invoice"] for e in data["latest_errors"]] == ["DEMO-INV-1007"]

    text = run_cli("--config", str(config), "status", "--by-version", cwd=tmp_path).stdout
    invoices, versions = text.split("Invoices by state:", 1)[1].split("Versions by state", 1)
    assert "locally invalid  1" in invoices and "locally invalid  2" in versions
    assert "DEMO-INV-1008" not in text.split("Errors to correct in the ERP:", 1)[1]


def test_status_without_a_configuration_or_ledger_creates_nothing(tmp_path):
    result = run_cli("status", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout.startswith("No ledger yet at sqlite:///var/ledger.sqlite")
    assert list(tmp_path.iterdir()) == []
    as_json = json.loads(run_cli("status", "--json", cwd=tmp_path).stdout)
    assert as_json == {"ledger": "sqlite:///var/ledger.sqlite", "exists": False}
    assert list(tmp_path.iterdir()) == []


def test_status_on_an_empty_server_database_creates_no_schema(tmp_path, postgres_url):
    config = _demo_config(tmp_path, ledger_url=postgres_url)
    engine = create_engine(postgres_url)
    try:
        before = set(inspect(engine).get_table_names())
        result = run_cli("--config", str(config), "status", cwd=tmp_path)
        assert result.returncode == 0, result.stderr
        assert result.stdout.startswith("No ledger yet at postgresql"), result.stdout
        assert set(inspect(engine).get_table_names()) == before
        assert not (tmp_path / "state").exists()
    finally:
        engine.dispose()
