"""``status`` and the ``run --once`` summary count invoices by their latest version, and list
as errors to correct only invoices whose latest version still needs the ERP's attention.

On SQLite, PostgreSQL and MariaDB: the "latest version" condition is SQL the three must agree on.
"""

from __future__ import annotations

from datetime import UTC, datetime

from connector_core.contract import DocumentState
from connector_core.ledger import DocumentStatusUpdate, Ledger
from tests.core.test_ledger import item, send
from tests.exactly_once.conftest import ledger_url  # noqa: F401 - the fixture: a fresh ledger on each database


def _validate(ledger: Ledger, key: str, uuid: str, state: DocumentState, errors: list[str] | None = None) -> None:
    sub_id = send(ledger, [key])
    ledger.sends.submission_accepted(sub_id, submission_uid=f"SUB-{uuid}", accepted=[(key, uuid)], rejected=[], next_poll_at=datetime.now(UTC))
    ledger.polls.record_poll(
        sub_id, overall_status=state.value, updates=[DocumentStatusUpdate(uuid, state, errors=errors or [])], next_poll_at=None
    )


def test_a_corrected_invoice_counts_once_and_its_old_error_is_no_longer_to_correct(ledger_url):  # noqa: F811
    ledger = Ledger(ledger_url)
    try:
        ledger.intake.record_fetched(source="s", profile="p", items=[item("A"), item("B"), item("C", problems=["buyer.phone: missing"])])
        _validate(ledger, "A", "U-A1", DocumentState.INVALID, ["CF321: buyer TIN not found"])
        _validate(ledger, "B", "U-B1", DocumentState.INVALID, ["CF404: wrong tax type"])
        # A is corrected in the ERP and validated as version 2; B and C are not corrected.
        assert ledger.intake.record_fetched(source="s", profile="p", items=[item("A", "c")]).new_versions == 1
        _validate(ledger, "A", "U-A2", DocumentState.VALID)

        assert ledger.status.counts_by_state() == {"valid": 1, "invalid": 1, "locally_invalid": 1}
        assert ledger.status.version_counts_by_state() == {"valid": 1, "invalid": 2, "locally_invalid": 1}
        to_correct = {(e["invoice"], e["version"], e["state"]) for e in ledger.status.latest_errors(10)}
        assert to_correct == {("B", 1, "invalid"), ("C", 1, "locally_invalid")}
        # Counting by profile applies the same rule.
        assert ledger.status.counts_by_state(profile="p") == {"valid": 1, "invalid": 1, "locally_invalid": 1}
        assert ledger.status.counts_by_state(profile="other") == {}
    finally:
        ledger.close()


def test_an_invoice_being_corrected_is_not_an_error_to_correct_any_more(ledger_url):  # noqa: F811
    ledger = Ledger(ledger_url)
    try:
        ledger.intake.record_fetched(source="s", profile="p", items=[item("A")])
        _validate(ledger, "A", "U-A1", DocumentState.INVALID, ["CF321: buyer TIN not found"])
        assert [e["invoice"] for e in ledger.status.latest_errors(10)] == ["A"]
        # The clerk's correction is recorded as version 2, not yet sent: the invoice is pending.
        ledger.intake.record_fetched(source="s", profile="p", items=[item("A", "c")])
        assert ledger.status.latest_errors(10) == []
        assert ledger.status.counts_by_state() == {"pending": 1}
        assert ledger.status.version_counts_by_state() == {"invalid": 1, "pending": 1}
    finally:
        ledger.close()


def test_the_same_source_key_in_another_source_is_another_invoice(ledger_url):  # noqa: F811
    ledger = Ledger(ledger_url)
    try:
        ledger.intake.record_fetched(source="s1", profile="p", items=[item("A", problems=["x: bad"])])
        ledger.intake.record_fetched(source="s2", profile="p2", items=[item("A", problems=["x: bad"])])
        ledger.intake.record_fetched(source="s2", profile="p2", items=[item("A", "d", problems=["x: still bad"])])
        assert ledger.status.counts_by_state() == {"locally_invalid": 2}
        errors = sorted((e["source"], e["version"], tuple(e["errors"])) for e in ledger.status.latest_errors(10))
        assert errors == [("s1", 1, ("x: bad",)), ("s2", 2, ("x: still bad",))]
    finally:
        ledger.close()
