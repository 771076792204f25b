"""The ledger: durable state of every document and submission.

Rule of the house: **persist before you act, record after**. The pipeline writes what it is
about to send (the exact bytes, in state ``submitting``) before the HTTP call, and what came
back as soon as it came back. Each public method is one transaction, so a ``kill -9`` at any
point leaves the ledger either before or after a step, never half-way; the restart then knows
whether a submission may have reached MyInvois (``sending``/``in_doubt``) and reconciles it
instead of sending it again.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from enum import Enum
from typing import Any

from sqlalchemy import Engine, and_, bindparam, create_engine, event, func, insert, literal_column, or_, select, update
from sqlalchemy.engine import make_url

from connector_core.contract import FINAL_STATES, DocumentOutcome, DocumentState
from connector_core.ledger import migrate
from connector_core.ledger.schema import counters, documents, incidents, submissions

S = DocumentState
_FINAL = [s.value for s in FINAL_STATES]
# "state IN (the few open states)" can use the state index; "NOT IN (final states)" reads every
# row, and the monitoring gauges ask after every poll: at 100,000 documents that was 0.17 ms of
# CPU per document.
_OPEN = [s.value for s in DocumentState if s not in FINAL_STATES]
# A changed invoice becomes a new version only once MyInvois is done with the old one.
_REISSUABLE = {S.INVALID.value, S.REJECTED.value, S.LOCALLY_INVALID.value, S.CANCELLED.value}
_IN_FLIGHT = {S.SUBMITTING.value, S.SUBMITTED.value, S.VALID.value}
_CHUNK = 500  # rows per IN (...) list: well under every backend's bound-parameter limit


class SubmissionState(str, Enum):
    SENDING = "sending"  # written before the HTTP call; after a crash it means "may have arrived"
    ACCEPTED = "accepted"  # 202 received: has a submissionUid, being polled
    IN_DOUBT = "in_doubt"  # the call may have reached MyInvois but its answer was lost
    REFUSED = "refused"  # 400/403 on the envelope: nothing of it was accepted
    NOT_SENT = "not_sent"  # certainly never reached MyInvois (connect error, local refusal)
    DONE = "done"  # every document of it is final


def utcnow() -> datetime:
    return datetime.now(UTC)


def _utc(value: datetime | None) -> datetime | None:
    # SQLite and MariaDB hand back naive datetimes; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


@dataclass(frozen=True)
class FetchedItem:
    """One invoice (or unreadable record) as the pipeline hands it to the ledger."""

    source_key: str
    number: str
    fingerprint: str
    invoice_json: str | None
    document_type: str | None = None
    issuer_tin: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def state(self) -> DocumentState:
        return S.LOCALLY_INVALID if self.problems else S.PENDING


@dataclass
class RecordSummary:
    new: int = 0
    new_versions: int = 0
    updated: int = 0
    unchanged: int = 0
    locally_invalid: int = 0
    changed_after_submit: list[str] = field(default_factory=list)

    @property
    def recorded(self) -> int:
        return self.new + self.new_versions + self.updated


@dataclass(frozen=True)
class PendingDocument:
    id: int
    source: str
    source_key: str
    version: int
    number: str
    invoice_json: str
    document: str | None
    document_hash: str | None
    issued_at: datetime | None


@dataclass(frozen=True)
class SubmittedDocument:
    id: int
    number: str
    uuid: str | None
    document: str | None
    document_hash: str | None
    issued_at: datetime | None
    state: str


@dataclass(frozen=True)
class SubmissionRecord:
    id: int
    profile: str
    state: str
    submission_uid: str | None
    payload_hash: str
    document_count: int
    created_at: datetime
    sent_at: datetime | None
    poll_count: int
    reconcile_attempts: int
    documents: list[SubmittedDocument] = field(default_factory=list)


@dataclass(frozen=True)
class DocumentStatusUpdate:
    """What Get Submission (plus Get Document Details for invalid ones) said about a document."""

    uuid: str
    state: DocumentState
    long_id: str | None = None
    validation_link: str | None = None
    errors: list[str] = field(default_factory=list)
    error_details: list[dict[str, Any]] = field(default_factory=list)


class Ledger:
    """All durable state. Thread-safe: each method uses its own connection and transaction."""

    def __init__(self, url: str, *, sender: str | None = None, echo: bool = False) -> None:
        """``sender`` names this connector instance on the submissions it sends (stable across
        restarts of one installation), so that connectors sharing a ledger tell their own
        interrupted sends from another's call in progress."""
        self.url = url
        self.sender = sender
        self.engine = _make_engine(url, echo=echo)
        migrate.upgrade(self.engine)

    def close(self) -> None:
        self.engine.dispose()

    # --- recording fetched invoices -------------------------------------------------------

    def record_fetched(self, *, source: str, profile: str, items: Sequence[FetchedItem]) -> RecordSummary:
        """Record a page of fetched invoices; the same content fetched twice is recorded once."""
        summary = RecordSummary()
        now = utcnow()
        # The last occurrence wins when a plugin yields one key twice in a page.
        by_key = {item.source_key: item for item in items}
        with self.engine.begin() as conn:
            latest = {}
            keys = list(by_key)
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start : start + _CHUNK]
                newest = (
                    select(documents.c.source_key, func.max(documents.c.version).label("v"))
                    .where(documents.c.source == source, documents.c.source_key.in_(chunk))
                    .group_by(documents.c.source_key)
                    .subquery()
                )
                rows = conn.execute(
                    select(documents.c.id, documents.c.source_key, documents.c.version, documents.c.fingerprint, documents.c.state).join(
                        newest, and_(documents.c.source_key == newest.c.source_key, documents.c.version == newest.c.v)
                    ).where(documents.c.source == source)
                )
                latest.update({r.source_key: r for r in rows})

            inserts: list[dict[str, Any]] = []
            for key, item in by_key.items():
                row = latest.get(key)
                values = {
                    "fingerprint": item.fingerprint,
                    "number": item.number,
                    "document_type": item.document_type,
                    "issuer_tin": item.issuer_tin,
                    "state": item.state.value,
                    "invoice_json": item.invoice_json,
                    "errors": json.dumps(item.problems) if item.problems else None,
                    "updated_at": now,
                    "final_at": now if item.problems else None,
                }
                if row is None:
                    inserts.append({"source": source, "source_key": key, "version": 1, "profile": profile, "fetched_at": now, **values})
                    summary.new += 1
                elif row.fingerprint == item.fingerprint:
                    summary.unchanged += 1
                    continue
                elif row.state == S.PENDING.value:
                    # Not sent yet: the ERP's newer content simply replaces it (and any built bytes).
                    conn.execute(
                        update(documents)
                        .where(documents.c.id == row.id)
                        .values(**values, document=None, document_hash=None, issued_at=None)
                    )
                    summary.updated += 1
                elif row.state in _REISSUABLE:
                    inserts.append(
                        {"source": source, "source_key": key, "version": row.version + 1, "profile": profile, "fetched_at": now, **values}
                    )
                    summary.new_versions += 1
                else:
                    summary.changed_after_submit.append(key)
                    continue
                if item.problems:
                    summary.locally_invalid += 1
            if inserts:
                conn.execute(insert(documents), [{"attempts": 0, **row} for row in inserts])
        return summary

    # --- submitting -----------------------------------------------------------------------

    def pending_documents(self, profile: str, limit: int) -> list[PendingDocument]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    documents.c.id,
                    documents.c.source,
                    documents.c.source_key,
                    documents.c.version,
                    documents.c.number,
                    documents.c.invoice_json,
                    documents.c.document,
                    documents.c.document_hash,
                    documents.c.issued_at,
                )
                .where(documents.c.profile == profile, documents.c.state == S.PENDING.value)
                .order_by(documents.c.id)
                .limit(limit)
            )
            return [PendingDocument(**{**r._asdict(), "issued_at": _utc(r.issued_at)}) for r in rows]

    def store_built(self, built: Iterable[tuple[int, str, str, datetime]]) -> None:
        """Persist the exact document bytes (as text), their hash and issue time before sending."""
        params = [{"b_id": i, "b_document": d, "b_hash": h, "b_issued": t} for i, d, h, t in built]
        if not params:
            return
        from sqlalchemy import bindparam

        stmt = (
            update(documents)
            .where(documents.c.id == bindparam("b_id"))
            .values(document=bindparam("b_document"), document_hash=bindparam("b_hash"), issued_at=bindparam("b_issued"))
        )
        with self.engine.begin() as conn:
            conn.execute(stmt, params)

    def mark_locally_invalid(self, doc_id: int, problems: list[str]) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(documents)
                .where(documents.c.id == doc_id)
                .values(state=S.LOCALLY_INVALID.value, errors=json.dumps(problems), updated_at=now, final_at=now)
            )

    def open_submission(self, *, profile: str, doc_ids: Sequence[int]) -> tuple[int, list[int]]:
        """Claim pending documents for a new submission, before the submit call.

        Returns the submission id and the documents actually claimed: a document that another
        connector process claimed in the meantime is left out, so two processes sharing one
        ledger never send the same document. From here on the claimed documents may be at
        MyInvois, and a crash leaves them for reconciliation, not for a blind re-send.
        """
        now = utcnow()
        with self.engine.begin() as conn:
            sub_id = conn.execute(
                insert(submissions).values(
                    profile=profile,
                    state=SubmissionState.SENDING.value,
                    payload_hash="",
                    document_count=0,
                    created_at=now,
                    sent_at=now,
                    poll_count=0,
                    reconcile_attempts=0,
                    sender=self.sender,
                )
            ).inserted_primary_key[0]
            for start in range(0, len(doc_ids), _CHUNK):
                conn.execute(
                    update(documents)
                    .where(documents.c.id.in_(doc_ids[start : start + _CHUNK]), documents.c.state == S.PENDING.value)
                    .values(state=S.SUBMITTING.value, submission_id=sub_id, attempts=documents.c.attempts + 1, updated_at=now)
                )
            claimed = conn.execute(
                select(documents.c.id, documents.c.document_hash).where(documents.c.submission_id == sub_id).order_by(documents.c.id)
            ).all()
            payload_hash = hashlib.sha256("".join(r.document_hash or "" for r in claimed).encode()).hexdigest()
            conn.execute(
                update(submissions)
                .where(submissions.c.id == sub_id)
                .values(payload_hash=payload_hash, document_count=len(claimed), state=(SubmissionState.SENDING if claimed else SubmissionState.NOT_SENT).value)
            )
        return sub_id, [r.id for r in claimed]

    def mark_resending(self, submission_id: int) -> None:
        """Before re-sending the identical payload of an in-doubt submission."""
        with self.engine.begin() as conn:
            conn.execute(
                update(submissions)
                .where(submissions.c.id == submission_id)
                .values(state=SubmissionState.SENDING.value, sent_at=utcnow(), sender=self.sender)
            )

    def submission_accepted(
        self,
        submission_id: int,
        *,
        submission_uid: str | None,
        accepted: Sequence[tuple[str, str]],
        rejected: Sequence[tuple[str, list[str], list[dict[str, Any]]]],
        next_poll_at: datetime | None,
    ) -> None:
        """Record a 202 (or a reconciliation that found the submission): uuids by code number."""
        now = utcnow()
        with self.engine.begin() as conn:
            by_number = {
                r.number: r.id
                for r in conn.execute(
                    select(documents.c.id, documents.c.number).where(documents.c.submission_id == submission_id)
                )
            }
            # One executemany, not one UPDATE per document: building a statement per row cost
            # more CPU than the whole rest of recording the answer (benchmarks/, docs/performance.md).
            accepted_rows = [{"b_id": by_number[number], "b_uuid": uuid} for number, uuid in accepted if number in by_number]
            if accepted_rows:
                conn.execute(
                    update(documents)
                    .where(documents.c.id == bindparam("b_id"))
                    .values(state=S.SUBMITTED.value, uuid=bindparam("b_uuid"), submitted_at=now, updated_at=now),
                    accepted_rows,
                )
            for number, errors, details in rejected:
                if number in by_number:
                    conn.execute(
                        update(documents)
                        .where(documents.c.id == by_number[number])
                        .values(
                            state=S.REJECTED.value,
                            errors=json.dumps(errors),
                            error_details=json.dumps(details),
                            updated_at=now,
                            final_at=now,
                        )
                    )
            state = SubmissionState.ACCEPTED if accepted and submission_uid else SubmissionState.DONE
            conn.execute(
                update(submissions)
                .where(submissions.c.id == submission_id)
                .values(state=state.value, submission_uid=submission_uid, accepted_at=now, next_poll_at=next_poll_at, error=None)
            )

    def submission_in_doubt(self, submission_id: int, reason: str) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(submissions)
                .where(submissions.c.id == submission_id)
                .values(state=SubmissionState.IN_DOUBT.value, error=reason)
            )

    def submission_refused(self, submission_id: int, errors: list[str], details: list[dict[str, Any]]) -> None:
        """400/403 on the envelope: every document of the batch is rejected, with the reason."""
        self._finish_submission_documents(submission_id, S.REJECTED, errors, details)
        with self.engine.begin() as conn:
            conn.execute(
                update(submissions)
                .where(submissions.c.id == submission_id)
                .values(state=SubmissionState.REFUSED.value, error="; ".join(errors))
            )

    def submission_not_sent(self, submission_id: int, reason: str, *, document_ids: Sequence[int] | None = None) -> None:
        """The call certainly never reached MyInvois: its documents go back to pending."""
        now = utcnow()
        with self.engine.begin() as conn:
            cond = documents.c.submission_id == submission_id
            if document_ids is not None:
                cond = and_(cond, documents.c.id.in_(list(document_ids)))
            conn.execute(
                update(documents)
                .where(cond, documents.c.state == S.SUBMITTING.value)
                .values(state=S.PENDING.value, submission_id=None, updated_at=now)
            )
            if document_ids is None:
                conn.execute(
                    update(submissions)
                    .where(submissions.c.id == submission_id)
                    .values(state=SubmissionState.NOT_SENT.value, error=reason)
                )

    def _finish_submission_documents(
        self, submission_id: int, state: DocumentState, errors: list[str], details: list[dict[str, Any]]
    ) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(documents)
                .where(documents.c.submission_id == submission_id, documents.c.state == S.SUBMITTING.value)
                .values(
                    state=state.value,
                    errors=json.dumps(errors),
                    error_details=json.dumps(details),
                    updated_at=now,
                    final_at=now,
                )
            )

    def unresolved_submissions(self, profile: str) -> list[SubmissionRecord]:
        """Submissions whose outcome the connector does not know: in doubt (a lost answer, or
        left ``sending`` by a crash: see :meth:`recover_after_crash`). They are reconciled before
        anything new is sent. A ``sending`` one is not: its call may still be in progress, in
        another connector sharing this ledger."""
        return self._submissions(
            and_(submissions.c.profile == profile, submissions.c.state == SubmissionState.IN_DOUBT.value), with_documents=True
        )

    def recover_after_crash(self, *, abandoned_before: datetime) -> int:
        """At start-up: a ``sending`` submission of ours may have reached MyInvois before we
        stopped: mark it in doubt, to be reconciled. So is one of any sender that has been
        sending since before ``abandoned_before`` (longer than a call can last: its sender is
        gone). Another connector's call in progress is left to it."""
        # No sender recorded (a ledger from before senders were named): treated as ours, the safe side.
        ours_or_abandoned = [submissions.c.sender.is_(None), submissions.c.sent_at < abandoned_before]
        if self.sender is not None:
            ours_or_abandoned.append(submissions.c.sender == self.sender)
        return self._mark_interrupted(
            or_(*ours_or_abandoned),
            "the connector stopped while this submission was being sent",
        )

    def recover_abandoned_sends(self, *, abandoned_before: datetime) -> int:
        """While running: a ``sending`` submission older than any call can last was left by a
        connector sharing this ledger that stopped and has not come back: mark it in doubt."""
        return self._mark_interrupted(
            submissions.c.sent_at < abandoned_before,
            "the connector that was sending this submission stopped and did not come back",
        )

    def _mark_interrupted(self, condition, error: str) -> int:
        with self.engine.begin() as conn:
            result = conn.execute(
                update(submissions)
                .where(submissions.c.state == SubmissionState.SENDING.value, condition)
                .values(state=SubmissionState.IN_DOUBT.value, error=error)
            )
            return result.rowcount or 0

    def note_reconcile_attempt(self, submission_id: int) -> None:
        with self.engine.begin() as conn:
            conn.execute(
                update(submissions)
                .where(submissions.c.id == submission_id)
                .values(reconcile_attempts=submissions.c.reconcile_attempts + 1)
            )

    # --- polling --------------------------------------------------------------------------

    def submissions_due(self, profile: str, now: datetime, limit: int) -> list[SubmissionRecord]:
        cond = and_(
            submissions.c.profile == profile,
            submissions.c.state == SubmissionState.ACCEPTED.value,
            submissions.c.next_poll_at <= now,
        )
        return self._submissions(cond, order=submissions.c.next_poll_at, limit=limit, with_documents=True, with_content=False)

    def next_poll_time(self, profile: str | None = None) -> datetime | None:
        cond = submissions.c.state == SubmissionState.ACCEPTED.value
        if profile is not None:
            cond = and_(cond, submissions.c.profile == profile)
        with self.engine.connect() as conn:
            return _utc(conn.execute(select(func.min(submissions.c.next_poll_at)).where(cond)).scalar())

    def record_poll(
        self,
        submission_id: int,
        *,
        overall_status: str | None,
        updates: Sequence[DocumentStatusUpdate],
        next_poll_at: datetime | None,
    ) -> None:
        """Record one Get Submission round. ``next_poll_at=None`` with every document final
        closes the submission."""
        now = utcnow()
        # Updates that set the same columns share one executemany (a poll of a valid submission
        # is a single statement); an UPDATE per document cost a statement build per row.
        by_columns: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        for u in updates:
            values: dict[str, Any] = {"state": u.state.value, "updated_at": now}
            if u.state.is_final:
                values["final_at"] = now
            if u.long_id:
                values["long_id"] = u.long_id
            if u.validation_link:
                values["validation_link"] = u.validation_link
            if u.errors:
                values["errors"] = json.dumps(u.errors)
                values["error_details"] = json.dumps(u.error_details)
            by_columns.setdefault(tuple(values), []).append({"b_uuid": u.uuid, **{f"b_{k}": v for k, v in values.items()}})
        with self.engine.begin() as conn:
            for columns, rows in by_columns.items():
                conn.execute(
                    update(documents)
                    .where(documents.c.submission_id == submission_id, documents.c.uuid == bindparam("b_uuid"))
                    .values(**{column: bindparam(f"b_{column}") for column in columns}),
                    rows,
                )
            open_docs = conn.execute(
                select(func.count())
                .select_from(documents)
                .where(documents.c.submission_id == submission_id, documents.c.state.in_(_OPEN))
            ).scalar()
            sub_values: dict[str, Any] = {
                "overall_status": overall_status,
                "last_polled_at": now,
                "poll_count": submissions.c.poll_count + 1,
                "next_poll_at": next_poll_at,
            }
            if not open_docs:
                sub_values["state"] = SubmissionState.DONE.value
                sub_values["next_poll_at"] = None
            conn.execute(update(submissions).where(submissions.c.id == submission_id).values(**sub_values))

    def reassign_document(self, doc_id: int, *, uuid: str, state: DocumentState, long_id: str | None, validation_link: str | None) -> None:
        """A DS302 duplicate or a reconciliation showed the document already lives at MyInvois
        under another uuid: that earlier document is this invoice's one accepted document."""
        now = utcnow()
        with self.engine.begin() as conn:
            conn.execute(
                update(documents)
                .where(documents.c.id == doc_id)
                .values(
                    uuid=uuid,
                    state=state.value,
                    long_id=long_id,
                    validation_link=validation_link,
                    errors=None,
                    error_details=None,
                    updated_at=now,
                    final_at=now if state.is_final else None,
                )
            )

    def documents_of(self, submission_id: int) -> list[SubmittedDocument]:
        with self.engine.connect() as conn:
            return self._documents_of(conn, [submission_id]).get(submission_id, [])

    # --- write-back -----------------------------------------------------------------------

    def unreported_outcomes(self, source: str, limit: int) -> list[tuple[int, DocumentOutcome]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                # Only what an outcome carries: the invoice JSON and the built document are the
                # bulk of a row (several KB each) and a write-back of 500 needs neither.
                select(documents.c.id, *_OUTCOME_COLUMNS, submissions.c.submission_uid)
                .join(submissions, documents.c.submission_id == submissions.c.id, isouter=True)
                .where(documents.c.source == source, documents.c.reported_at.is_(None), documents.c.state.in_(_FINAL))
                .order_by(documents.c.id)
                .limit(limit)
            )
            return [(r.id, _outcome(r)) for r in rows]

    def mark_reported(self, doc_ids: Sequence[int]) -> None:
        now = utcnow()
        with self.engine.begin() as conn:
            for start in range(0, len(doc_ids), _CHUNK):
                conn.execute(update(documents).where(documents.c.id.in_(doc_ids[start : start + _CHUNK])).values(reported_at=now))

    # --- status ---------------------------------------------------------------------------

    def counts_by_state(self, profile: str | None = None) -> dict[str, int]:
        stmt = select(documents.c.state, func.count()).group_by(documents.c.state)
        if profile is not None:
            stmt = stmt.where(documents.c.profile == profile)
        with self.engine.connect() as conn:
            return {state: n for state, n in conn.execute(stmt)}

    def unfinished_count(self, *, exclude_profiles: Iterable[str] = ()) -> int:
        """Documents not final yet, plus final ones not yet written back."""
        excluded = list(exclude_profiles)
        open_cond = documents.c.state.in_(_OPEN)
        unreported_cond = and_(documents.c.state.in_(_FINAL), documents.c.reported_at.is_(None))
        if excluded:
            open_cond = and_(open_cond, documents.c.profile.notin_(excluded))
            unreported_cond = and_(unreported_cond, documents.c.profile.notin_(excluded))
        with self.engine.connect() as conn:
            open_docs = conn.execute(select(func.count()).select_from(documents).where(open_cond)).scalar()
            unreported = conn.execute(select(func.count()).select_from(documents).where(unreported_cond)).scalar()
        return int(open_docs or 0) + int(unreported or 0)

    def oldest_pending_fetched_at(self) -> datetime | None:
        with self.engine.connect() as conn:
            return _utc(conn.execute(select(func.min(documents.c.fetched_at)).where(documents.c.state.in_(_OPEN))).scalar())

    def stuck_submissions(self, accepted_before: datetime) -> list[tuple[str, list[str], float]]:
        """Submissions MyInvois accepted before ``accepted_before`` and still has not finished
        validating: (profile, submission uids, age in seconds of the oldest)."""
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(submissions.c.profile, submissions.c.submission_uid, submissions.c.accepted_at)
                .where(submissions.c.state == SubmissionState.ACCEPTED.value, submissions.c.accepted_at < accepted_before)
                .order_by(submissions.c.accepted_at)
            ).all()
        now = utcnow()
        out: dict[str, tuple[list[str], float]] = {}
        for r in rows:
            uids, age = out.get(r.profile, ([], 0.0))
            uids.append(r.submission_uid)
            out[r.profile] = (uids, max(age, (now - _utc(r.accepted_at)).total_seconds()))
        return [(profile, uids, age) for profile, (uids, age) in out.items()]

    def latest_errors(self, limit: int = 10) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(documents.c.source, documents.c.number, documents.c.version, documents.c.state, documents.c.errors, documents.c.final_at)
                .where(documents.c.errors.is_not(None))
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
                    "at": _iso(r.final_at),
                }
                for r in rows
            ]

    def find_documents(self, *, source: str | None = None, number: str | None = None) -> list[dict[str, Any]]:
        stmt = select(documents).order_by(documents.c.id)
        if source is not None:
            stmt = stmt.where(documents.c.source == source)
        if number is not None:
            stmt = stmt.where(documents.c.number == number)
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def increment(self, name: str, by: int = 1) -> None:
        with self.engine.begin() as conn:
            updated = conn.execute(update(counters).where(counters.c.name == name).values(value=counters.c.value + by)).rowcount
            if not updated:
                try:
                    with conn.begin_nested():
                        conn.execute(insert(counters).values(name=name, value=by))
                except Exception:  # noqa: BLE001 - another thread inserted it first
                    conn.execute(update(counters).where(counters.c.name == name).values(value=counters.c.value + by))

    def counter_values(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {r.name: r.value for r in conn.execute(select(counters))}

    def add_incident(self, kind: str, message: str, subject: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(incidents).values(at=utcnow(), kind=kind, subject=subject, message=message[:4000]))

    def recent_incidents(self, limit: int = 10) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(incidents).order_by(incidents.c.id.desc()).limit(limit))
            return [{"at": _iso(r.at), "kind": r.kind, "subject": r.subject, "message": r.message} for r in rows]

    def schema_revision(self) -> str | None:
        return migrate.current_revision(self.engine)

    # --- internals ------------------------------------------------------------------------

    def _submissions(
        self, cond, *, order=None, limit: int | None = None, with_documents: bool = False, with_content: bool = True
    ) -> list[SubmissionRecord]:
        stmt = select(submissions).where(cond).order_by(order if order is not None else submissions.c.id)
        if limit is not None:
            stmt = stmt.limit(limit)
        with self.engine.connect() as conn:
            rows = list(conn.execute(stmt))
            docs = self._documents_of(conn, [r.id for r in rows], with_content=with_content) if with_documents else {}
        return [
            SubmissionRecord(
                id=r.id,
                profile=r.profile,
                state=r.state,
                submission_uid=r.submission_uid,
                payload_hash=r.payload_hash,
                document_count=r.document_count,
                created_at=_utc(r.created_at),
                sent_at=_utc(r.sent_at),
                poll_count=r.poll_count,
                reconcile_attempts=r.reconcile_attempts,
                documents=docs.get(r.id, []),
            )
            for r in rows
        ]

    @staticmethod
    def _documents_of(conn, submission_ids: list[int], *, with_content: bool = True) -> dict[int, list[SubmittedDocument]]:
        """The documents of some submissions; ``with_content=False`` leaves out the built bytes
        (polling never needs them; only a re-send does)."""
        out: dict[int, list[SubmittedDocument]] = {}
        content = documents.c.document if with_content else literal_column("NULL").label("document")
        for start in range(0, len(submission_ids), _CHUNK):
            rows = conn.execute(
                select(
                    documents.c.id,
                    documents.c.submission_id,
                    documents.c.number,
                    documents.c.uuid,
                    content,
                    documents.c.document_hash,
                    documents.c.issued_at,
                    documents.c.state,
                )
                .where(documents.c.submission_id.in_(submission_ids[start : start + _CHUNK]))
                .order_by(documents.c.id)
            )
            for r in rows:
                out.setdefault(r.submission_id, []).append(
                    SubmittedDocument(
                        id=r.id,
                        number=r.number,
                        uuid=r.uuid,
                        document=r.document,
                        document_hash=r.document_hash,
                        issued_at=_utc(r.issued_at),
                        state=r.state,
                    )
                )
        return out


def _iso(value: datetime | None) -> str | None:
    value = _utc(value)
    return value.isoformat(timespec="seconds") if value else None


_OUTCOME_COLUMNS = tuple(
    documents.c[name]
    for name in (
        "source_key", "number", "version", "state", "uuid", "long_id", "validation_link",
        "errors", "error_details", "document_type", "final_at", "fetched_at",
    )
)  # fmt: skip


def _outcome(row) -> DocumentOutcome:
    return DocumentOutcome(
        source_key=row.source_key,
        number=row.number,
        version=row.version,
        state=DocumentState(row.state),
        uuid=row.uuid,
        long_id=row.long_id,
        submission_uid=row.submission_uid,
        validation_link=row.validation_link,
        errors=json.loads(row.errors) if row.errors else [],
        error_details=json.loads(row.error_details) if row.error_details else [],
        document_type=row.document_type,
        final_at=_utc(row.final_at),
        fetched_at=_utc(row.fetched_at),
    )


def _make_engine(url: str, *, echo: bool) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            from pathlib import Path

            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            # WAL lets the poller read while the submitter writes; the busy timeout makes
            # concurrent writers (threads, or a second process) wait instead of failing.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)
