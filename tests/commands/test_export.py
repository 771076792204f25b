"""``export``: one row per invoice that became final in a period, in CSV or JSON, for audits;
and the ledger hands the rows over in batches instead of all at once."""

from __future__ import annotations

import csv
import io
import json
from datetime import UTC, datetime, timedelta

from sqlalchemy import event, text

from connector_core.exitcodes import ExitCode
from connector_core.ledger import FetchedItem, Ledger
from connector_core.ledger.lookup import Lookup
from connector_core.ledger.schema import metadata
from tests.commands.conftest import run_cli

TODAY = datetime.now(UTC).date()
PERIOD = ["--since", (TODAY - timedelta(days=1)).isoformat(), "--until", TODAY.isoformat()]


def test_export_csv_has_one_row_per_invoice_with_the_facts_show_gives(demo_run):
    result = demo_run.cli("export", *PERIOD, "--format", "csv")
    assert result.returncode == 0, result.stderr
    rows = list(csv.DictReader(io.StringIO(result.stdout)))
    assert len(rows) == 13 and len({r["invoice_number"] for r in rows}) == 13
    assert "13 invoice(s) final between" in result.stderr
    by_number = {r["invoice_number"]: r for r in rows}
    assert sum(r["state"] == "valid" for r in rows) == 11
    shown = json.loads(demo_run.cli("show", "DEMO-INV-1003", "--json").stdout)["versions"][-1]
    valid = by_number["DEMO-INV-1003"]
    assert (valid["source"], valid["source_key"], valid["version"]) == ("demo", "DEMO-INV-1003", "1")
    for column in ("uuid", "long_id", "validation_link", "final_at"):
        assert valid[column] == shown[column] and valid[column]
    assert valid["submission_uid"] == shown["submission"]["submission_uid"] and valid["errors"] == ""
    refused = by_number["DEMO-INV-1007"]
    assert refused["state"] == "locally_invalid" and refused["uuid"] == ""
    assert "buyer.phone" in refused["errors"] and "+60123456789" in refused["errors"]


def test_export_json_to_a_file_matches_the_csv(demo_run, tmp_path):
    target = tmp_path / "audit" / "export.json"
    result = demo_run.cli("export", *PERIOD, "--format", "json", "--output", str(target))
    assert result.returncode == 0, result.stderr
    assert result.stdout == ""
    rows = json.loads(target.read_text(encoding="utf-8"))
    as_csv = list(csv.DictReader(io.StringIO(demo_run.cli("export", *PERIOD).stdout)))
    assert [r["invoice_number"] for r in rows] == [r["invoice_number"] for r in as_csv]
    refused = next(r for r in rows if r["invoice_number"] == "DEMO-INV-1007")
    assert isinstance(refused["errors"], list) and len(refused["errors"]) == 2
    valid = next(r for r in rows if r["invoice_number"] == "DEMO-INV-1001")
    assert valid["version"] == 1 and valid["state"] == "valid" and valid["uuid"]


def test_a_period_before_the_invoices_exports_nothing(demo_run):
    before = ["--since", "2020-01-01", "--until", "2020-12-31"]
    assert demo_run.cli("export", *before, "--format", "json").stdout == "[]\n"
    assert demo_run.cli("export", *before).stdout.strip() == ",".join(
        ["source", "source_key", "invoice_number", "version", "document_type", "state", "uuid", "long_id",
         "validation_link", "submission_uid", "validated_at", "final_at", "status_reason", "event_at", "errors"]
    )  # fmt: skip


def test_bad_dates_are_named(tmp_path):
    result = run_cli("export", "--since", "30/11/2026", "--until", "2026-12-01", cwd=tmp_path)
    assert result.returncode == ExitCode.CONFIG and "'30/11/2026' is neither a date" in result.stderr
    backwards = run_cli("export", "--since", "2026-12-02", "--until", "2026-12-01", cwd=tmp_path)
    assert backwards.returncode == ExitCode.CONFIG and "is not after --since" in backwards.stderr
    assert list(tmp_path.iterdir()) == []


def test_the_export_reads_through_a_server_side_cursor_on_postgresql(postgres_url):
    """A year of invoices is never one result set in memory: PostgreSQL hands the rows over
    through a named (server-side) cursor, in batches."""
    ledger = Ledger(postgres_url)
    try:
        items = [
            FetchedItem(
                source_key=f"K{i}", number=f"N{i}", fingerprint="f" * 64, invoice_json="{}", problems=["p: fix"]
            )
            for i in range(1200)
        ]
        ledger.intake.record_fetched(source="s", profile="p", items=items)
        cursors = []

        def seen(conn, cursor, statement, parameters, context, executemany):
            if "final_at >=" in statement:
                cursors.append(getattr(cursor, "name", None))

        event.listen(ledger.engine, "before_cursor_execute", seen)
        now = datetime.now(UTC)
        rows = Lookup(ledger.engine, None).final_between(now - timedelta(hours=1), now + timedelta(hours=1))
        first = next(rows)
        assert first["source_key"] == "K0"
        assert len(cursors) == 1 and cursors[0]  # a named cursor: the rest is still on the server
        assert 1 + sum(1 for _ in rows) == 1200
    finally:
        metadata.drop_all(ledger.engine)
        with ledger.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
        ledger.close()


def test_export_without_a_ledger_is_empty_and_creates_nothing(tmp_path):
    result = run_cli("export", "--since", "2026-11-01", "--until", "2026-11-30", "--format", "json", cwd=tmp_path)
    assert result.returncode == 0, result.stderr
    assert result.stdout == "[]\n" and "No ledger yet at sqlite:///var/ledger.sqlite" in result.stderr
    assert list(tmp_path.iterdir()) == []
