"""Every statement the ledger runs per cycle or per document reads ``documents`` and
``submissions`` through an index: their cost does not grow with a ledger that only grows.

The statements are the exact ones the code sends: a document's whole life (recorded, edited,
claimed, accepted, polled, written back) and the gauges refreshed after every cycle run with
the SQL they produce captured, then each one is EXPLAINed. SQLite: EXPLAIN QUERY PLAN names a
full read as ``SCAN <table>`` (a table or a whole index). PostgreSQL: with sequential scans
disabled, a plan that still reads a table whole shows a Seq Scan, or an index scan without an
index condition.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import create_engine, event, func, select, text

from connector_core.contract import DocumentState
from connector_core.ledger import BuiltDocument, DocumentStatusUpdate, FetchedItem, Ledger
from connector_core.ledger import queries
from connector_core.ledger.schema import documents, metadata

WATCHED = ("documents", "submissions")


@pytest.fixture(params=["sqlite", "postgresql"])
def ledger(request, tmp_path):
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url")
    led = Ledger(url)
    yield led
    if request.param != "sqlite":
        metadata.drop_all(led.engine)
        with led.engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    led.close()


def item(key: str, fingerprint: str = "a") -> FetchedItem:
    return FetchedItem(source_key=key, number=key, fingerprint=fingerprint * 64, invoice_json="{}", document_type="01")


def one_cycle_of_everything(led: Ledger) -> None:
    """What a fetch, submit, poll and write-back cycle, and the refresh after it, run."""
    led.intake.record_fetched(source="s", profile="p", items=[item(f"K{i}") for i in range(4)])
    led.intake.record_fetched(source="s", profile="p", items=[item("K0"), item("K1", "b")])  # unchanged, edited
    pending = led.sends.pending_documents("p", 100)
    now = datetime.now(UTC).replace(microsecond=0)
    built = [BuiltDocument(d.id, d.number, d.fingerprint, "{}", "h" * 64, now, fresh=True) for d in pending]
    claim = led.sends.claim(profile="p", built=built)
    assert claim.submission_id is not None
    sub = claim.submission_id
    led.sends.submission_accepted(
        sub,
        submission_uid="SUB",
        accepted=[(d.number, f"U-{d.number}") for d in pending[:3]],
        rejected=[(pending[3].number, ["bad"], [])],
        next_poll_at=now,
    )
    led.intake.record_fetched(source="s", profile="p", items=[item("K2", "c")])  # edited in flight: held
    led.polls.submissions_due("p", now + timedelta(seconds=1), 10)
    led.polls.next_poll_time("p")
    led.polls.next_poll_time()
    led.polls.record_poll(
        sub,
        overall_status="Valid",
        updates=[
            DocumentStatusUpdate(uuid="U-K0", state=DocumentState.VALID, long_id="L0"),
            DocumentStatusUpdate(uuid="U-K1", state=DocumentState.INVALID, errors=["e"], error_details=[{}]),
            DocumentStatusUpdate(uuid="U-K2", state=DocumentState.VALID, long_id="L2"),
        ],
        next_poll_at=None,
    )
    outcomes = led.writeback.unreported_outcomes("s", 500)
    led.writeback.report_failed(outcomes[0][0], "refused", first_delay=60, max_delay=3600)
    led.writeback.mark_reported([doc_id for doc_id, _ in outcomes[1:]])
    # The refresh after every cycle, and run --once's loop.
    led.status.version_counts_by_state()
    led.status.version_counts_by_state()
    led.status.submission_counts(open_only=True)
    led.status.oldest_pending_fetched_at()
    led.status.stuck_submissions(now)
    led.status.has_unfinished()
    led.status.has_unfinished(exclude_profiles=["other"])
    led.bodies.prune(keep_days=30)
    led.bodies.prune(keep_days=30, now=now + timedelta(days=31))
    # The commands about one invoice (show, history, retry) and export.
    lookup = led.lookup
    lookup.find("K1", sources=["s", "t"], profiles=["p"])
    lookup.find("K1", sources=["s"], profiles=["p"], source="s")
    lookup.versions("s", "K1")
    list(lookup.final_between(now - timedelta(days=1), now + timedelta(days=1)))
    # A cancel: a request recorded, the stage's read of what waits (every cycle), its attempt,
    # a refusal, and the advice's look-up of the notes' numbers.
    cancels = led.cancels
    target = cancels.target("s", "K0")
    assert target is not None and cancels.request(target.id, "wrong price")
    [waiting] = cancels.waiting("p")
    assert cancels.claim_attempt(waiting)
    cancels.get(waiting.id)
    cancels.numbers_of(["U-K2"])
    cancels.check_due_now(sub, now)
    assert cancels.refused(waiting.id, {"code": "OperationPeriodOver", "advice": "issue a credit note instead"})
    cancels.refused_locally(waiting.id, {"code": "OperationPeriodOver", "advice": "issue a credit note instead"})
    cancels.offer_again(waiting.id)


def captured_statements(led: Ledger) -> list[tuple[str, object]]:
    seen: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, executemany):
        if statement.lstrip().split(None, 1)[0].upper() in ("SELECT", "UPDATE", "DELETE", "WITH"):
            seen.append((statement, parameters[0] if executemany else parameters))

    event.listen(led.engine, "before_cursor_execute", capture)
    try:
        one_cycle_of_everything(led)
    finally:
        event.remove(led.engine, "before_cursor_execute", capture)
    return [s for s in seen if any(re.search(rf"\b{t}\b", s[0]) for t in WATCHED)]


def full_reads(led: Ledger, statement: str, parameters) -> list[str]:
    with led.engine.connect() as conn:
        if led.engine.dialect.name == "sqlite":
            rows = conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()
            return [r[-1] for r in rows if re.match(rf"SCAN ({'|'.join(WATCHED)})\b", r[-1])]
        conn.exec_driver_sql("SET enable_seqscan = off")
        (plan,) = conn.exec_driver_sql(f"EXPLAIN (FORMAT JSON) {statement}", parameters).one()
        plan = plan if isinstance(plan, list) else json.loads(plan)
        return [f"{n['Node Type']} on {n['Relation Name']}" for n in _nodes(plan[0]["Plan"]) if _reads_whole(n)]


def _nodes(node):
    yield node
    for child in node.get("Plans", []):
        yield from _nodes(child)


def _reads_whole(node) -> bool:
    if node.get("Relation Name") not in WATCHED:
        return False
    if node["Node Type"] == "Seq Scan":
        return True
    return node["Node Type"] in ("Index Scan", "Index Only Scan", "Bitmap Heap Scan") and not (
        node.get("Index Cond") or node.get("Recheck Cond")
    )


def test_every_statement_of_a_cycle_reads_through_an_index(ledger):
    statements = captured_statements(ledger)
    assert len(statements) > 30  # the capture saw the cycle, not nothing
    offenders = {}
    for statement, parameters in statements:
        found = full_reads(ledger, statement, parameters)
        if found:
            offenders[" ".join(statement.split())[:300]] = found
    assert offenders == {}


def test_the_check_itself_sees_a_full_scan(ledger):
    """A statement that must read the whole table is reported: the test above can fail."""
    with ledger.engine.connect() as conn:
        compiled = select(func.count()).select_from(documents).where(documents.c.number.like("%X")).compile(conn)
        statement = str(compiled)
        params = compiled.params if ledger.engine.dialect.name != "sqlite" else tuple(compiled.params.values())
    assert full_reads(ledger, statement, params)


def test_counts_after_every_cycle_stay_exact_when_documents_become_final_later(ledger, monkeypatch):
    """The documents gauge counts final documents once, then only those final since: the
    totals equal a full count at every step."""
    monkeypatch.setattr(queries, "_SETTLED", timedelta(0))  # every call moves the mark to now

    def full_count() -> dict[str, int]:
        with ledger.engine.connect() as conn:
            return dict(conn.execute(select(documents.c.state, func.count()).group_by(documents.c.state)).all())

    ledger.intake.record_fetched(source="s", profile="p", items=[item(f"K{i}") for i in range(4)])
    assert ledger.status.version_counts_by_state() == full_count() == {"pending": 4}
    pending = ledger.sends.pending_documents("p", 100)
    now = datetime.now(UTC).replace(microsecond=0)
    built = [BuiltDocument(d.id, d.number, d.fingerprint, "{}", "h" * 64, now, fresh=True) for d in pending]
    sub = ledger.sends.claim(profile="p", built=built).submission_id
    assert sub is not None
    ledger.sends.submission_accepted(
        sub, submission_uid="S", accepted=[(f"K{i}", f"U{i}") for i in range(3)], rejected=[("K3", ["x"], [])],
        next_poll_at=None,
    )  # fmt: skip
    assert ledger.status.version_counts_by_state() == full_count() == {"submitted": 3, "rejected": 1}
    for uuid in ("U0", "U1"):
        ledger.polls.record_poll(
            sub, overall_status="InProgress", updates=[DocumentStatusUpdate(uuid=uuid, state=DocumentState.VALID)],
            next_poll_at=None,
        )  # fmt: skip
        assert ledger.status.version_counts_by_state() == full_count()
    assert ledger.status.version_counts_by_state() == {"valid": 2, "submitted": 1, "rejected": 1}
    assert ledger.status.version_counts_by_state(profile="p") == {"valid": 2, "submitted": 1, "rejected": 1}
    assert ledger.status.version_counts_by_state(profile="other") == {}


# --- the same cycle on a ledger with a long history costs the same ----------------------------

HISTORY = 3000


def add_history(led: Ledger, count: int = HISTORY) -> None:
    """``count`` documents of the same source and profile, validated and written back two
    months ago (with their submissions): what a ledger that has run for a while mostly holds."""
    from connector_core.ledger.schema import submissions

    long_ago = datetime.now(UTC) - timedelta(days=60)
    with led.engine.begin() as conn:
        conn.execute(
            submissions.insert(),
            [
                {"id": 1_000_000 + s, "profile": "p", "state": "done", "submission_uid": f"OLD{s}", "payload_hash": "",
                 "document_count": 100, "created_at": long_ago, "poll_count": 1, "reconcile_attempts": 0}
                for s in range(count // 100)
            ],
        )  # fmt: skip
        conn.execute(
            documents.insert(),
            [
                {"source": "s", "source_key": f"H{i}", "version": 1, "fingerprint": "f" * 64, "profile": "p",
                 "number": f"H{i}", "document_type": "01", "state": "valid", "document_hash": "h" * 64,
                 "submission_id": 1_000_000 + i // 100, "uuid": f"OLD-U{i}", "long_id": "L", "attempts": 1,
                 "fetched_at": long_ago, "updated_at": long_ago, "submitted_at": long_ago, "final_at": long_ago,
                 "reported_at": long_ago, "refused_as_batch": False, "report_attempts": 0}
                for i in range(count)
            ],
        )  # fmt: skip
    if led.engine.dialect.name == "postgresql":
        # PostgreSQL analyses its tables by itself (autovacuum), with the most common values of
        # each column: it knows 'pending' is rare. The connector never analyses a SQLite ledger,
        # whose statistics (one average per index) would tell SQLite that a state matches a
        # third of the table (docs/operations.md says not to).
        with led.engine.begin() as conn:
            conn.exec_driver_sql("ANALYZE")
    # What runs once per process (the first count of final documents, the first pruning), before
    # the cycle that is measured.
    led.status.version_counts_by_state()
    led.bodies.prune(keep_days=30)
    led.bodies.prune(keep_days=30, now=datetime.now(UTC) + timedelta(days=31))


def sqlite_work(led: Ledger, run=one_cycle_of_everything) -> list[tuple[str, int]]:
    """(statement, thousands of SQLite VM steps it took, fetching included) for the cycle."""
    work: list[list] = []

    def step() -> int:
        if work:
            work[-1][1] += 1
        return 0

    def started(_conn, cursor, statement, _parameters, _context, _executemany):
        cursor.connection.set_progress_handler(step, 1000)
        work.append([" ".join(statement.split())[:200], 0])

    event.listen(led.engine, "before_cursor_execute", started)
    try:
        run(led)
    finally:
        event.remove(led.engine, "before_cursor_execute", started)
    return [(s, n) for s, n in work if any(re.search(rf"\b{t}\b", s) for t in WATCHED)]


def postgres_rows_read(led: Ledger) -> list[tuple[str, int]]:
    """(statement, rows its plan read from documents and submissions), measured by EXPLAIN
    ANALYZE in a transaction that is rolled back."""
    out = []
    for statement, parameters in captured_statements(led):
        with led.engine.connect() as conn:
            with conn.begin() as transaction:
                (plan,) = conn.exec_driver_sql(f"EXPLAIN (ANALYZE, FORMAT JSON) {statement}", parameters).one()
                transaction.rollback()
        plan = plan if isinstance(plan, list) else json.loads(plan)
        read = sum(
            (n.get("Actual Rows", 0) + n.get("Rows Removed by Filter", 0)) * n.get("Actual Loops", 1)
            for n in _nodes(plan[0]["Plan"])
            if n.get("Relation Name") in WATCHED
        )
        out.append((" ".join(statement.split())[:200], read))
    return out


def test_a_cycle_costs_the_same_on_a_ledger_with_a_long_history(ledger, tmp_path):
    if ledger.engine.dialect.name == "sqlite":
        # The baseline has a short history, so that both run the same statements (a bookmark
        # of the pruning exists in both, for one).
        fresh = Ledger(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
        try:
            add_history(fresh, 100)
            baseline = sqlite_work(fresh)
        finally:
            fresh.close()
        add_history(ledger)
        measured = sqlite_work(ledger)
        assert [s for s, _ in measured] == [s for s, _ in baseline]  # the same cycle
        # A read of the history costs at least a few VM steps per row: tens of thousands here.
        grown = {
            s: (before, after) for (s, before), (_, after) in zip(baseline, measured, strict=True) if after > before + 5
        }
        assert grown == {}
    else:
        add_history(ledger)
        read = postgres_rows_read(ledger)
        assert len(read) > 30
        assert {s: n for s, n in read if n >= HISTORY // 10} == {}


def test_recording_a_full_page_costs_the_same_on_a_ledger_with_a_long_history(tmp_path):
    """A page of more invoices than there are states that hold a number: asked for
    ``state IN (…)`` beside the page's numbers, SQLite (no statistics) looked the holders up
    through ix_documents_state_profile and read every valid document of the profile on every
    page. The cycle above records pages of four or fewer and did not show it."""

    def record_a_page(led: Ledger) -> None:
        led.intake.record_fetched(source="s", profile="p", items=[item(f"N{i}") for i in range(50)])

    fresh = Ledger(f"sqlite:///{tmp_path / 'fresh.sqlite'}")
    long = Ledger(f"sqlite:///{tmp_path / 'long.sqlite'}")
    try:
        add_history(fresh, 100)
        add_history(long)
        baseline, measured = sqlite_work(fresh, record_a_page), sqlite_work(long, record_a_page)
    finally:
        fresh.close()
        long.close()
    assert [s for s, _ in measured] == [s for s, _ in baseline] and len(measured) >= 2
    grown = {
        s: (before, after) for (s, before), (_, after) in zip(baseline, measured, strict=True) if after > before + 1
    }
    assert grown == {}


def test_every_per_document_update_finds_its_row_by_primary_key(tmp_path):
    """An UPDATE run once per document (an executemany) names its row by ``id``. By a uuid and
    its owner alone, SQLite (no statistics) chose ix_documents_submission_id for the poll's
    outcomes and read the submission's hundred rows for each one: an index read, so the test
    above passes it, but a hundred times the work."""
    led = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    many: list[tuple[str, object]] = []

    def capture(_conn, _cursor, statement, parameters, _context, executemany):
        if executemany and re.match(r"\s*UPDATE documents\b", statement):
            many.append((statement, parameters[0]))

    event.listen(led.engine, "before_cursor_execute", capture)
    try:
        one_cycle_of_everything(led)
    finally:
        event.remove(led.engine, "before_cursor_execute", capture)
    assert len(many) >= 3  # the claim, the 202's uuids, the poll's outcomes
    offenders = {}
    with led.engine.connect() as conn:
        for statement, parameters in many:
            plan = [r[-1] for r in conn.exec_driver_sql(f"EXPLAIN QUERY PLAN {statement}", parameters).all()]
            if not any("INTEGER PRIMARY KEY" in step for step in plan):
                offenders[" ".join(statement.split())[:200]] = plan
    led.close()
    assert offenders == {}
