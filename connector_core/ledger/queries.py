"""Read-only questions about the ledger, for ``status``, ``run --once``, metrics and health."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterable
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, or_, select

from connector_core.ledger import states
from connector_core.ledger.database import LedgerPart, as_utc, iso, utcnow
from connector_core.ledger.journal import FINAL_STATE_LEFT, counter_in
from connector_core.ledger.schema import document_bodies, documents, submissions
from connector_core.ledger.states import SubmissionState

_OPEN = sorted(states.OPEN)
_FINAL = list(states.FINAL)
#: Write-back failures after which ``run --once`` stops waiting for an outcome: it needs the
#: ERP's administrator, and it is named in the summary and in ``status``.
GIVE_UP_WAITING_AFTER_REPORT_FAILURES = 3
#: Final states in which an invoice waits for a clerk (``run --once`` exits "needs attention").
_NEEDS_ATTENTION = [
    states.D.INVALID.value,
    states.D.REJECTED.value,
    states.D.LOCALLY_INVALID.value,
    states.D.CHANGED_AFTER_VALID.value,
]


_OLDEST_FETCHED = select(func.min(documents.c.fetched_at)).where(documents.c.state == bindparam("state"))


def _only_final(rows) -> dict[str, int]:
    """(state, count) rows -> counts of the final states (a held edit may carry a final_at)."""
    return {state: n for state, n in rows if state in states.FINAL}


def _is_latest_version(row: Any = documents) -> Any:
    """Condition: ``row`` is its invoice's latest version (no row of the same invoice, i.e.
    source and source key, has a higher version). An older version's outcome stays in the
    ledger as history, but it is no longer what the invoice is: after a correction is
    validated as version 2, version 1's errors need nobody's attention."""
    newer = documents.alias("newer")
    return ~(
        select(newer.c.id)
        .where(newer.c.source == row.c.source, newer.c.source_key == row.c.source_key, newer.c.version > row.c.version)
        .exists()
    )


#: How far behind the clock the running total of final documents stays: far longer than any
#: transaction that makes documents final takes to commit.
_SETTLED = timedelta(minutes=10)


class Status(LedgerPart):
    def __init__(self, engine, sender) -> None:
        super().__init__(engine, sender)
        # Per profile filter (None: all): (mark, final documents by state up to the mark, the
        # FINAL_STATE_LEFT counter when they were counted).
        self._final_known: dict[str | None, tuple[datetime, dict[str, int], int]] = {}
        self._counts_lock = threading.Lock()

    def counts_by_state(self, profile: str | None = None) -> dict[str, int]:
        """Invoices by the state of their latest version: what ``status`` and the ``run --once``
        summary show, one count per invoice however often it was corrected."""
        stmt = select(documents.c.state, func.count()).where(_is_latest_version()).group_by(documents.c.state)
        if profile is not None:
            stmt = stmt.where(documents.c.profile == profile)
        with self.engine.connect() as conn:
            return dict(conn.execute(stmt).all())

    def version_counts_by_state(self, profile: str | None = None) -> dict[str, int]:
        """Every version of every invoice by state (``status --by-version``): a corrected
        invoice counts once per version, its superseded outcomes included.

        Run after every cycle (the documents gauge, ``run --once``'s progress), so it does not
        count the whole table each time: open documents are counted (an index range, as long as
        the backlog), and final ones once, then only those final since (a final state is never
        left, but for the few moves after Valid, which make it count afresh)."""
        open_stmt = select(documents.c.state, func.count()).where(documents.c.state.in_(_OPEN))
        if profile is not None:
            open_stmt = open_stmt.where(documents.c.profile == profile)
        with self.engine.connect() as conn:
            counts = dict(conn.execute(open_stmt.group_by(documents.c.state)).all())
            final = self._final_counts(conn, profile)
        counts.update({state: n for state, n in final.items() if n})
        return {state: n for state, n in counts.items() if n}

    def _final_counts(self, conn, profile: str | None) -> dict[str, int]:
        """Final documents by state: a running total up to a mark kept ``_SETTLED`` behind the
        clock (a transaction that made a document final and commits late still lands after the
        mark), plus those final after the mark, read through ix_documents_final_at."""
        mark = utcnow() - _SETTLED
        by_state = select(documents.c.state, func.count()).group_by(documents.c.state)
        if profile is not None:
            by_state = by_state.where(documents.c.profile == profile)
        with self._counts_lock:
            known = self._final_known.get(profile)
            # A document that left a final state after Valid (a rejection request, a cancel)
            # would stay counted in the state it had when it was added to the total: count
            # again from scratch when any did, since the last count. That is rare (a buyer's
            # rejection, a cancellation); the running total is kept for everything else.
            left = counter_in(conn, FINAL_STATE_LEFT)
            if known is not None and known[2] != left:
                known = None
            if known is None:
                # Once per process: every final document up to the mark (or without a time).
                settled = _only_final(
                    conn.execute(
                        by_state.where(
                            documents.c.state.in_(_FINAL),
                            or_(documents.c.final_at <= mark, documents.c.final_at.is_(None)),
                        )
                    )
                )
            else:
                since, settled, _ = known
                if mark > since:
                    # No condition on the state in SQL, here and below: final_at alone keeps
                    # the read on the index range; the states are sorted out in Python.
                    newly = _only_final(
                        conn.execute(by_state.where(documents.c.final_at > since, documents.c.final_at <= mark))
                    )
                    settled = {s: settled.get(s, 0) + newly.get(s, 0) for s in set(settled) | set(newly)}
                else:
                    mark = since
            self._final_known[profile] = (mark, settled, left)
        # Bounded above too, or SQLite reads a whole index to group without sorting. A row
        # stamped later than that (a clock far ahead) is counted once the mark passes it.
        horizon = utcnow() + _SETTLED
        recent = _only_final(conn.execute(by_state.where(documents.c.final_at > mark, documents.c.final_at <= horizon)))
        return {state: settled.get(state, 0) + recent.get(state, 0) for state in set(settled) | set(recent)}

    def submission_counts(self, *, open_only: bool = False) -> dict[str, int]:
        """Submissions by state. ``open_only``: only the states not at the end of a
        submission's life (the monitoring gauge, run after every cycle): an index range instead
        of a count of every submission ever made."""
        stmt = select(submissions.c.state, func.count())
        if open_only:
            stmt = stmt.where(submissions.c.state.in_([s.value for s in SubmissionState if not s.is_final]))
        with self.engine.connect() as conn:
            return dict(conn.execute(stmt.group_by(submissions.c.state)).all())

    def unfinished_count(self, *, exclude_profiles: Iterable[str] = ()) -> int:
        """Documents not final yet, plus final ones not yet written back; leaving out what only
        an operator can move on: documents of escalated submissions, and outcomes the ERP
        keeps refusing. Counts the whole backlog: for a summary, not for every loop (see
        :meth:`has_unfinished`)."""
        open_cond, unreported_cond = self._unfinished_conditions(exclude_profiles)
        with self.engine.connect() as conn:
            open_docs = conn.execute(select(func.count()).select_from(documents).where(open_cond)).scalar()
            unreported = conn.execute(select(func.count()).select_from(documents).where(unreported_cond)).scalar()
        return int(open_docs or 0) + int(unreported or 0)

    def has_unfinished(self, *, exclude_profiles: Iterable[str] = ()) -> bool:
        """Whether :meth:`unfinished_count` would be above 0, found by the first such row:
        ``run --once`` asks on every loop, and counting a backlog of a million there cost more
        CPU than the documents themselves. Open documents are looked for first (while any is
        left, the unreported ones need not be); once none is, the rows without a write-back are
        only the few final ones not yet reported."""
        open_cond, unreported_cond = self._unfinished_conditions(exclude_profiles)
        with self.engine.connect() as conn:
            for cond in (open_cond, unreported_cond):
                if conn.execute(select(documents.c.id).where(cond).limit(1)).first() is not None:
                    return True
        return False

    def _unfinished_conditions(self, exclude_profiles: Iterable[str]) -> tuple[Any, Any]:
        excluded = list(exclude_profiles)
        escalated = select(submissions.c.id).where(submissions.c.state == SubmissionState.ESCALATED.value)
        open_cond = and_(
            documents.c.state.in_(_OPEN),
            or_(documents.c.submission_id.is_(None), documents.c.submission_id.notin_(escalated)),
        )
        unreported_cond = and_(
            documents.c.state.in_(_FINAL),
            documents.c.reported_at.is_(None),
            documents.c.report_attempts < GIVE_UP_WAITING_AFTER_REPORT_FAILURES,
        )
        if excluded:
            open_cond = and_(open_cond, documents.c.profile.notin_(excluded))
            unreported_cond = and_(unreported_cond, documents.c.profile.notin_(excluded))
        return open_cond, unreported_cond

    def oldest_pending_fetched_at(self) -> datetime | None:
        """When the oldest document not final yet was fetched. Run after every cycle: one index
        seek per open state (ix_documents_state_fetched_at), where a MIN over ``state IN (...)``
        read every open row, or on some plans the whole table."""
        with self.engine.connect() as conn:
            oldest = [conn.execute(_OLDEST_FETCHED, {"state": state}).scalar() for state in _OPEN]
        found = [as_utc(at) for at in oldest if at is not None]
        return min(found) if found else None

    def stuck_submissions(self, accepted_before: datetime) -> list[tuple[str, list[str], float]]:
        """Submissions MyInvois accepted before ``accepted_before`` and still has not finished
        validating: (profile, submission uids, age in seconds of the oldest)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(submissions.c.profile, submissions.c.submission_uid, submissions.c.accepted_at)
                .where(
                    submissions.c.state == SubmissionState.ACCEPTED.value, submissions.c.accepted_at < accepted_before
                )
                .order_by(submissions.c.accepted_at)
            ).all()
        now = utcnow()
        out: dict[str, tuple[list[str], float]] = {}
        for r in rows:
            uids, age = out.get(r.profile, ([], 0.0))
            uids.append(r.submission_uid)
            out[r.profile] = (uids, max(age, (now - as_utc(r.accepted_at)).total_seconds()))
        return [(profile, uids, age) for profile, (uids, age) in out.items()]

    def escalated_submissions(self, limit: int = 20) -> list[dict[str, Any]]:
        """In-doubt submissions the connector stopped reconciling: an operator decides."""
        with self.engine.connect() as conn:
            subs = conn.execute(
                select(submissions)
                .where(submissions.c.state == SubmissionState.ESCALATED.value)
                .order_by(submissions.c.id.desc())
                .limit(limit)
            ).all()
            out = []
            for s in subs:
                numbers = [
                    r.number
                    for r in conn.execute(
                        select(documents.c.number)
                        .where(documents.c.submission_id == s.id)
                        .order_by(documents.c.id)
                        .limit(10)
                    )
                ]
                out.append(
                    {
                        "submission": s.id,
                        "profile": s.profile,
                        "documents": s.document_count,
                        "invoices": numbers,
                        "first_sent": iso(s.first_sent_at or s.sent_at),
                        "attempts": s.reconcile_attempts,
                        "reason": s.error,
                    }
                )
            return out

    def needs_attention_count(self) -> int:
        """Invoices whose latest version is final in a state a clerk must act on: refused by
        MyInvois or locally (a number conflict included), or changed after validation; and
        invoices of escalated submissions, which no stage will move again until an operator has
        looked them up on the portal. An invoice corrected since, and sent again, no longer counts."""
        stmt = (
            select(func.count())
            .select_from(documents)
            .where(documents.c.state.in_(_NEEDS_ATTENTION), _is_latest_version())
        )
        # Few rows: escalated submissions are rare, and documents are found by submission_id.
        escalated = (
            select(func.count())
            .select_from(documents.join(submissions, documents.c.submission_id == submissions.c.id))
            .where(submissions.c.state == states.S.ESCALATED.value, documents.c.state == states.D.SUBMITTING.value)
        )
        with self.engine.connect() as conn:
            return int(conn.execute(stmt).scalar() or 0) + int(conn.execute(escalated).scalar() or 0)

    def latest_errors(self, limit: int = 10) -> list[dict[str, Any]]:
        """Errors to correct in the ERP, newest first: invoices whose latest version ended
        with errors. An invoice corrected since (a newer version pending, sent or valid) is
        not listed: its old errors are history, not work."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    documents.c.source,
                    documents.c.number,
                    documents.c.version,
                    documents.c.state,
                    documents.c.errors,
                    documents.c.final_at,
                )
                .where(documents.c.errors.is_not(None), documents.c.state.in_(_FINAL), _is_latest_version())
                .order_by(documents.c.updated_at.desc(), documents.c.id.desc())
                .limit(limit)
            )
            return [
                {
                    "source": r.source,
                    "invoice": r.number,
                    "version": r.version,
                    "state": r.state,
                    "errors": json.loads(r.errors),
                    "at": iso(r.final_at),
                }
                for r in rows
            ]

    def find_documents(self, *, source: str | None = None, number: str | None = None) -> list[dict[str, Any]]:
        """Every column of the matching rows, with ``invoice_json`` and ``document`` from their
        body (None once pruned). For tools and tests, never per cycle."""
        stmt = (
            select(documents, document_bodies.c.invoice_json, document_bodies.c.document)
            .select_from(documents.outerjoin(document_bodies, document_bodies.c.document_id == documents.c.id))
            .order_by(documents.c.id)
        )
        if source is not None:
            stmt = stmt.where(documents.c.source == source)
        if number is not None:
            stmt = stmt.where(documents.c.number == number)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def find_submissions(self, *, profile: str | None = None) -> list[dict[str, Any]]:
        stmt = select(submissions).order_by(submissions.c.id)
        if profile is not None:
            stmt = stmt.where(submissions.c.profile == profile)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]
