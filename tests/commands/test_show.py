"""``show`` and ``history`` on the demo's invoices: what a clerk asks about one invoice, in
text and JSON, from a ledger they only read."""

from __future__ import annotations

import csv
import json
from datetime import UTC, datetime, timedelta

from connector_core.commands.invoices import cancellation_window
from connector_core.commands.show import timeline
from connector_core.exitcodes import ExitCode
from connector_core.ledger import FetchedItem, Ledger
from tests.commands.conftest import Demo, run_cli


def outbox_rows(demo: Demo) -> dict[str, dict[str, str]]:
    with demo.outbox.open(encoding="utf-8", newline="") as fh:
        return {row["invoice_number"]: row for row in csv.DictReader(fh)}


def test_show_a_valid_invoice_gives_its_identifiers_link_submission_and_window(demo_run):
    written_back = outbox_rows(demo_run)["DEMO-INV-1001"]
    result = demo_run.cli("show", "DEMO-INV-1001", "--json")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert (data["invoice"], data["source"], data["state"], data["version"]) == ("DEMO-INV-1001", "demo", "valid", 1)
    (version,) = data["versions"]
    # The same facts the ERP was given.
    assert version["uuid"] == written_back["uuid"] and version["long_id"] == written_back["long_id"]
    assert version["validation_link"] == written_back["validation_link"]
    assert version["validation_link"].endswith(f"/{version['uuid']}/share/{version['long_id']}")
    assert version["submission"]["submission_uid"] == written_back["submission_uid"]
    assert version["submission"]["sent_at"] and version["submission"]["accepted_at"]
    assert version["errors"] == [] and version["error_details"] == []
    # Validated moments ago: within the 72-hour window, which ends 72 hours after validation.
    assert version["within_cancellation_window"] is True
    validated = datetime.fromisoformat(version["validated_at"] or version["final_at"])
    until = datetime.fromisoformat(version["cancellable_until"])
    assert abs(until - validated - timedelta(hours=72)) <= timedelta(seconds=5)
    events = [e["event"] for e in data["timeline"]]
    assert events[0] == "fetched from the ERP"
    assert events.index(f"sent to MyInvois in submission {written_back['submission_uid']}") < events.index(
        f"accepted for validation as document {version['uuid']}"
    )
    assert events.index("final: valid") < events.index("written back to the ERP as valid")
    times = [e["at"] for e in data["timeline"]]
    assert times == sorted(times)

    text = demo_run.cli("show", "DEMO-INV-1001")
    assert text.returncode == 0, text.stderr
    assert f"uuid {version['uuid']}, longId {version['long_id']}" in text.stdout
    assert f"validation link: {version['validation_link']}" in text.stdout
    assert f"may still be cancelled until {version['cancellable_until']}" in text.stdout
    assert f"submission {written_back['submission_uid']}" in text.stdout


def test_show_a_locally_invalid_invoice_gives_each_error_with_its_field_and_fix(demo_run):
    data = json.loads(demo_run.cli("show", "DEMO-INV-1007", "--json").stdout)
    (version,) = data["versions"]
    assert version["state"] == "locally_invalid" and version["uuid"] is None and version["submission"] is None
    assert version["within_cancellation_window"] is False and version["cancellable_until"] is None
    phone = [e for e in version["errors"] if "buyer.phone" in e]
    assert phone and "+60123456789" in phone[0]  # the field, and how to fill it in
    assert any("classification_codes" in e and "022" in e for e in version["errors"])
    assert [e["event"] for e in data["timeline"]] == [
        "fetched from the ERP",
        "final: locally invalid",
        "written back to the ERP as locally invalid",
    ]
    text = demo_run.cli("show", "DEMO-INV-1007").stdout
    errors_part = text.split("errors to correct in the ERP:", 1)[1]
    for message in version["errors"]:
        assert f"    - {message}" in errors_part


def test_history_is_the_timeline_alone(demo_run):
    full = json.loads(demo_run.cli("show", "DEMO-INV-1002", "--json").stdout)
    history = json.loads(demo_run.cli("history", "DEMO-INV-1002", "--json").stdout)
    assert history["timeline"] == full["timeline"] and "versions" not in history
    text = demo_run.cli("history", "DEMO-INV-1002").stdout
    assert text.splitlines()[0] == "Invoice DEMO-INV-1002 (source demo, ERP key DEMO-INV-1002): valid"
    assert len(text.splitlines()) == 1 + len(full["timeline"])


def test_an_unknown_invoice_has_its_own_exit_code(demo_run):
    result = demo_run.cli("show", "DEMO-INV-9999")
    assert result.returncode == ExitCode.UNKNOWN_INVOICE
    assert "invoice DEMO-INV-9999: not in the ledger of sources demo" in result.stderr
    assert demo_run.cli("history", "DEMO-INV-9999").returncode == ExitCode.UNKNOWN_INVOICE
    unknown_source = demo_run.cli("show", "DEMO-INV-1001", "--source", "erp")
    assert unknown_source.returncode == ExitCode.CONFIG and "(sources: demo)" in unknown_source.stderr


def test_show_without_a_ledger_creates_nothing(tmp_path):
    result = run_cli("show", "INV-1", cwd=tmp_path)
    assert result.returncode == ExitCode.UNKNOWN_INVOICE
    assert "no ledger yet at sqlite:///var/ledger.sqlite" in result.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_number_used_in_two_sources_lists_both_and_asks_for_the_source(tmp_path):
    ledger_path = tmp_path / "ledger.sqlite"
    ledger = Ledger(f"sqlite:///{ledger_path}")
    item = FetchedItem(source_key="K", number="INV-7", fingerprint="f" * 64, invoice_json="{}", problems=["x: fix it"])
    ledger.intake.record_fetched(source="shop", profile="p", items=[item])
    ledger.intake.record_fetched(source="branch", profile="p", items=[item])
    ledger.close()
    config = tmp_path / "c.toml"
    config.write_text(
        f'[ledger]\nurl = "sqlite:///{ledger_path}"\n'
        '[profiles.p]\ntin = "C25845632020"\nclient_id = "demo-taxpayer"\nclient_secret = "demo-taxpayer-secret"\n'
        '[sources.shop]\nkind = "csv"\nprofile = "p"\n[sources.branch]\nkind = "csv"\nprofile = "p"\n'
    )
    ambiguous = run_cli("--config", str(config), "show", "INV-7", cwd=tmp_path)
    assert ambiguous.returncode == ExitCode.CONFIG
    assert (
        "INV-7 (source branch, key K, locally invalid); INV-7 (source shop, key K, locally invalid)" in ambiguous.stderr
    )
    assert "pass --source NAME" in ambiguous.stderr
    chosen = run_cli("--config", str(config), "show", "INV-7", "--source", "shop", "--json", cwd=tmp_path)
    assert chosen.returncode == 0, chosen.stderr
    assert json.loads(chosen.stdout)["source"] == "shop"


# --- after Valid: the window and the events the watch and a cancel record ---------------------


class _Settings:
    class cycles:  # noqa: N801 - stands for settings.cycles
        watch_margin_seconds = 7200.0


def _valid_row(**changes):
    now = datetime.now(UTC).replace(microsecond=0)
    row = {
        "version": 1, "state": "valid", "uuid": "U1", "refused_as_batch": False, "report_attempts": 0,
        "fetched_at": now - timedelta(hours=2), "submitted_at": now - timedelta(hours=2),
        "validated_at": now - timedelta(hours=1), "final_at": now - timedelta(hours=1),
        "reported_at": now - timedelta(hours=1), "watch_until": now + timedelta(hours=73),
        "submission_submission_uid": "S1", "submission_first_sent_at": now - timedelta(hours=2),
        "submission_sent_at": now - timedelta(hours=2), "next_report_at": None, "report_error": None,
    }  # fmt: skip
    row.update(changes)
    return row


def test_the_window_ends_where_the_watch_recorded_it_less_its_margin():
    row = _valid_row()
    window = cancellation_window(row, _Settings)
    assert window == {"until": row["watch_until"] - timedelta(hours=2), "open": True}
    closed = _valid_row(watch_until=datetime.now(UTC) + timedelta(hours=1))  # inside the margin only
    assert cancellation_window(closed, _Settings)["open"] is False
    # Validated before the watch existed: 72 hours after validation.
    legacy = _valid_row(watch_until=None, validated_at=datetime.now(UTC) - timedelta(hours=80))
    assert cancellation_window(legacy, _Settings)["open"] is False
    assert cancellation_window(_valid_row(state="cancelled"), _Settings) is None
    assert cancellation_window(_valid_row(state="rejection_requested"), _Settings)["open"] is True


def test_the_timeline_tells_a_rejection_request_and_a_refused_cancel():
    now = datetime.now(UTC).replace(microsecond=0)
    row = _valid_row(
        state="rejection_requested",
        status_reason="Wrong quantity on line 2",
        event_at=now - timedelta(minutes=30),
        cancel_requested_at=now - timedelta(minutes=10),
        cancel_reason="Issued twice",
        cancel_error=json.dumps({"code": "ActiveReferencingDocuments", "advice": "cancel credit note CN-1 first"}),
        reported_at=now - timedelta(minutes=5),
    )
    events = [e["event"] for e in timeline([row])]
    assert events == [
        "fetched from the ERP",
        "sent to MyInvois in submission S1",
        "accepted for validation as document U1",
        "validated by MyInvois",
        "final: valid",
        "rejection requested by the buyer: Wrong quantity on line 2",
        "cancel requested: Issued twice",
        "cancel refused: ActiveReferencingDocuments: cancel credit note CN-1 first",
        "written back to the ERP as rejection requested",
    ]
    cancelled = _valid_row(state="cancelled", status_reason="Issued in error", event_at=now)
    assert "cancelled at MyInvois: Issued in error" in [e["event"] for e in timeline([cancelled])]
