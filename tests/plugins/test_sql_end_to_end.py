"""End to end through the command line: the shipped demo configurations, run with
``myinvois-connector --config X run --once`` against the in-process simulator, on SQLite,
PostgreSQL and MariaDB staging tables and on the Odoo stand-in.

Each run starts from the shipped TOML file with only the database address and the state
directory changed, so the configurations and docs/plugin-sql.md / docs/plugin-odoo.md are
tested as a new user would use them.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
from sqlalchemy import create_engine, text

from connector_core.exitcodes import ExitCode
from tests.odoo_standin import OdooStandin, seed_demo_company, seed_demo_invoices

pytestmark = pytest.mark.slow

REPO = Path(__file__).resolve().parents[2]
CLI = Path(sys.executable).with_name("myinvois-connector")
DEMO_KEYS = ["1001", "1002", "1003", "1004"]


def shipped_config(name: str, tmp_path: Path, **replacements: str) -> Path:
    """config/<name> with state_dir moved into tmp_path and the given option lines replaced."""
    config = (REPO / "config" / name).read_text("utf-8")
    config = re.sub(r'(?m)^state_dir = ".*"', f'state_dir = "{tmp_path / "state"}"', config)
    # Relative paths are relative to the configuration file, which moves into tmp_path.
    config = config.replace('"sql/', f'"{REPO / "config" / "sql"}/')
    for key, value in replacements.items():
        config, count = re.subn(rf'(?m)^{key} = ".*?"', f'{key} = "{value}"', config)
        assert count == 1, f"{name} has no line '{key} = ...'"
    path = tmp_path / name
    path.write_text(config, "utf-8")
    return path


#: Poll sooner than the demo does: the simulator's one-second validation is then the only wait.
FAST_POLLING = {
    "MYINVOIS_CYCLES__FIRST_POLL_DELAY_SECONDS": "0.5",
    "MYINVOIS_CYCLES__POLL_MIN_INTERVAL_SECONDS": "0.3",
    "MYINVOIS_CYCLES__POLL_MAX_INTERVAL_SECONDS": "0.5",
}


def run_once(config: Path, env: dict[str, str] | None = None) -> dict:
    result = subprocess.run(
        [str(CLI), "--config", str(config), "run", "--once", "--json"],
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
        env={**os.environ, **FAST_POLLING, **(env or {})},
    )
    summary = json.loads(result.stdout) if result.stdout.startswith("{") else {}
    # Done: 0, or 3 when some invoice's latest version needs the ERP's attention.
    attention = {"invalid", "rejected", "locally_invalid", "changed_after_valid"} & {s for s, n in summary.get("counts", {}).items() if n}
    expected = ExitCode.NEEDS_ATTENTION if attention else ExitCode.OK
    assert result.returncode == expected, f"exit {result.returncode}\nstdout:\n{result.stdout}\nstderr:\n{result.stderr[-3000:]}"
    return summary


def staging_status(url: str) -> dict[str, tuple]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = conn.execute(
            text("SELECT id, myinvois_status, myinvois_uuid, myinvois_validation_link, myinvois_errors, myinvois_version FROM einvoice_header ORDER BY id")
        ).all()
    engine.dispose()
    return {str(row[0]): tuple(row[1:]) for row in rows}


def drop_staging_tables(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS einvoice_line"))
        conn.execute(text("DROP TABLE IF EXISTS einvoice_header"))
    engine.dispose()


def assert_demo_outcome(summary: dict, status: dict[str, tuple]) -> None:
    assert summary["finished"] and summary["counts"] == {"valid": 3, "locally_invalid": 1}, summary
    assert sorted(status) == DEMO_KEYS
    for key in ("1001", "1002", "1004"):
        state, uuid, link, errors, version = status[key]
        assert (state, version, errors) == ("valid", 1, None)
        assert uuid and link.endswith(f"/{uuid}/share/" + link.rsplit("/", 1)[-1])
    state, uuid, _, errors, version = status["1003"]
    assert (state, uuid, version) == ("locally_invalid", None, 1)
    assert "column buyer_tin is empty" in errors


def test_sqlite_demo_then_a_corrected_row_is_sent_again(tmp_path):
    url = f"sqlite:///{tmp_path / 'erp.sqlite'}"
    config = shipped_config("sql-sqlite.toml", tmp_path, url=url)
    assert_demo_outcome(run_once(config), staging_status(url))

    # The clerk fills in the missing TIN and asks for a re-send; only that invoice moves.
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("UPDATE einvoice_header SET buyer_tin = 'C58101234560', myinvois_status = 'pending' WHERE id = 1003"))
    engine.dispose()
    summary = run_once(config)
    assert summary["fetched"] == 1 and summary["counts"].get("valid") == 4, summary
    status = staging_status(url)
    assert status["1003"][0] == "valid" and status["1003"][3] is None and status["1003"][4] == 2
    assert [status[k][4] for k in ("1001", "1002", "1004")] == [1, 1, 1]


@pytest.mark.services
def test_postgres_new_user_follows_the_sql_walkthrough(postgres_url, tmp_path):
    # docs/plugin-sql.md: create a database, point config/sql-postgres.toml at it, run once.
    drop_staging_tables(postgres_url)
    config = shipped_config("sql-postgres.toml", tmp_path, url=postgres_url)
    assert_demo_outcome(run_once(config), staging_status(postgres_url))
    # Running again finds nothing new and changes nothing.
    before = staging_status(postgres_url)
    assert run_once(config)["fetched"] == 0
    assert staging_status(postgres_url) == before


@pytest.mark.services
def test_mariadb_demo(mariadb_url, tmp_path):
    drop_staging_tables(mariadb_url)
    config = shipped_config("sql-mariadb.toml", tmp_path, url=mariadb_url)
    assert_demo_outcome(run_once(config), staging_status(mariadb_url))


# JSON-RPC here: the shipped file says xmlrpc, so this also proves the protocol switch; the
# contract suite covers both protocols.
@pytest.mark.parametrize("protocol", ["jsonrpc"])
def test_odoo_demo_against_the_standin(tmp_path, protocol):
    with OdooStandin(version="17.0") as odoo:
        odoo.add_user("connector@demo.example", "demo-odoo-key")
        moves = seed_demo_invoices(odoo, seed_demo_company(odoo))
        config = shipped_config("odoo.toml", tmp_path, url=odoo.url, protocol=protocol)
        summary = run_once(config, env={"ODOO_API_KEY": "demo-odoo-key"})
        assert summary["finished"] and summary["counts"] == {"valid": 3, "locally_invalid": 1}, summary
        states = [odoo.get("account.move", m)["x_myinvois_status"] for m in moves]
        assert states == ["valid", "valid", "locally_invalid", "valid"]
        valid = odoo.get("account.move", moves[0])
        assert valid["x_myinvois_uuid"] and valid["x_myinvois_validation_link"].endswith(valid["x_myinvois_long_id"])
        notes = [m["body"] for m in odoo.messages_on("account.move", moves[2])]
        assert len(notes) == 1 and "did <b>not send</b>" in notes[0] and "x_tin" in notes[0]
        assert {c.protocol for c in odoo.calls} == {protocol}
