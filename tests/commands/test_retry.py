"""``retry``: an invoice refused for a reason outside its content is sent again once the cause
is fixed; one refused for its content is not, and the clerk is told to correct the ERP record."""

from __future__ import annotations

import csv
import json

from connector_core.exitcodes import ExitCode
from tests.commands.conftest import write_demo

OWN = ('client_id = "demo-taxpayer"', 'client_secret = "demo-taxpayer-secret"')
# Another taxpayer's credentials: MyInvois refuses the whole batch with 403 IncorrectSubmitter.
OTHERS = ('client_id = "demo-taxpayer-2"', 'client_secret = "demo-taxpayer-2-secret"')


def _swap(config, old, new) -> None:
    text = config.read_text()
    for a, b in zip(old, new, strict=True):
        assert a in text
        text = text.replace(a, b)
    config.write_text(text)


def test_a_batch_refused_invoice_is_sent_again_once_the_credentials_are_fixed(tmp_path):
    demo = write_demo(tmp_path / "demo")
    _swap(demo.config, OWN, OTHERS)
    first = demo.cli("run", "--once")
    assert first.returncode == ExitCode.NEEDS_ATTENTION, first.stdout + first.stderr
    shown = json.loads(demo.cli("show", "DEMO-INV-1001", "--json").stdout)
    assert shown["state"] == "rejected" and shown["versions"][0]["refused_as_batch"] is True

    _swap(demo.config, OTHERS, OWN)  # the operator fixes the profile
    retried = demo.cli("retry", "DEMO-INV-1001")
    assert retried.returncode == 0, retried.stderr
    assert "checked again and queued as version 2" in retried.stdout
    again = demo.cli("retry", "DEMO-INV-1001")  # already queued: nothing more
    assert again.returncode == ExitCode.REFUSED and "already queued (version 2)" in again.stderr

    second = demo.cli("run", "--once")
    assert "1 submission(s)" in second.stdout, second.stdout + second.stderr
    shown = json.loads(demo.cli("show", "DEMO-INV-1001", "--json").stdout)
    assert [(v["version"], v["state"]) for v in shown["versions"]] == [(1, "rejected"), (2, "valid")]
    assert shown["versions"][1]["uuid"] and shown["versions"][1]["within_cancellation_window"] is True
    with demo.outbox.open(encoding="utf-8", newline="") as fh:
        written_back = [
            (r["version"], r["status"]) for r in csv.DictReader(fh) if r["invoice_number"] == "DEMO-INV-1001"
        ]
    assert written_back == [("1", "rejected"), ("2", "valid")]
    # The others of the batch were not retried: they wait for their own `retry`.
    assert json.loads(demo.cli("show", "DEMO-INV-1002", "--json").stdout)["state"] == "rejected"

    valid = demo.cli("retry", "DEMO-INV-1001")
    assert valid.returncode == ExitCode.REFUSED
    assert "is valid at MyInvois" in valid.stderr and "nothing to send again" in valid.stderr


def test_an_invoice_refused_for_its_content_is_not_retried(demo_run):
    before = json.loads(demo_run.cli("show", "DEMO-INV-1007", "--json").stdout)
    result = demo_run.cli("retry", "DEMO-INV-1007")
    assert result.returncode == ExitCode.REFUSED
    assert "still fails the check before sending" in result.stderr and "buyer.phone" in result.stderr
    assert "enter it in international form" in result.stderr  # the fix, with the field
    unreadable = demo_run.cli("retry", "DEMO-INV-1008")
    assert unreadable.returncode == ExitCode.REFUSED
    assert "could not be read from the ERP" in unreadable.stderr and "unit_price" in unreadable.stderr
    assert json.loads(demo_run.cli("show", "DEMO-INV-1007", "--json").stdout) == before  # nothing written
    assert demo_run.cli("retry", "DEMO-INV-0000").returncode == ExitCode.UNKNOWN_INVOICE


def test_retry_checks_again_before_the_refusal_was_written_back(ledger_url):
    """An ERP row set back to pending is looked at again only once its refusal was written
    back; ``retry`` asks for it before that too (the ERP may be the thing that was down)."""
    import hashlib
    from datetime import UTC, datetime

    from connector_core.ledger import BuiltDocument, FetchedItem, Ledger

    item = FetchedItem(source_key="K1", number="INV-1", fingerprint="f" * 64, invoice_json="{}", document_type="01")
    ledger = Ledger(ledger_url)
    try:
        ledger.intake.record_fetched(source="erp", profile="main", items=[item])
        (pending,) = ledger.sends.pending_documents("main", 10)
        sent = hashlib.sha256(b"{}").hexdigest()
        built = BuiltDocument(pending.id, pending.number, pending.fingerprint, "{}", sent, datetime.now(UTC), True)
        claim = ledger.sends.claim(profile="main", built=[built])
        ledger.sends.submission_refused(claim.submission_id, ["403 Forbidden"], [])
        assert ledger.status.find_documents(source="erp")[0]["refused_as_batch"]

        unchanged = ledger.intake.record_fetched(source="erp", profile="main", items=[item])
        assert unchanged.unchanged == 1 and unchanged.new_versions == 0
        retried = ledger.intake.record_fetched(source="erp", profile="main", items=[item], retry=True)
        assert retried.new_versions == 1
        assert [(d["version"], d["state"]) for d in ledger.status.find_documents(source="erp")] == [
            (1, "rejected"),
            (2, "pending"),
        ]
    finally:
        ledger.close()
