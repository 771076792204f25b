"""Our own cancellations: what the ledger records before, during and after a cancel call.

A cancel changes a document at MyInvois, so it follows the ledger's rule "persist before you
act, record after":

1. :meth:`Cancels.request` moves the validated document to ``cancelling`` with the reason
   and the time asked (``request_cancel``), before anything is sent;
2. :meth:`Cancels.claim_attempt` counts the attempt (``cancel_attempts``) as a compare-and-set
   on the count seen, so two connectors sharing the ledger never both send the same cancel;
3. the answer moves it on: ``cancel_confirmed`` (cancelled), ``cancel_refused`` /
   ``cancel_refused_rejection`` (back to what it was, with ``cancel_error``); a lost answer
   leaves it ``cancelling`` until Get Submission says what became of it.

Every outcome that is news for the ERP clears ``reported_at``, so the write-back offers it
through ``on_submission_result``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import select, update
from sqlalchemy.engine import Connection

from connector_core.contract import DocumentState
from connector_core.ledger import states
from connector_core.ledger.database import LedgerPart, as_utc, utcnow
from connector_core.ledger.journal import FINAL_STATE_LEFT, increment_in
from connector_core.ledger.schema import documents, submissions

D = DocumentState

#: States in which the invoice's document was validated by MyInvois: the version a cancel is about.
VALIDATED = (D.VALID.value, D.REJECTION_REQUESTED.value, D.CANCELLING.value, D.CANCELLED.value)
#: What a cancel may start from.
CANCELLABLE = (D.VALID.value, D.REJECTION_REQUESTED.value)
#: News for the ERP: the write-back offers the row again.
_REPORT_AGAIN = {"reported_at": None, "report_attempts": 0, "report_error": None, "next_report_at": None}


@dataclass(frozen=True)
class CancelTarget:
    """The document a cancel of one ERP invoice is about, as the ledger knows it."""

    id: int
    source: str
    source_key: str
    number: str
    version: int
    state: str
    profile: str
    uuid: str | None
    submission_id: int | None
    submission_uid: str | None
    watch_until: datetime | None
    event_at: datetime | None
    cancel_reason: str | None
    cancel_attempts: int
    cancel_requested_at: datetime | None

    def describe(self) -> str:
        return f"{self.number} (source {self.source}, key {self.source_key}, v{self.version})"


_TARGET_COLUMNS = (
    documents.c.id,
    documents.c.source,
    documents.c.source_key,
    documents.c.number,
    documents.c.version,
    documents.c.state,
    documents.c.profile,
    documents.c.uuid,
    documents.c.submission_id,
    submissions.c.submission_uid,
    documents.c.watch_until,
    documents.c.event_at,
    documents.c.cancel_reason,
    documents.c.cancel_attempts,
    documents.c.cancel_requested_at,
)


def _target(row: Any) -> CancelTarget:
    return CancelTarget(
        id=row.id,
        source=row.source,
        source_key=row.source_key,
        number=row.number,
        version=row.version,
        state=row.state,
        profile=row.profile,
        uuid=row.uuid,
        submission_id=row.submission_id,
        submission_uid=row.submission_uid,
        watch_until=as_utc(row.watch_until),
        event_at=as_utc(row.event_at),
        cancel_reason=row.cancel_reason,
        cancel_attempts=int(row.cancel_attempts or 0),
        cancel_requested_at=as_utc(row.cancel_requested_at),
    )


def _targets():
    return select(*_TARGET_COLUMNS).select_from(
        documents.outerjoin(submissions, submissions.c.id == documents.c.submission_id)
    )


class Cancels(LedgerPart):
    """The cancel stage's reads and writes."""

    def target(self, source: str, source_key: str) -> CancelTarget | None:
        """The document a cancel of this invoice is about: its newest validated version (a
        later version may exist, edited after validation, but the validated one is what stands
        at MyInvois), else its latest version; None when the ledger never recorded it."""
        stmt = _targets().where(documents.c.source == source, documents.c.source_key == source_key)
        with self.engine.connect() as conn:
            rows = [_target(r) for r in conn.execute(stmt.order_by(documents.c.version.desc()))]
        validated = [r for r in rows if r.state in VALIDATED]
        chosen = validated or rows
        return chosen[0] if chosen else None

    def get(self, doc_id: int) -> CancelTarget | None:
        with self.engine.connect() as conn:
            row = conn.execute(_targets().where(documents.c.id == doc_id)).first()
        return _target(row) if row is not None else None

    def request(self, doc_id: int, reason: str, now: datetime | None = None) -> bool:
        """Record the request: ``valid``/``rejection_requested`` → ``cancelling``, before any
        call. False when the document was no longer cancellable (another writer moved it)."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            moved = states.move(
                conn,
                states.doc("request_cancel"),
                documents.c.id == doc_id,
                values={
                    "cancel_reason": reason,
                    "cancel_requested_at": now,
                    "cancel_attempts": 0,
                    "cancel_error": None,
                    "updated_at": now,
                },
            )
            if moved.won:
                increment_in(conn, FINAL_STATE_LEFT)
        return moved.won

    def waiting(self, profile: str, limit: int = 100) -> list[CancelTarget]:
        """Documents of ``profile`` being cancelled, oldest request first."""
        stmt = (
            _targets()
            .where(documents.c.state == D.CANCELLING.value, documents.c.profile == profile)
            .order_by(documents.c.cancel_requested_at, documents.c.id)
            .limit(limit)
        )
        with self.engine.connect() as conn:
            return [_target(r) for r in conn.execute(stmt)]

    def claim_attempt(self, target: CancelTarget, now: datetime | None = None) -> bool:
        """Count one more call for ``target``, if no one else counted one since it was read.

        ``cancel_requested_at`` becomes the time of this attempt: a later reader tells an
        attempt still in flight (recent) from one whose connector stopped (old)."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            count = conn.execute(
                update(documents)
                .where(
                    documents.c.id == target.id,
                    documents.c.state == D.CANCELLING.value,
                    documents.c.cancel_attempts == target.cancel_attempts,
                )
                .values(cancel_attempts=target.cancel_attempts + 1, cancel_requested_at=now, updated_at=now)
            ).rowcount
        return bool(count)

    def not_sent(self, doc_id: int) -> None:
        """The attempt certainly never reached MyInvois (throttled, login refused, the rate
        backend down): uncount it, so the next cycle sends it without a check first."""
        with self.engine.begin() as conn:
            conn.execute(
                update(documents)
                .where(
                    documents.c.id == doc_id, documents.c.state == D.CANCELLING.value, documents.c.cancel_attempts > 0
                )
                .values(cancel_attempts=documents.c.cancel_attempts - 1)
            )

    def confirmed(self, doc_id: int, reason: str | None, now: datetime | None = None) -> bool:
        """MyInvois cancelled it (its answer, or Get Submission after a lost answer)."""
        now = now or utcnow()
        with self.engine.begin() as conn:
            moved = states.move(
                conn,
                states.doc("cancel_confirmed"),
                documents.c.id == doc_id,
                values={
                    "status_reason": reason,
                    "event_at": now,
                    "final_at": now,
                    "updated_at": now,
                    "cancel_error": None,
                    # Nothing can happen to it any more: no longer watched (as the watch does).
                    "watch_until": None,
                    **_REPORT_AGAIN,
                },
            )
            if moved.won:
                increment_in(conn, FINAL_STATE_LEFT)
        return moved.won

    def refused(self, doc_id: int, error: dict[str, Any], now: datetime | None = None) -> bool:
        """MyInvois refused the cancel: back to what it was (a rejection request, if the buyer
        had made one: ``event_at`` is set only by that while a document is valid), with the
        refusal and its advice in ``cancel_error``, offered to the ERP again."""
        now = now or utcnow()
        values = {"cancel_error": json.dumps(error), "updated_at": now, **_REPORT_AGAIN}
        with self.engine.begin() as conn:
            moved = states.move(
                conn,
                states.doc("cancel_refused_rejection"),
                documents.c.id == doc_id,
                documents.c.event_at.is_not(None),
                values=values,
            )
            if moved.lost:
                moved = states.move(
                    conn,
                    states.doc("cancel_refused"),
                    documents.c.id == doc_id,
                    documents.c.event_at.is_(None),
                    values=values,
                )
            if moved.won:
                # Back in a final state it may have been counted in before: see FINAL_STATE_LEFT.
                increment_in(conn, FINAL_STATE_LEFT)
        return moved.won

    def refused_locally(self, doc_id: int, error: dict[str, Any]) -> None:
        """A cancel refused without a call (not validated, the window over): the state stays,
        the refusal is kept and, once the document is final, offered to the ERP."""
        with self.engine.begin() as conn:
            conn.execute(
                update(documents)
                .where(documents.c.id == doc_id, documents.c.state != D.CANCELLING.value)
                .values(cancel_error=json.dumps(error), **_REPORT_AGAIN)
            )

    def offer_again(self, doc_id: int) -> None:
        """Write the document's outcome back to the ERP once more (asked to cancel an invoice
        already cancelled: the ERP hears ``cancelled`` again instead of waiting forever)."""
        with self.engine.begin() as conn:
            conn.execute(
                update(documents)
                .where(documents.c.id == doc_id, documents.c.reported_at.is_not(None))
                .values(**_REPORT_AGAIN)
            )

    def check_due_now(self, submission_id: int, now: datetime | None = None) -> None:
        """A cancel's answer was lost: have the watch poll its submission at once, so the ERP
        hears what became of it without waiting for the next watch interval."""
        with self.engine.begin() as conn:
            _poll_now(conn, submission_id, now or utcnow())

    def numbers_of(self, uuids: list[str]) -> dict[str, str]:
        """Our invoice numbers of the documents with these MyInvois uuids (those we know)."""
        if not uuids:
            return {}
        with self.engine.connect() as conn:
            rows = conn.execute(select(documents.c.uuid, documents.c.number).where(documents.c.uuid.in_(uuids)))
            return {r.uuid: r.number for r in rows}


def _poll_now(conn: Connection, submission_id: int, now: datetime) -> None:
    conn.execute(
        update(submissions)
        .where(submissions.c.id == submission_id, submissions.c.next_poll_at.is_not(None))
        .values(next_poll_at=now)
    )
