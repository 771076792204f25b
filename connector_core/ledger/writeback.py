"""Write-back: final outcomes not yet taken by the ERP, and what became of each offer.

An outcome the ERP refuses (a closed period, a trigger, a constraint) must not hold back the
others: it is retried on its own with back-off (``next_report_at``) and named in ``status``.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import or_, select, update

from connector_core.contract import DocumentOutcome, DocumentState
from connector_core.ledger import states
from connector_core.ledger.database import LedgerPart, as_utc, chunks, iso, utcnow
from connector_core.ledger.schema import documents, submissions

_OUTCOME_COLUMNS = tuple(
    documents.c[name]
    for name in (
        "source_key", "number", "version", "state", "uuid", "long_id", "validation_link",
        "errors", "error_details", "document_type", "final_at", "fetched_at",
        "status_reason", "event_at", "watch_until", "cancel_error",
    )
)  # fmt: skip
#: States whose document MyInvois may still cancel: their outcome says until when.
_CANCELLABLE = frozenset({DocumentState.VALID, DocumentState.REJECTION_REQUESTED})


class WriteBack(LedgerPart):
    def unreported_outcomes(
        self, source: str, limit: int, now: datetime | None = None, *, watch_margin: timedelta = timedelta(0)
    ) -> list[tuple[int, DocumentOutcome]]:
        """Final outcomes of ``source`` not yet written back and not waiting out a back-off.

        ``watch_margin``: what the watch adds to the cancellation window (``watch_until`` is
        its end plus the margin), taken off again for the outcome's ``cancellable_until``."""
        now = now or utcnow()
        with self.engine.connect() as conn:
            rows = conn.execute(
                # Only what an outcome carries: the invoice JSON and the built document are the
                # bulk of a row (several KB each) and a write-back of 500 needs neither.
                select(documents.c.id, *_OUTCOME_COLUMNS, submissions.c.submission_uid)
                .join(submissions, documents.c.submission_id == submissions.c.id, isouter=True)
                .where(
                    documents.c.source == source,
                    documents.c.reported_at.is_(None),
                    documents.c.state.in_(list(states.FINAL)),
                    or_(documents.c.next_report_at.is_(None), documents.c.next_report_at <= now),
                )
                .order_by(documents.c.id)
                .limit(limit)
            )
            return [(r.id, outcome_of(r, watch_margin)) for r in rows]

    def mark_reported(self, doc_ids: Sequence[int], *, offered: Mapping[int, str] | None = None) -> None:
        """The ERP took these outcomes. ``offered``: the state each one was offered in; a row
        that moved on meanwhile (the watch found a rejection request, a cancel ended) keeps its
        news unreported, to be offered next."""
        now = utcnow()
        by_state: dict[str | None, list[int]] = {}
        for doc_id in doc_ids:
            by_state.setdefault(offered.get(doc_id) if offered is not None else None, []).append(doc_id)
        with self.engine.begin() as conn:
            for state, ids in by_state.items():
                same_state = [documents.c.state == state] if state is not None else []
                for chunk in chunks(ids):
                    conn.execute(
                        update(documents)
                        .where(documents.c.id.in_(chunk), documents.c.reported_at.is_(None), *same_state)
                        .values(reported_at=now, report_attempts=0, report_error=None, next_report_at=None)
                    )

    def report_failed(self, doc_id: int, error: str, *, first_delay: float, max_delay: float) -> tuple[int, float]:
        """The ERP refused this one outcome: keep why, and offer it again after a back-off that
        doubles with each failure; returns (failures so far, seconds until the next offer)."""
        with self.engine.begin() as conn:
            before = int(
                conn.execute(select(documents.c.report_attempts).where(documents.c.id == doc_id)).scalar() or 0
            )
            delay = min(max_delay, first_delay * 2**before)
            conn.execute(
                update(documents)
                .where(documents.c.id == doc_id, documents.c.reported_at.is_(None))
                .values(
                    report_attempts=documents.c.report_attempts + 1,
                    report_error=error[:2000],
                    next_report_at=utcnow() + timedelta(seconds=delay),
                )
            )
            return before + 1, delay

    def failing_outcomes(self, limit: int = 20) -> list[dict[str, Any]]:
        """Outcomes the ERP keeps refusing, newest failure first."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    documents.c.source, documents.c.source_key, documents.c.number, documents.c.version, documents.c.state,
                    documents.c.report_attempts, documents.c.report_error, documents.c.next_report_at,
                )
                .where(documents.c.reported_at.is_(None), documents.c.report_attempts > 0)
                .order_by(documents.c.next_report_at.desc())
                .limit(limit)
            )  # fmt: skip
            return [
                {
                    "source": r.source,
                    "row": r.source_key,
                    "invoice": r.number,
                    "version": r.version,
                    "state": r.state,
                    "attempts": r.report_attempts,
                    "error": r.report_error,
                    "next_try": iso(r.next_report_at),
                }
                for r in rows
            ]


def outcome_of(row, watch_margin: timedelta = timedelta(0)) -> DocumentOutcome:
    state = DocumentState(row.state)
    watch_until = as_utc(row.watch_until)
    return DocumentOutcome(
        source_key=row.source_key,
        number=row.number,
        version=row.version,
        state=state,
        uuid=row.uuid,
        long_id=row.long_id,
        submission_uid=row.submission_uid,
        validation_link=row.validation_link,
        errors=json.loads(row.errors) if row.errors else [],
        error_details=json.loads(row.error_details) if row.error_details else [],
        document_type=row.document_type,
        final_at=as_utc(row.final_at),
        fetched_at=as_utc(row.fetched_at),
        reason=row.status_reason,
        event_at=as_utc(row.event_at),
        cancellable_until=watch_until - watch_margin if watch_until and state in _CANCELLABLE else None,
        cancel_error=cancel_advice(row.cancel_error),
    )


def cancel_advice(raw: str | None) -> list[str]:
    """The refusal of our last cancel (``documents.cancel_error``, JSON written by the cancel
    stage) as the lines the ERP shows: what MyInvois said and what the clerk can do."""
    if not raw:
        return []
    try:
        error = json.loads(raw)
    except ValueError:
        return [raw]
    if isinstance(error, dict):
        advice = error.get("advice") or error.get("message") or ""
        code = error.get("code")
        return [f"{code}: {advice}" if code else str(advice)] if advice or code else []
    if isinstance(error, list):
        return [str(item) for item in error]
    return [str(error)]
