"""The watch after Valid: which submissions are watched, and what a watch poll found.

LHDN leaves a validated document open for 72 hours: the issuer may cancel it, the buyer may
ask for its rejection. A submission whose documents are all final but some are still inside
that window (``documents.watch_until``, the window's end plus a margin) is ``watching``: the
watch re-polls it through Get Submission every ``cycles.watch_interval_seconds``, and once no
document of it is watched (or being cancelled) any more, it is ``done``.

What the watch finds is news for the ERP: each move clears ``reported_at``, so the write-back
(:mod:`.writeback`) offers the new outcome through ``on_submission_result``.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, exists, func, or_, select, update
from sqlalchemy.engine import Connection

from connector_core.contract import DocumentState
from connector_core.ledger import states
from connector_core.ledger.database import LedgerPart, as_utc, utcnow
from connector_core.ledger.journal import FINAL_STATE_LEFT, increment_in
from connector_core.ledger.records import SubmissionRecord, WatchEvent
from connector_core.ledger.schema import documents, submissions
from connector_core.ledger.sends import load_submissions
from connector_core.ledger.states import SubmissionState

D = DocumentState
_MOVE = {D.REJECTION_REQUESTED: "rejection_requested", D.CANCELLED: "cancelled_at_myinvois"}
#: Still inside its window, MyInvois may yet cancel it or the buyer ask for its rejection.
_WATCHED_STATES = (D.VALID.value, D.REJECTION_REQUESTED.value)
#: Open states a submission waits for before it closes: all but a cancel in progress, which
#: comes after Valid and is followed by the watch.
_OPEN_BEFORE_FINAL = sorted(states.OPEN - {D.CANCELLING.value})
#: News for the ERP: the write-back offers the row again.
_REPORT_AGAIN = {"reported_at": None, "report_attempts": 0, "report_error": None, "next_report_at": None}


def _watched(submission_id: int, now: datetime):
    """Condition: a document of the submission is still watched, or being cancelled (whose
    outcome, when the answer was lost, only Get Submission can tell)."""
    return exists().where(
        documents.c.submission_id == submission_id,
        or_(
            documents.c.state == D.CANCELLING.value,
            and_(documents.c.state.in_(_WATCHED_STATES), documents.c.watch_until > now),
        ),
    )


def next_watch_poll(conn: Connection, submission_id: int, now: datetime, interval: timedelta | None) -> datetime:
    """When to poll a watched submission next: one interval on, or the end of its last
    document's watch if that comes sooner (the last poll, at or after the end, closes it).
    Without an interval (a caller outside the pipeline): at the end only."""
    last_end = as_utc(
        conn.execute(
            select(func.max(documents.c.watch_until)).where(
                documents.c.submission_id == submission_id, documents.c.state.in_(_WATCHED_STATES)
            )
        ).scalar()
    )
    if interval is None:
        return _whole_second_at_or_after(last_end if last_end is not None and last_end > now else now)
    following = now + interval
    return _whole_second_at_or_after(min(following, last_end) if last_end is not None and last_end > now else following)


def _whole_second_at_or_after(moment: datetime) -> datetime:
    """Rounded up to a whole second: MariaDB's DATETIME keeps whole seconds, and a next poll
    time cut down to one that has already begun would be due at once, so that one poll round
    polled the submission again and again until the clock passed the second."""
    return moment if not moment.microsecond else moment.replace(microsecond=0) + timedelta(seconds=1)


def close_or_watch(conn: Connection, submission_id: int, now: datetime, interval: timedelta | None) -> states.Moved:
    """Close an accepted submission if none of its documents is open any more (a cancel in
    progress aside: the watch follows it): ``watching`` while a document of it is inside its
    window or being cancelled, else ``done``. Each move checks, in its own statement, that
    nothing is open (compare-and-set): lost means the submission stays ``accepted``."""
    still_open = exists().where(documents.c.submission_id == submission_id, documents.c.state.in_(_OPEN_BEFORE_FINAL))
    watched = states.move(
        conn,
        states.sub("watch"),
        submissions.c.id == submission_id,
        ~still_open,
        _watched(submission_id, now),
        values={"next_poll_at": next_watch_poll(conn, submission_id, now, interval)},
    )
    if watched.won:
        return watched
    return states.move(
        conn,
        states.sub("finished"),
        submissions.c.id == submission_id,
        ~still_open,
        ~_watched(submission_id, now),
        values={"next_poll_at": None},
    )


class Watch(LedgerPart):
    """The watch's reads and writes."""

    def submissions_due(self, profile: str, now: datetime, limit: int) -> list[SubmissionRecord]:
        """Watched submissions of ``profile`` due for a poll, the longest waiting first."""
        cond = and_(
            submissions.c.profile == profile,
            submissions.c.state == SubmissionState.WATCHING.value,
            submissions.c.next_poll_at <= now,
        )
        with self.engine.connect() as conn:
            return load_submissions(
                conn, cond, order=submissions.c.next_poll_at, limit=limit, with_documents=True, with_content=False
            )

    def has_due(self, now: datetime, *, exclude_profiles: Iterable[str] = ()) -> bool:
        """Whether a watched submission is due for a poll (``run --once`` makes the sweeps
        that are due before it ends, and does not wait for those that are not)."""
        cond = and_(submissions.c.state == SubmissionState.WATCHING.value, submissions.c.next_poll_at <= now)
        excluded = list(exclude_profiles)
        if excluded:
            cond = and_(cond, submissions.c.profile.notin_(excluded))
        with self.engine.connect() as conn:
            return conn.execute(select(submissions.c.id).where(cond).limit(1)).first() is not None

    def next_watch_time(self, profile: str | None = None) -> datetime | None:
        """When the next watched submission is due (None: none is watched)."""
        cond = submissions.c.state == SubmissionState.WATCHING.value
        if profile is not None:
            cond = and_(cond, submissions.c.profile == profile)
        with self.engine.connect() as conn:
            return as_utc(conn.execute(select(func.min(submissions.c.next_poll_at)).where(cond)).scalar())

    def watch_failed(self, submission_id: int, *, retry_at: datetime) -> None:
        """A watch poll failed (MyInvois unreachable, throttled): try again at ``retry_at``."""
        with self.engine.begin() as conn:
            conn.execute(
                update(submissions)
                .where(submissions.c.id == submission_id, submissions.c.state == SubmissionState.WATCHING.value)
                .values(next_poll_at=retry_at)
            )

    def record_watch(self, submission_id: int, events: Sequence[WatchEvent], *, interval: timedelta | None) -> bool:
        """Record one watch poll of a ``watching`` submission: what it found, when to poll it
        next; return True when the watch is over (``done``)."""
        now = utcnow()
        with self.engine.begin() as conn:
            for state, found in _by_state(events).items():
                values: dict[str, Any] = {
                    "status_reason": bindparam("b_reason"),
                    "event_at": bindparam("b_at"),
                    "updated_at": now,
                    # The news replaces an earlier refused cancel's advice, already written back.
                    "cancel_error": None,
                    **_REPORT_AGAIN,
                }
                if state is D.CANCELLED:
                    values["watch_until"] = None  # nothing can happen to it any more
                moved = states.move(
                    conn,
                    states.doc(_MOVE[state]),
                    documents.c.uuid == bindparam("b_uuid"),
                    owner=submission_id,
                    values=values,
                    rows=[{"b_uuid": e.uuid, "b_reason": e.reason, "b_at": e.at or now} for e in found],
                )
                if moved.count:
                    increment_in(conn, FINAL_STATE_LEFT, moved.count)
            conn.execute(
                update(submissions)
                .where(submissions.c.id == submission_id, submissions.c.state == SubmissionState.WATCHING.value)
                .values(
                    next_poll_at=next_watch_poll(conn, submission_id, now, interval),
                    last_polled_at=now,
                    poll_count=submissions.c.poll_count + 1,
                )
            )
            over = states.move(
                conn,
                states.sub("watch_over"),
                submissions.c.id == submission_id,
                ~_watched(submission_id, now),
                values={"next_poll_at": None},
            )
            return over.won


def _by_state(events: Sequence[WatchEvent]) -> dict[DocumentState, list[WatchEvent]]:
    grouped: dict[DocumentState, list[WatchEvent]] = {}
    for event in events:
        grouped.setdefault(event.state, []).append(event)
    return grouped
