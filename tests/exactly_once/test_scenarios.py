"""Scenarios A–J of the issue "Exactly once for every invoice…", each on every ledger database.

Each scenario is a race or an edge the pipeline met with one connector or two on one ledger,
driven step by step against the simulator over loopback HTTP and a real ledger on SQLite,
PostgreSQL and MariaDB. Each ends with what the product promises: at most one Valid document
per invoice at MyInvois, and the ERP row holding its own outcome.
"""

from __future__ import annotations

import hashlib
import json
import threading
from contextlib import ExitStack
from datetime import UTC, datetime, timedelta

import httpx
import pytest
from sqlalchemy import event, text, update

from connector_core.contract import DocumentState
from connector_core.ledger import BuiltDocument, DocumentStatusUpdate, FetchedItem, Ledger, SubmissionState
from connector_core.ledger.schema import documents, submissions
from connector_core.pipeline import report as report_stage
from connector_core.pipeline import submit as submit_stage
from connector_core.pipeline.fetch import fetch_source
from connector_core.pipeline.poll import poll_profile, poll_submission
from connector_core.pipeline.reconcile import reconcile_profile
from connector_core.pipeline.report import report_source
from connector_core.pipeline.sending import BatchOutcome
from connector_core.pipeline.submit import prepare, send_batch, submit_profile
from tests.exactly_once.conftest import (
    documents_at_myinvois,
    make_connector,
    set_faults,
    valid_documents_at_myinvois,
)
from tests.exactly_once.erp import MemoryErp

pytestmark = pytest.mark.slow


# --- helpers ------------------------------------------------------------------------------


def fetch(c, source: str = "erp"):
    return fetch_source(c.ctx, c.ctx.sources[source])


def submit(c):
    return submit_profile(c.ctx, "main")


def poll_and_report(c, rounds: int = 20) -> None:
    """Poll until nothing is due and write every outcome back (validation is instant here)."""
    for _ in range(rounds):
        poll_profile(c.ctx, "main")
        for source in c.ctx.sources.values():
            report_source(c.ctx, source)
        if c.ledger.polls.next_poll_time() is None:
            return


def states_of(c, source: str = "erp") -> list[tuple[str, int, str]]:
    return [(d["source_key"], d["version"], d["state"]) for d in c.ledger.status.find_documents(source=source)]


def submission_states(c) -> list[str]:
    return [s["state"] for s in c.ledger.status.find_submissions()]


def item(key: str, fingerprint: str, number: str | None = None) -> FetchedItem:
    return FetchedItem(source_key=key, number=number or key, fingerprint=fingerprint * 64, invoice_json="{}", document_type="01")


def built_for(pending, content: str) -> list[BuiltDocument]:
    now = datetime.now(UTC).replace(microsecond=0)
    return [BuiltDocument(d.id, d.number, d.fingerprint, content, hashlib.sha256(content.encode()).hexdigest(), now, True) for d in pending]


class once:
    """Run ``action`` the first time the ledger engine is about to execute a statement that
    ``matches``: a deterministic way to put another writer between a read and a write."""

    def __init__(self, engine, matches, action) -> None:
        self.fired = False
        self.engine = engine

        def before(conn, cursor, statement, parameters, context, executemany):
            if not self.fired and matches(statement):
                self.fired = True
                action()

        self.listener = before
        event.listen(engine, "before_cursor_execute", before)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        event.remove(self.engine, "before_cursor_execute", self.listener)


# --- A. an ERP edit racing a claim --------------------------------------------------------


def test_a_an_edit_between_the_fetch_read_and_write_never_resets_a_claimed_document(ledger_url):
    fetcher = Ledger(ledger_url, sender="fetcher")
    submitter = Ledger(ledger_url, sender="submitter")
    try:
        fetcher.intake.record_fetched(source="s", profile="p", items=[item("A", "1")])
        pending = submitter.sends.pending_documents("p", 10)
        claims = []
        claimer = threading.Thread(
            target=lambda: claims.append(submitter.sends.claim(profile="p", built=built_for(pending, '{"sent":1}')))
        )

        def claim_now():
            claimer.start()
            # PostgreSQL and MariaDB let the claim commit here, between the fetch's read and its
            # write. SQLite cannot: the fetch holds the database's write lock for its whole
            # transaction, so the claim waits until the edit is in.
            if fetcher.engine.dialect.name != "sqlite":
                claimer.join(60)

        # The fetch has read "pending" (with the content the submitter built from) and is about to write the edit.
        is_edit = lambda sql: sql.lstrip().upper().startswith("UPDATE DOCUMENTS") and "fingerprint" in sql  # noqa: E731
        with once(fetcher.engine, is_edit, claim_now) as race:
            summary = fetcher.intake.record_fetched(source="s", profile="p", items=[item("A", "2")])
        claimer.join(60)
        assert race.fired and len(claims) == 1

        rows = fetcher.status.find_documents(source="s")
        if claims[0].won:
            # The claim came first: the edit did not reset it; it waits as version 2.
            assert [(r["version"], r["state"]) for r in rows] == [(1, "submitting"), (2, "held")]
            # The claimed bytes are still the ones that went on the wire.
            assert rows[0]["document"] == '{"sent":1}' and rows[0]["fingerprint"] == "1" * 64
            assert rows[1]["fingerprint"] == "2" * 64 and summary.changed_after_submit == ["A"]
        else:
            # The edit came first: the claim of the old content lost, nothing was opened.
            assert fetcher.engine.dialect.name == "sqlite"
            assert [(r["version"], r["state"], r["fingerprint"], r["document"]) for r in rows] == [(1, "pending", "2" * 64, None)]
            assert fetcher.status.find_submissions() == []
    finally:
        fetcher.close()
        submitter.close()


def test_a_an_edit_while_the_answer_is_lost_ends_as_changed_after_valid_never_a_duplicate(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    erp.add("k1")
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}) as c:
        set_faults(simulator, lost_response_rate={"submit": 1.0})
        fetch(c)
        submit(c)
        assert submission_states(c) == ["in_doubt"]
        set_faults(simulator, lost_response_rate=0.0)

        # The clerk edits the invoice while MyInvois holds it (unknown to us) and queues it again.
        erp.edit("k1", requeue=True)
        fetch(c)
        assert states_of(c) == [("k1", 1, "submitting"), ("k1", 2, "held")]

        submit(c)  # reconciliation finds the first send; nothing new is sent
        poll_and_report(c)

        (valid,) = valid_documents_at_myinvois(simulator, "INV-k1")
        assert len(documents_at_myinvois(simulator, "INV-k1")) == 1
        row = erp.rows["k1"]
        assert row.status == "changed_after_valid" and row.uuid == valid.uuid
        assert [(v, s) for v, s, _ in row.outcomes] == [(1, "valid"), (2, "changed_after_valid")]
        assert "cancel" in row.errors[0] and valid.uuid in row.errors[0]


# --- B. a refused re-send ------------------------------------------------------------------


def test_b_a_refused_resend_leaves_the_documents_in_doubt_never_pending(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    erp.add("k1")
    erp.add("k2")
    # A 429 reaches the pipeline at once instead of being waited out by the client.
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}, retry={"rate_limited_max_retries": 0}) as c:
        set_faults(simulator, lost_response_rate={"submit": 1.0}, search_lag_seconds=3600)
        fetch(c)
        submit(c)
        # The re-send is refused with 429 while the search cannot see the first send.
        set_faults(simulator, lost_response_rate=0.0, spurious_429_rate={"submit": 1.0})
        submit(c)
        assert c.ledger.journal.counter_values().get("reconciled_resent") == 1
        assert submission_states(c) == ["in_doubt"]
        assert {s for _k, _v, s in states_of(c)} == {"submitting"}
        assert c.ledger.sends.pending_documents("main", 10) == []

        # MyInvois answers again and its search catches up: the first send is found.
        set_faults(simulator, spurious_429_rate=0.0, search_lag_seconds=0.0)
        submit(c)
        poll_and_report(c)
        assert {r.status for r in erp.rows.values()} == {"valid"}
        for number in ("INV-k1", "INV-k2"):
            assert len(documents_at_myinvois(simulator, number)) == 1
        assert _stats(simulator)["submissions"] == 1


# --- C. two connectors reconcile one submission --------------------------------------------


def test_c_one_connector_owns_a_reconciliation_and_an_accepted_submission_is_never_demoted(ledger_url):
    a = Ledger(ledger_url, sender="a")
    b = Ledger(ledger_url, sender="b")
    try:
        a.intake.record_fetched(source="s", profile="p", items=[item("A", "1"), item("B", "1")])
        claim = a.sends.claim(profile="p", built=built_for(a.sends.pending_documents("p", 10), "{}"))
        sub = claim.submission_id
        assert a.sends.submission_in_doubt(sub, "timeout").won

        assert a.sends.take_reconciliation(sub).won
        assert b.sends.take_reconciliation(sub).lost  # one owner at a time
        assert a.sends.start_resend(sub).won
        assert b.sends.submission_in_doubt(sub, "B's own lost answer").lost  # not B's to record
        assert a.sends.submission_accepted(
            sub, submission_uid="U", accepted=[("A", "UA"), ("B", "UB")], rejected=[], next_poll_at=datetime.now(UTC)
        ).won
        # B's late 422 cannot demote it, and nobody can close it with documents open.
        assert b.sends.submission_in_doubt(sub, "422 duplicate").lost
        assert a.sends.submission_in_doubt(sub, "422 duplicate").lost
        assert b.sends.nothing_left(sub).lost
        assert [s["state"] for s in a.status.find_submissions()] == ["accepted"]
        a.polls.record_poll(sub, overall_status="in progress", updates=[DocumentStatusUpdate("UA", DocumentState.VALID)], next_poll_at=None)
        assert [s["state"] for s in a.status.find_submissions()] == ["accepted"]  # B is still open
        a.polls.record_poll(sub, overall_status="valid", updates=[DocumentStatusUpdate("UB", DocumentState.VALID)], next_poll_at=None)
        assert [s["state"] for s in a.status.find_submissions()] == ["done"]
    finally:
        a.close()
        b.close()


def test_c_two_connectors_reconciling_at_once_resend_once_and_end_exactly_once(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    for n in range(3):
        erp.add(f"k{n}")
    with ExitStack() as stack:
        a = stack.enter_context(make_connector(tmp_path, ledger_url, simulator, {"erp": erp}, name="a"))
        b = stack.enter_context(make_connector(tmp_path, ledger_url, simulator, {"erp": erp}, name="b"))
        set_faults(simulator, lost_response_rate={"submit": 1.0}, search_lag_seconds=3600)
        fetch(a)
        submit(a)
        set_faults(simulator, lost_response_rate=0.0)
        start = threading.Barrier(2)

        def reconcile(c):
            start.wait()
            reconcile_profile(c.ctx, "main")

        threads = [threading.Thread(target=reconcile, args=(c,)) for c in (a, b)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        # One of them re-sent it (a 422: MyInvois has the first send); the other stood back.
        assert a.ledger.journal.counter_values().get("reconciled_resent") == 1
        set_faults(simulator, search_lag_seconds=0.0)
        submit(b)
        poll_and_report(a)
        assert {r.status for r in erp.rows.values()} == {"valid"}
        for n in range(3):
            (valid,) = valid_documents_at_myinvois(simulator, f"INV-k{n}")
            assert erp.rows[f"k{n}"].uuid == valid.uuid
        # Valid, inside the 72-hour cancellation window: the watch follows it.
        assert submission_states(a) == ["watching"]


# --- D. two connectors build the same documents ----------------------------------------------


def test_d_the_ledger_keeps_the_bytes_that_went_on_the_wire(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    erp.add("k1")
    with ExitStack() as stack:
        a = stack.enter_context(make_connector(tmp_path, ledger_url, simulator, {"erp": erp}, name="a"))
        b = stack.enter_context(make_connector(tmp_path, ledger_url, simulator, {"erp": erp}, name="b"))
        fetch(a)
        clock = [datetime(2026, 11, 29, 8, 0, 0, tzinfo=UTC)]
        original = submit_stage.utcnow
        submit_stage.utcnow = lambda: clock[0]
        try:
            prepared_a = prepare(a.ctx, a.ledger.sends.pending_documents("main", 10))
            clock[0] += timedelta(seconds=5)  # B builds later: another issue time, other bytes
            prepared_b = prepare(b.ctx, b.ledger.sends.pending_documents("main", 10))
        finally:
            submit_stage.utcnow = original
        assert prepared_a[0][1].document_hash != prepared_b[0][1].document_hash
        report_a = submit_stage.SubmitReport("main")
        report_b = submit_stage.SubmitReport("main")
        outcome_a = send_batch(a.ctx, "main", a.clients["main"], [prepared_a[0][0]], {prepared_a[0][0].id: prepared_a[0][1]}, report_a)
        outcome_b = send_batch(b.ctx, "main", b.clients["main"], [prepared_b[0][0]], {prepared_b[0][0].id: prepared_b[0][1]}, report_b)
        assert (outcome_a, outcome_b) == (BatchOutcome.ACCEPTED, BatchOutcome.LOST_CLAIM)
        (doc,) = a.ledger.status.find_documents(source="erp")
        (sent,) = documents_at_myinvois(simulator, "INV-k1")
        assert doc["document_hash"] == prepared_a[0][1].document_hash
        assert hashlib.sha256(sent.raw_text().encode()).hexdigest() == doc["document_hash"]
        assert len(a.ledger.status.find_submissions()) == 1  # B opened nothing


# --- E. one invoice number on two rows --------------------------------------------------------


def test_e_a_second_row_with_the_same_number_is_refused_naming_the_first(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    erp.add("k1", number="INV-SAME")
    erp.add("k2", number="INV-SAME")
    erp.rows["k2"].revision = 2  # other content
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}) as c:
        fetch(c)
        submit(c)
        poll_and_report(c)
    (valid,) = valid_documents_at_myinvois(simulator, "INV-SAME")
    assert erp.rows["k1"].status == "valid" and erp.rows["k1"].uuid == valid.uuid
    assert erp.rows["k2"].status == "locally_invalid" and erp.rows["k2"].uuid is None
    assert "row k1 of source erp" in erp.rows["k2"].errors[0] and "own number" in erp.rows["k2"].errors[0]


def test_e_a_ds302_naming_another_rows_document_is_never_adopted(tmp_path, ledger_url, simulator):
    """Two installations (two ledgers) with one client id send one number with other content
    in the same second: MyInvois calls the second a DS302 duplicate of the first. Its row
    must not take the first one's uuid."""
    erp_a, erp_b = MemoryErp(), MemoryErp()
    erp_a.add("a1", number="INV-TWIN")
    erp_b.add("b1", number="INV-TWIN")
    erp_b.rows["b1"].revision = 2
    other_ledger = f"sqlite:///{tmp_path / 'other-ledger.sqlite'}"
    fixed = datetime.now(UTC).replace(microsecond=0)
    original = submit_stage.utcnow
    submit_stage.utcnow = lambda: fixed  # both build with the same issue time
    try:
        with ExitStack() as stack:
            a = stack.enter_context(make_connector(tmp_path, other_ledger, simulator, {"erp": erp_a}, name="a"))
            b = stack.enter_context(make_connector(tmp_path, ledger_url, simulator, {"erp": erp_b}, name="b"))
            fetch(a)
            submit(a)
            poll_and_report(a)
            fetch(b)
            submit(b)
            poll_and_report(b)
    finally:
        submit_stage.utcnow = original
    (valid,) = valid_documents_at_myinvois(simulator, "INV-TWIN")
    assert erp_a.rows["a1"].status == "valid" and erp_a.rows["a1"].uuid == valid.uuid
    row = erp_b.rows["b1"]
    assert row.status == "locally_invalid" and row.uuid != valid.uuid
    assert valid.uuid in row.errors[0] and "own number" in row.errors[0]


def test_e_our_own_identical_earlier_document_is_adopted(tmp_path, ledger_url):
    """The other side of E: a re-send after a lost answer is DS302 of our own document, with the
    same bytes: adopted (tests/faults/test_reconciliation_paths.py drives it end to end)."""
    led = Ledger(ledger_url, sender="a")
    try:
        led.intake.record_fetched(source="s", profile="p", items=[item("A", "1"), item("B", "1")])
        claim = led.sends.claim(profile="p", built=built_for(led.sends.pending_documents("p", 10), "{}"))
        led.sends.submission_accepted(
            claim.submission_id, submission_uid="U", accepted=[("A", "UA"), ("B", "UB")], rejected=[], next_poll_at=None
        )
        a_id, b_id = claim.claimed
        assert led.polls.holder_of("UA")["id"] == a_id
        assert led.polls.adopt(b_id, claim.submission_id, uuid="EARLIER", state=DocumentState.VALID, long_id="L", validation_link=None).won
        assert [(d["number"], d["state"], d["uuid"]) for d in led.status.find_documents(source="s")] == [
            ("A", "submitted", "UA"),
            ("B", "valid", "EARLIER"),
        ]
    finally:
        led.close()


# --- F. an outcome the ERP refuses -------------------------------------------------------------


def test_f_an_outcome_the_erp_refuses_is_isolated_and_retried(tmp_path, ledger_url, simulator, monkeypatch):
    erp = MemoryErp()
    for n in range(5):
        erp.add(f"k{n}")
    erp.refuse = {"k2"}
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}) as c:
        fetch(c)
        submit(c)
        poll_and_report(c)
        assert {k: r.status for k, r in erp.rows.items() if k != "k2"} == {f"k{n}": "valid" for n in (0, 1, 3, 4)}
        assert erp.rows["k2"].status == "queued"
        (failing,) = c.ledger.writeback.failing_outcomes()
        assert failing["row"] == "k2" and failing["attempts"] == 1 and "closed" in failing["error"]
        assert c.ledger.journal.counter_values()["writeback_failures"] == 1
        assert [i["kind"] for i in c.ledger.journal.recent_incidents()] == ["writeback_refused"]
        # Waiting out its back-off: the next report does not offer it.
        report_source(c.ctx, c.ctx.sources["erp"])
        assert c.ledger.journal.counter_values()["writeback_failures"] == 1
        # The period is reopened and the back-off is over: it goes back.
        erp.refuse = set()
        with c.ledger.engine.begin() as conn:
            conn.execute(update(documents).values(next_report_at=datetime.now(UTC) - timedelta(seconds=1)))
        report_source(c.ctx, c.ctx.sources["erp"])
        assert erp.rows["k2"].status == "valid" and c.ledger.writeback.failing_outcomes() == []


# --- G. a row set back to pending ----------------------------------------------------------------


def test_g_an_unchanged_final_row_set_back_to_pending_gets_the_same_outcome_without_a_send(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    erp.add("k1")
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}) as c:
        fetch(c)
        submit(c)
        poll_and_report(c)
        uuid = erp.rows["k1"].uuid
        erp.requeue("k1")
        summary = c.ledger.intake.record_fetched(source="erp", profile="main", items=[])
        assert summary.reported_again == 0
        report = fetch(c)
        submit(c)
        poll_and_report(c)
        assert report.fetched == 1
        assert erp.rows["k1"].status == "valid" and erp.rows["k1"].outcomes == [(1, "valid", uuid), (1, "valid", uuid)]
        assert len(documents_at_myinvois(simulator, "INV-k1")) == 1


def test_g_a_row_refused_for_a_reason_outside_its_content_is_checked_and_sent_again(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    erp.add("k1")
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}) as c:
        fetch(c)
        (ready, built) = prepare(c.ctx, c.ledger.sends.pending_documents("main", 10))[0]
        claim = c.ledger.sends.claim(profile="main", built=[built])
        # 403 on the batch (the profile's onbehalfof was wrong at the time): nothing of it arrived.
        c.ledger.sends.submission_refused(claim.submission_id, ["403 Forbidden: not authorised for this taxpayer"], [])
        poll_and_report(c)
        assert erp.rows["k1"].status == "rejected"
        erp.requeue("k1")  # the profile is fixed; the clerk queues the unchanged invoice again
        fetch(c)
        submit(c)
        poll_and_report(c)
        assert states_of(c) == [("k1", 1, "rejected"), ("k1", 2, "valid")]
        assert erp.rows["k1"].status == "valid"


def test_g_a_row_edited_after_valid_is_told_to_cancel_or_issue_a_note_never_resent(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    erp.add("k1")
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}) as c:
        fetch(c)
        submit(c)
        poll_and_report(c)
        uuid = erp.rows["k1"].uuid
        erp.edit("k1", requeue=True)
        fetch(c)
        submit(c)
        poll_and_report(c)
        assert states_of(c) == [("k1", 1, "valid"), ("k1", 2, "changed_after_valid")]
        row = erp.rows["k1"]
        assert row.status == "changed_after_valid" and row.uuid == uuid
        assert "credit or debit note" in row.errors[0]
        assert len(documents_at_myinvois(simulator, "INV-k1")) == 1


# --- H. edges of reconciliation --------------------------------------------------------------------


def test_h_a_202_that_does_not_name_every_document_is_settled_from_get_submission(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    erp.add("k1")
    erp.add("k2")
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}) as c:
        fetch(c)
        prepared = prepare(c.ctx, c.ledger.sends.pending_documents("main", 10))
        claim = c.ledger.sends.claim(profile="main", built=[b for _, b in prepared])
        result = c.clients["main"].submit([r.entry() for r, _ in prepared])
        named = [(d.code_number, d.uuid) for d in result.accepted if d.code_number == "INV-k1"]
        # The answer names k1 only: k2 stays claimed, its submission is polled.
        c.ledger.sends.submission_accepted(
            claim.submission_id, submission_uid=result.submission_uid, accepted=named, rejected=[], next_poll_at=datetime.now(UTC)
        )
        assert states_of(c) == [("k1", 1, "submitted"), ("k2", 1, "submitting")]
        poll_and_report(c)
        assert {r.status for r in erp.rows.values()} == {"valid"}
        (valid,) = valid_documents_at_myinvois(simulator, "INV-k2")
        assert erp.rows["k2"].uuid == valid.uuid


def test_h_a_202_missing_a_document_that_get_submission_does_not_list_sends_it_again(ledger_url):
    led = Ledger(ledger_url, sender="a")
    try:
        led.intake.record_fetched(source="s", profile="p", items=[item("A", "1"), item("B", "1")])
        claim = led.sends.claim(profile="p", built=built_for(led.sends.pending_documents("p", 10), "{}"))
        sub = claim.submission_id
        led.sends.submission_accepted(sub, submission_uid="U", accepted=[("A", "UA")], rejected=[], next_poll_at=datetime.now(UTC))
        a_id, b_id = claim.claimed
        closed = led.polls.record_poll(
            sub, overall_status="valid", updates=[DocumentStatusUpdate("UA", DocumentState.VALID)], next_poll_at=None,
            not_in_submission=[b_id],
        )  # fmt: skip
        assert closed
        assert [(d["number"], d["state"]) for d in led.status.find_documents(source="s")] == [("A", "valid"), ("B", "pending")]
    finally:
        led.close()


def test_h_a_kill_inside_the_found_path_leaves_all_of_it_or_none(ledger_url):
    led = Ledger(ledger_url, sender="a")
    try:
        led.intake.record_fetched(source="s", profile="p", items=[item("A", "1"), item("B", "1")])
        claim = led.sends.claim(profile="p", built=built_for(led.sends.pending_documents("p", 10), "{}"))
        sub = claim.submission_id
        led.sends.submission_in_doubt(sub, "timeout")
        led.sends.take_reconciliation(sub)

        class Killed(Exception):
            pass

        def kill():
            raise Killed()

        is_missing_step = lambda sql: sql.lstrip().upper().startswith("UPDATE DOCUMENTS") and "submission_id=" in sql.replace(" ", "") and "state=" in sql.replace(" ", "") and "uuid" not in sql  # noqa: E731
        with once(led.engine, is_missing_step, kill), pytest.raises(Killed):
            led.sends.reconciled_found(sub, submission_uid="U", accepted=[("A", "UA")], missing=[claim.claimed[1]], next_poll_at=datetime.now(UTC))
        # Nothing of it happened: still reconciling, both still claimed.
        assert [s["state"] for s in led.status.find_submissions()] == ["reconciling"]
        assert {d["state"] for d in led.status.find_documents(source="s")} == {"submitting"}
        assert led.sends.reconciled_found(sub, submission_uid="U", accepted=[("A", "UA")], missing=[claim.claimed[1]], next_poll_at=datetime.now(UTC)).won
        assert [(d["number"], d["state"]) for d in led.status.find_documents(source="s")] == [("A", "submitted"), ("B", "pending")]
    finally:
        led.close()


def test_h_an_in_doubt_submission_that_never_resolves_is_escalated_and_no_longer_searched(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    erp.add("k1")
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}, cycles={"reconcile_max_attempts": 2}) as c:
        # Every answer is lost and the search never sees the documents.
        set_faults(simulator, lost_response_rate={"submit": 1.0}, search_lag_seconds=3600)
        fetch(c)
        submit(c)
        for _ in range(4):
            submit(c)
        assert submission_states(c) == ["escalated"]
        searches = _calls(simulator, "search")
        submit(c)
        assert _calls(simulator, "search") == searches  # no more Search calls spent on it
        (escalated,) = c.ledger.status.escalated_submissions()
        assert escalated["invoices"] == ["INV-k1"] and "2 reconciliations" in escalated["reason"]
        assert c.ledger.journal.counter_values()["submissions_escalated"] == 1
        assert any(i["kind"] == "submission_escalated" for i in c.ledger.journal.recent_incidents())
        assert c.ledger.status.unfinished_count() == 0  # run --once does not wait for an operator
        # ...but it does not end as if all were well: its invoice needs an operator (exit code 3).
        assert c.ledger.status.needs_attention_count() == 1
        assert len(documents_at_myinvois(simulator, "INV-k1")) <= 1 or all(
            "DS302" in {p.code for p in d.problems} for d in documents_at_myinvois(simulator, "INV-k1")[1:]
        )


def test_h_the_search_window_starts_at_the_first_send_whatever_the_resends(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    erp.add("k1")
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}) as c:
        set_faults(simulator, lost_response_rate={"submit": 1.0}, search_lag_seconds=3600)
        fetch(c)
        submit(c)
        (first,) = c.ledger.status.find_submissions()
        windows = []
        client = c.clients["main"]
        real_search = client.search_documents

        def search(date_from, date_to, **kwargs):  # a spy: the real call goes through
            windows.append(date_from)
            return real_search(date_from, date_to, **kwargs)

        client.search_documents = search
        for _ in range(3):
            submit(c)
        (sub,) = c.ledger.status.find_submissions()
        first_sent = sub["first_sent_at"].replace(tzinfo=UTC) if sub["first_sent_at"].tzinfo is None else sub["first_sent_at"]
        assert sub["sent_at"] != first["sent_at"] or sub["reconcile_attempts"] >= 3
        assert windows and {w for w in windows} == {first_sent - timedelta(minutes=2)}


def test_h_stored_bytes_near_the_72_hour_limit_are_never_resent(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    erp.add("k1")
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}) as c:
        set_faults(simulator, lost_response_rate={"submit": 1.0}, search_lag_seconds=3600)
        fetch(c)
        submit(c)
        set_faults(simulator, lost_response_rate=0.0)
        submits = _calls(simulator, "submit")
        # Its bytes were issued 71.5 hours ago: MyInvois refuses anything issued over 72 h ago,
        # and a rebuild would carry a new issue time that its duplicate check cannot match.
        with c.ledger.engine.begin() as conn:
            conn.execute(update(documents).values(issued_at=datetime.now(UTC) - timedelta(hours=71, minutes=30)))
        submit(c)
        assert _calls(simulator, "submit") == submits
        assert submission_states(c) == ["escalated"]
        assert "72-hour" in c.ledger.status.escalated_submissions()[0]["reason"]


def test_h_an_earlier_invalid_version_of_the_number_is_not_taken_for_a_send_that_never_arrived(tmp_path, ledger_url, simulator):
    """Reconciliation's issue-time match. Version 1 of an invoice is Invalid at MyInvois;
    version 2's submit failed with a 5xx before MyInvois processed it (in doubt, never arrived).
    Search Documents finds version 1 by the number, and an Invalid document cannot be compared
    byte for byte (Get Document does not return it): only the issue time we stamped tells the
    two apart. Taking it would write version 1's errors back for version 2, which would never
    be sent."""
    erp = MemoryErp()
    erp.add("k1")
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}) as c:
        fetch(c)
        original = submit_stage.utcnow
        submit_stage.utcnow = lambda: original() + timedelta(hours=1)  # a clock an hour fast: CF322
        try:
            submit(c)
        finally:
            submit_stage.utcnow = original
        poll_and_report(c)
        (first,) = documents_at_myinvois(simulator, "INV-k1")
        assert erp.rows["k1"].status == "invalid" and erp.rows["k1"].uuid == first.uuid

        erp.edit("k1", requeue=True)  # corrected (and the clock put right)
        fetch(c)
        set_faults(simulator, error_rate={"submit": 1.0})  # a 5xx, answered before processing
        assert submit(c).outcomes == [BatchOutcome.IN_DOUBT]
        set_faults(simulator, error_rate=0.0)
        submit(c)  # reconciles: the search sees only version 1, so the identical bytes go again
        poll_and_report(c)
        assert c.ledger.journal.counter_values().get("reconciled_resent") == 1
        assert states_of(c) == [("k1", 1, "invalid"), ("k1", 2, "valid")]
        (valid,) = valid_documents_at_myinvois(simulator, "INV-k1")
        assert valid.uuid != first.uuid
        assert erp.rows["k1"].status == "valid" and erp.rows["k1"].uuid == valid.uuid


# --- J. the loser of a claim race ------------------------------------------------------------------


def test_j_a_lost_claim_opens_nothing_and_the_rest_is_still_sent(tmp_path, ledger_url, simulator):
    erp = MemoryErp()
    for n in range(4):
        erp.add(f"k{n}")
    with ExitStack() as stack:
        a = stack.enter_context(make_connector(tmp_path, ledger_url, simulator, {"erp": erp}, name="a", submission={"max_documents": 2}))
        b = stack.enter_context(make_connector(tmp_path, ledger_url, simulator, {"erp": erp}, name="b", submission={"max_documents": 2}))
        fetch(a)
        real_claim = a.ledger.sends.claim
        stolen = []

        def claim_after_b(*, profile, built):
            if not stolen:  # B claims A's first batch just before A does
                stolen.append(b.ledger.sends.claim(profile=profile, built=built))
            return real_claim(profile=profile, built=built)

        a.ledger.sends.claim = claim_after_b
        report = submit(a)
        assert stolen[0].won and len(stolen[0].claimed) == 2
        assert report.submissions == 1 and report.lost_claims == 2 and report.documents_sent == 2
        assert BatchOutcome.LOST_CLAIM in report.outcomes
        subs = a.ledger.status.find_submissions()
        assert all(s["document_count"] > 0 for s in subs) and "not_sent" not in {s["state"] for s in subs}


def _stats(sim) -> dict:
    return httpx.get(f"{sim.base_url}/_simulator/stats", timeout=10).json()


def _calls(sim, endpoint: str) -> int:
    return sum(_stats(sim)["requests"].get(endpoint, {}).values())


def test_e_two_connectors_recording_one_number_at_once_leave_it_to_one_row(ledger_url):
    """Two sources of one profile, read by two connectors at the same moment, both carry 200
    invoice numbers: each number ends pending on one row only, the other row refused."""
    a, b = Ledger(ledger_url, sender="a"), Ledger(ledger_url, sender="b")
    numbers = [f"INV-{n:05d}" for n in range(200)]
    start = threading.Barrier(2)
    summaries = {}

    def record(ledger, source):
        start.wait()
        summaries[source] = ledger.intake.record_fetched(
            source=source, profile="p", items=[item(f"{source}-{n}", source[0], number=n) for n in numbers]
        )

    try:
        threads = [threading.Thread(target=record, args=args) for args in ((a, "alpha"), (b, "beta"))]
        for t in threads:
            t.start()
        for t in threads:
            t.join(120)
        holders: dict[str, list[str]] = {}
        for source in ("alpha", "beta"):
            for d in a.status.find_documents(source=source):
                if d["state"] == "pending":
                    holders.setdefault(d["number"], []).append(source)
        assert sorted(holders) == numbers and all(len(h) == 1 for h in holders.values())
        assert len(summaries["alpha"].number_taken) + len(summaries["beta"].number_taken) == len(numbers)
    finally:
        a.close()
        b.close()


def test_h_reconciliations_myinvois_never_answered_are_not_counted_toward_escalation(tmp_path, ledger_url, simulator):
    """A login back-off or a throttled Search used to count as a reconciliation: with run
    --once's loop trying every beat, a submission was escalated within a second, its invoices
    never written back. Only a search that answered counts; the others pause the reconciliation."""
    erp = MemoryErp()
    erp.add("k1")
    cycles = {"reconcile_max_attempts": 2, "reconcile_after_seconds": 0.0}
    with make_connector(tmp_path, ledger_url, simulator, {"erp": erp}, cycles=cycles) as c:
        set_faults(simulator, lost_response_rate={"submit": 1.0})
        fetch(c)
        submit(c)
        assert submission_states(c) == ["in_doubt"]
        # Search fails on every call: MyInvois is never asked successfully, however often we try.
        set_faults(simulator, lost_response_rate=0.0, error_rate={"search": 1.0})
        for _ in range(5):
            c.ctx.reconcile_paused_until.clear()  # as if the pause had passed
            submit(c)
        assert submission_states(c) == ["in_doubt"]
        (sub,) = c.ledger.status.find_submissions()
        assert sub["reconcile_attempts"] == 0, sub
        # Paused after such a failure: the next beat does not try again at once.
        searches = _calls(simulator, "search")
        submit(c)
        assert _calls(simulator, "search") == searches
        # Search answers again: found at MyInvois, and exactly one accepted document.
        set_faults(simulator, error_rate=0.0)
        c.ctx.reconcile_paused_until.clear()
        submit(c)
        poll_and_report(c)
        assert states_of(c) == [("k1", 1, "valid")]
        assert len(valid_documents_at_myinvois(simulator, "INV-k1")) == 1
