"""The ledger on SQLite, PostgreSQL and MariaDB: recorded once, versions, claims, crash recovery."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, text

from connector_core.contract import DocumentState
from connector_core.ledger import BuiltDocument, DocumentStatusUpdate, FetchedItem, Ledger, SubmissionState
from connector_core.ledger import migrate
from connector_core.ledger.schema import metadata


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mariadb"])
def ledger_url(request, tmp_path_factory):
    """A ledger database with the schema, created once for this module's tests (none of them
    changes it: creating and dropping it for each was most of their time, on MariaDB above all)."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('ledger') / 'ledger.sqlite'}"
    elif request.param == "postgresql":
        url = request.getfixturevalue("postgres_url")
    else:
        url = request.getfixturevalue("mariadb_url")
    led = Ledger(url)
    led.close()
    yield url
    # The server databases live for the whole test session: leave them empty for the next module.
    engine = create_engine(url)
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture()
def ledger(ledger_url):
    """A ledger of its own for each test, every table empty as a freshly created ledger's."""
    led = Ledger(ledger_url)
    yield led
    with led.engine.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())
    led.close()


def item(key: str, fingerprint: str = "a", problems: list[str] | None = None) -> FetchedItem:
    return FetchedItem(
        source_key=key,
        number=key,
        fingerprint=fingerprint * 64,
        invoice_json="{}",
        document_type="01",
        issuer_tin="C25845632020",
        problems=problems or [],
    )


def built(pending, content: str = '{"doc":1}') -> list[BuiltDocument]:
    now = datetime.now(UTC).replace(microsecond=0)
    return [BuiltDocument(d.id, d.number, d.fingerprint, content, "h" * 64, now, fresh=True) for d in pending]


def send(ledger: Ledger, keys: list[str], profile: str = "p", content: str = '{"doc":1}') -> int:
    pending = [d for d in ledger.sends.pending_documents(profile, 100) if d.source_key in keys]
    claim = ledger.sends.claim(profile=profile, built=built(pending, content))
    assert len(claim.claimed) == len(pending) and claim.lost == []
    return claim.submission_id


def test_schema_is_at_the_head_revision(ledger):
    assert ledger.schema_revision() == migrate.head_revision()
    Ledger(ledger.url).close()  # opening again is a no-op upgrade
    assert ledger.schema_revision() == migrate.head_revision()


def test_same_invoice_fetched_twice_is_recorded_once(ledger):
    first = ledger.intake.record_fetched(source="s", profile="p", items=[item("A"), item("B")])
    again = ledger.intake.record_fetched(source="s", profile="p", items=[item("A"), item("B")])
    assert (first.new, again.new, again.unchanged) == (2, 0, 2)
    assert ledger.status.counts_by_state() == {"pending": 2}


def test_pending_invoice_changed_in_the_erp_is_updated_in_place(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A")])
    summary = ledger.intake.record_fetched(source="s", profile="p", items=[item("A", "b")])
    assert summary.updated == 1
    (doc,) = ledger.status.find_documents(source="s")
    assert (doc["version"], doc["fingerprint"]) == (1, "b" * 64)


def test_changed_invoice_after_invalid_becomes_a_new_version(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A")])
    sub_id = send(ledger, ["A"])
    ledger.sends.submission_accepted(sub_id, submission_uid="SUB1", accepted=[("A", "U1")], rejected=[], next_poll_at=datetime.now(UTC))
    ledger.polls.record_poll(sub_id, overall_status="invalid", updates=[DocumentStatusUpdate("U1", DocumentState.INVALID, errors=["bad TIN"])], next_poll_at=None)
    unchanged = ledger.intake.record_fetched(source="s", profile="p", items=[item("A")])
    assert unchanged.unchanged == 1
    changed = ledger.intake.record_fetched(source="s", profile="p", items=[item("A", "c")])
    assert changed.new_versions == 1
    versions = [(d["version"], d["state"]) for d in ledger.status.find_documents(source="s")]
    assert versions == [(1, "invalid"), (2, "pending")]


def test_changed_invoice_after_submission_is_held_and_reported(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A")])
    send(ledger, ["A"])
    summary = ledger.intake.record_fetched(source="s", profile="p", items=[item("A", "z")])
    assert summary.changed_after_submit == ["A"] and summary.recorded == 0
    versions = [(d["version"], d["state"]) for d in ledger.status.find_documents(source="s")]
    assert versions == [(1, "submitting"), (2, "held")]


def test_locally_invalid_is_final_with_its_problems(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A", problems=["buyer.phone: missing"])])
    ((_, outcome),) = ledger.writeback.unreported_outcomes("s", 10)
    assert outcome.state is DocumentState.LOCALLY_INVALID and outcome.errors == ["buyer.phone: missing"]


def test_a_document_is_claimed_by_one_submission_only(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A"), item("B")])
    pending = ledger.sends.pending_documents("p", 10)
    first = ledger.sends.claim(profile="p", built=built(pending))
    second = ledger.sends.claim(profile="p", built=built(pending, '{"doc":2}'))
    assert len(first.claimed) == 2 and not second.won and second.lost == [d.id for d in pending]
    assert {d.state for d in ledger.polls.documents_of(first.submission_id)} == {"submitting"}
    # The loser opened nothing, and the bytes kept are the winner's.
    assert len(ledger.status.find_submissions()) == 1
    assert {d.document for d in ledger.polls.documents_of(first.submission_id)} == {'{"doc":1}'}


def test_crash_while_sending_leaves_the_submission_in_doubt(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A")])
    sub_id = send(ledger, ["A"])
    assert ledger.sends.recover_after_crash(abandoned_before=datetime.now(UTC) - timedelta(minutes=15)) == 1
    (unresolved,) = ledger.sends.unresolved_submissions("p")
    assert unresolved.id == sub_id and unresolved.state == SubmissionState.IN_DOUBT.value
    assert [d.document for d in unresolved.documents] == ['{"doc":1}']


def test_connectors_sharing_a_ledger_recover_only_their_own_or_abandoned_sends(ledger):
    """Connector B starting up must not take connector A's call in progress for a crash leftover;
    A restarting does recover it, and so does anyone once it is older than a call can last."""
    a = Ledger(ledger.url, sender="connector-a")
    b = Ledger(ledger.url, sender="connector-b")
    try:
        a.intake.record_fetched(source="s", profile="p", items=[item("A")])
        sub_id = send(a, ["A"])
        recently = datetime.now(UTC) - timedelta(minutes=15)
        assert b.sends.recover_after_crash(abandoned_before=recently) == 0
        assert b.sends.recover_abandoned(abandoned_before=recently) == 0
        assert ledger.sends.unresolved_submissions("p") == []  # still A's, still sending

        assert a.sends.recover_after_crash(abandoned_before=recently) == 1  # A restarted: its own send
        (unresolved,) = ledger.sends.unresolved_submissions("p")
        assert unresolved.id == sub_id and unresolved.state == SubmissionState.IN_DOUBT.value

        # A resends it (reconciliation) and stops for good: B takes over once it is abandoned.
        assert a.sends.take_reconciliation(sub_id).won
        assert a.sends.start_resend(sub_id).won
        assert b.sends.take_reconciliation(sub_id).lost  # A holds it
        assert b.sends.recover_abandoned(abandoned_before=recently) == 0
        assert b.sends.recover_abandoned(abandoned_before=datetime.now(UTC) + timedelta(seconds=1)) == 1
        assert [u.id for u in ledger.sends.unresolved_submissions("p")] == [sub_id]
    finally:
        a.close()
        b.close()


def test_not_sent_documents_go_back_to_pending_with_their_bytes(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A")])
    sub_id = send(ledger, ["A"])
    ledger.sends.submission_not_sent(sub_id, "connection refused")
    (doc,) = ledger.sends.pending_documents("p", 10)
    assert doc.document == '{"doc":1}' and doc.document_hash == "h" * 64


def test_poll_closes_the_submission_when_every_document_is_final(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A"), item("B")])
    sub_id = send(ledger, ["A", "B"])
    due_at = datetime.now(UTC) - timedelta(seconds=1)
    ledger.sends.submission_accepted(sub_id, submission_uid="SUB1", accepted=[("A", "U1"), ("B", "U2")], rejected=[], next_poll_at=due_at)
    (due,) = ledger.polls.submissions_due("p", datetime.now(UTC), 10)
    later = datetime.now(UTC) + timedelta(seconds=5)
    ledger.polls.record_poll(due.id, overall_status="in progress", updates=[DocumentStatusUpdate("U1", DocumentState.VALID, long_id="L1")], next_poll_at=later)
    assert ledger.polls.submissions_due("p", datetime.now(UTC), 10) == []
    ledger.polls.record_poll(due.id, overall_status="partially valid", updates=[DocumentStatusUpdate("U2", DocumentState.INVALID, errors=["x"])], next_poll_at=later)
    assert ledger.polls.next_poll_time() is None
    outcomes = {o.number: o for _, o in ledger.writeback.unreported_outcomes("s", 10)}
    assert outcomes["A"].state is DocumentState.VALID and outcomes["A"].long_id == "L1" and outcomes["A"].submission_uid == "SUB1"
    assert outcomes["B"].errors == ["x"]
    ledger.writeback.mark_reported([doc_id for doc_id, _ in ledger.writeback.unreported_outcomes("s", 10)])
    assert ledger.status.unfinished_count() == 0


def test_rejected_on_arrival_is_final_with_the_reason(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A"), item("B")])
    sub_id = send(ledger, ["A", "B"])
    ledger.sends.submission_accepted(
        sub_id, submission_uid="SUB1", accepted=[("A", "U1")], rejected=[("B", ["Document hash is not valid."], [{"code": None}])], next_poll_at=None
    )
    states = {d["number"]: d["state"] for d in ledger.status.find_documents(source="s")}
    assert states == {"A": "submitted", "B": "rejected"}


def test_counters_and_incidents(ledger):
    for _ in range(3):
        ledger.journal.increment("rate_limited_429")
    ledger.journal.add_incident("login_failed", "MyInvois refused the login", subject="demo")
    assert ledger.journal.counter_values() == {"rate_limited_429": 3}
    assert ledger.journal.recent_incidents(1)[0]["kind"] == "login_failed"


def test_large_document_text_survives_the_round_trip(ledger):
    # 350 KB: more than MariaDB's TEXT holds, which is why the column is LONGTEXT there.
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A")])
    big = "x" * (350 * 1024)
    sub_id = send(ledger, ["A"], content=big)
    ledger.sends.submission_not_sent(sub_id, "connection refused")
    (doc,) = ledger.sends.pending_documents("p", 1)
    assert doc.document == big


def test_has_unfinished_agrees_with_the_count_at_every_step_of_a_life(ledger):
    """run --once's loop asks has_unfinished (the first such row) where the summary counts."""

    def agree() -> bool:
        found = ledger.status.has_unfinished()
        assert found == (ledger.status.unfinished_count() > 0)
        assert ledger.status.has_unfinished(exclude_profiles=["p"]) is False  # only profile p has documents
        return found

    assert agree() is False
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A"), item("B")])
    assert agree() is True  # pending
    sub_id = send(ledger, ["A", "B"])
    assert agree() is True  # submitting
    due_at = datetime.now(UTC) - timedelta(seconds=1)
    ledger.sends.submission_accepted(sub_id, submission_uid="S1", accepted=[("A", "U1"), ("B", "U2")], rejected=[], next_poll_at=due_at)
    updates = [DocumentStatusUpdate("U1", DocumentState.VALID, long_id="L1"), DocumentStatusUpdate("U2", DocumentState.INVALID, errors=["x"])]
    ledger.polls.record_poll(sub_id, overall_status="partially valid", updates=updates, next_poll_at=None)
    assert agree() is True  # final, not yet written back
    outcomes = ledger.writeback.unreported_outcomes("s", 10)
    ledger.writeback.mark_reported([outcomes[0][0]])
    assert agree() is True  # one still to write back
    ledger.writeback.mark_reported([outcomes[1][0]])
    assert agree() is False
