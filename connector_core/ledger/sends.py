"""The send and reconcile states: claiming documents into a submission, recording the submit
answer, and owning the reconciliation of a submission whose answer was lost.

Rule of the house: **persist before you act, record after**. A claim writes the exact bytes to
send, in state ``submitting``, in the same transaction that opens the ``sending`` submission,
before the HTTP call; the answer is recorded as soon as it came back. A ``kill -9`` at any
point leaves the ledger before or after a step, never half-way; the restart then knows whether
a submission may have reached MyInvois and reconciles it instead of sending it again.

Every move is a compare-and-set on the expected state and owner (:mod:`.states`): a claim
takes only documents still ``pending`` with the content they were built from; an answer is
recorded only by the connector that holds the submission; a reconciliation is owned by one
connector at a time.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from sqlalchemy import and_, bindparam, func, literal_column, or_, select

from connector_core.contract import DocumentState
from connector_core.ledger import bodies, claimed, states
from connector_core.ledger.database import LedgerPart, as_utc, chunks, utcnow
from connector_core.ledger.held import release_held
from connector_core.ledger.records import BuiltDocument, PendingDocument, SubmissionRecord, SubmittedDocument
from connector_core.ledger.schema import document_bodies, documents, submissions
from connector_core.ledger.states import SubmissionState

D = DocumentState
S = SubmissionState
#: A document with its body, when it still has one (a final one's may be pruned).
_WITH_BODY = documents.outerjoin(document_bodies, document_bodies.c.document_id == documents.c.id)


@dataclass(frozen=True)
class Claim:
    """The result of claiming documents into a new submission. ``submission_id`` is None when
    another writer took (or changed) every one of them first: nothing was opened."""

    submission_id: int | None
    claimed: list[int] = field(default_factory=list)
    lost: list[int] = field(default_factory=list)

    @property
    def won(self) -> bool:
        return self.submission_id is not None


class Sends(LedgerPart):
    """The submit and reconcile stages' writes."""

    # --- claiming ---------------------------------------------------------------------------

    def pending_documents(self, profile: str, limit: int) -> list[PendingDocument]:
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(
                    documents.c.id,
                    documents.c.source,
                    documents.c.source_key,
                    documents.c.version,
                    documents.c.number,
                    documents.c.fingerprint,
                    document_bodies.c.invoice_json,
                    document_bodies.c.document,
                    documents.c.document_hash,
                    documents.c.issued_at,
                )
                .select_from(_WITH_BODY)
                .where(documents.c.profile == profile, documents.c.state == D.PENDING.value)
                .order_by(documents.c.id)
                .limit(limit)
            )
            return [PendingDocument(**{**r._asdict(), "issued_at": as_utc(r.issued_at)}) for r in rows]

    def refuse_too_large(self, doc_id: int, fingerprint: str, problems: list[str]) -> states.Moved:
        """The built document is over MyInvois's size limit: refused before sending."""
        now = utcnow()
        with self.engine.begin() as conn:
            return states.move(
                conn,
                states.doc("too_large"),
                documents.c.id == doc_id,
                documents.c.fingerprint == fingerprint,
                values={"errors": json.dumps(problems), "updated_at": now, "final_at": now},
                expected=1,
            )

    def claim(self, *, profile: str, built: Sequence[BuiltDocument]) -> Claim:
        """Open a ``sending`` submission and claim ``built`` into it, storing the bytes that
        will go on the wire. A document is claimed only if it is still ``pending`` with the
        content it was built from (and, for reused bytes, still those bytes): an ERP edit or
        another connector's claim in between makes it lost, not overwritten."""
        now = utcnow()
        with self.engine.connect() as conn:
            with conn.begin() as transaction:
                sub_id = states.insert_state(
                    conn,
                    states.sub("open"),
                    [
                        {
                            "profile": profile,
                            "payload_hash": "",
                            "document_count": 0,
                            "created_at": now,
                            "sent_at": now,
                            "first_sent_at": now,
                            "claimed_at": now,
                            "poll_count": 0,
                            "reconcile_attempts": 0,
                            "sender": self.sender,
                        }
                    ],
                )[0]
                fresh = [d for d in built if d.fresh]
                reused = [d for d in built if not d.fresh]
                common = {"submission_id": sub_id, "attempts": documents.c.attempts + 1, "updated_at": now}
                if fresh:
                    states.move(
                        conn,
                        states.doc("claim"),
                        documents.c.id == bindparam("b_id"),
                        documents.c.fingerprint == bindparam("b_fp"),
                        values={**common, "document_hash": bindparam("b_hash"), "issued_at": bindparam("b_at")},
                        rows=[
                            {"b_id": d.id, "b_fp": d.fingerprint, "b_hash": d.document_hash, "b_at": d.issued_at}
                            for d in fresh
                        ],
                    )
                if reused:
                    states.move(
                        conn,
                        states.doc("claim"),
                        documents.c.id == bindparam("b_id"),
                        documents.c.fingerprint == bindparam("b_fp"),
                        documents.c.document_hash == bindparam("b_hash"),
                        values=common,
                        rows=[{"b_id": d.id, "b_fp": d.fingerprint, "b_hash": d.document_hash} for d in reused],
                    )
                claimed = conn.execute(
                    select(documents.c.id, documents.c.document_hash)
                    .where(documents.c.submission_id == sub_id)
                    .order_by(documents.c.id)
                ).all()
                if not claimed:
                    # Lost every one: no empty submission is left behind.
                    transaction.rollback()
                    return Claim(None, [], [d.id for d in built])
                # The bytes of the documents this claim won, and only those: a lost one keeps
                # the body its new content (an ERP edit) gave it.
                won = {r.id for r in claimed}
                bodies.set_documents(conn, [(d.id, d.content) for d in fresh if d.id in won])
                payload_hash = hashlib.sha256("".join(r.document_hash or "" for r in claimed).encode()).hexdigest()
                conn.execute(
                    submissions.update()
                    .where(submissions.c.id == sub_id)
                    .values(payload_hash=payload_hash, document_count=len(claimed))
                )
        ids = {r.id for r in claimed}
        return Claim(sub_id, [r.id for r in claimed], [d.id for d in built if d.id not in ids])

    # --- the answer -------------------------------------------------------------------------

    def submission_accepted(
        self,
        submission_id: int,
        *,
        submission_uid: str | None,
        accepted: Sequence[tuple[str, str]],
        rejected: Sequence[tuple[str, list[str], list[dict[str, Any]]]],
        next_poll_at: datetime | None,
    ) -> states.Moved:
        """Record a 202: uuids and rejections by code number. Documents the answer does not
        name stay ``submitting`` and are resolved from Get Submission by the poll."""
        now = utcnow()
        with self.engine.begin() as conn:
            by_number = self._claimed_by_number(conn, submission_id)
            named = {n for n, _ in accepted} | {n for n, _e, _d in rejected}
            unnamed = [n for n in by_number if n not in named]
            keeps_open = bool(submission_uid) and bool([n for n, _ in accepted if n in by_number] or unnamed)
            moved = states.move(
                conn,
                states.sub("answered_accepted" if keeps_open else "answered_all_rejected"),
                submissions.c.id == submission_id,
                owner=self.sender,
                values={
                    "submission_uid": submission_uid,
                    "accepted_at": now,
                    "next_poll_at": next_poll_at if keeps_open else None,
                    "error": None,
                },
                expected=1,
            )
            if moved.lost:
                return moved
            claimed.accept(conn, submission_id, _by_id(by_number, accepted), now)
            self._reject_documents(conn, submission_id, by_number, rejected, now, as_batch=False)
            if not keeps_open:
                # No uid to poll: what the answer did not name certainly was not accepted in it.
                claimed.release(conn, submission_id, [by_number[n] for n in unnamed], now)
            release_held(conn)
            return moved

    def submission_in_doubt(self, submission_id: int, reason: str) -> states.Moved:
        """The call may have reached MyInvois; its answer was lost. Its documents stay claimed."""
        with self.engine.begin() as conn:
            return states.move(
                conn,
                states.sub("answer_lost"),
                submissions.c.id == submission_id,
                owner=self.sender,
                values={"error": reason},
                expected=1,
            )

    def submission_refused(self, submission_id: int, errors: list[str], details: list[dict[str, Any]]) -> states.Moved:
        """400/403 on the envelope: every document of the batch is rejected, with the reason."""
        now = utcnow()
        with self.engine.begin() as conn:
            moved = states.move(
                conn,
                states.sub("answered_refused"),
                submissions.c.id == submission_id,
                owner=self.sender,
                values={"error": "; ".join(errors)},
                expected=1,
            )
            if moved.lost:
                return moved
            by_number = self._claimed_by_number(conn, submission_id)
            self._reject_documents(
                conn, submission_id, by_number, [(n, errors, details) for n in by_number], now, as_batch=True
            )
            release_held(conn)
            return moved

    def submission_not_sent(self, submission_id: int, reason: str) -> states.Moved:
        """The call certainly never reached MyInvois: its documents go back to pending."""
        now = utcnow()
        with self.engine.begin() as conn:
            moved = states.move(
                conn,
                states.sub("answered_not_sent"),
                submissions.c.id == submission_id,
                owner=self.sender,
                values={"error": reason},
                expected=1,
            )
            if moved.won:
                claimed.release(conn, submission_id, None, now)
            return moved

    def submission_withdrawn(self, submission_id: int) -> states.Moved:
        """The request never left this host (MyInvois unreachable, no token): its documents go
        back to pending as if never claimed (the attempt is not counted) and the submission row
        is removed, so an outage leaves no row per attempt. Only while it is still ours and
        ``sending``; if another connector took it meanwhile, nothing changes."""
        now = utcnow()
        with self.engine.connect() as conn:
            with conn.begin() as transaction:
                # Documents first (they reference the row), then the compare-and-set removal;
                # a lost removal undoes the release with the transaction.
                states.move(
                    conn,
                    states.doc("not_sent"),
                    documents.c.submission_id == submission_id,
                    owner=submission_id,
                    values={"submission_id": None, "attempts": documents.c.attempts - 1, "updated_at": now},
                )
                moved = states.remove(
                    conn, states.sub("withdrawn"), submissions.c.id == submission_id, owner=self.sender, expected=1
                )
                if moved.lost:
                    transaction.rollback()
                return moved

    # --- reconciliation ---------------------------------------------------------------------

    def unresolved_submissions(self, profile: str) -> list[SubmissionRecord]:
        """Submissions in doubt, waiting for a connector to reconcile them. A ``sending`` one is
        not: its call may still be in progress, here or in another connector."""
        return self._submissions(
            and_(submissions.c.profile == profile, submissions.c.state == S.IN_DOUBT.value), with_documents=True
        )

    def take_reconciliation(self, submission_id: int) -> states.Moved:
        """Become the one connector reconciling this submission."""
        now = utcnow()
        with self.engine.begin() as conn:
            return states.move(
                conn,
                states.sub("reconcile"),
                submissions.c.id == submission_id,
                values={
                    "sender": self.sender,
                    "claimed_at": now,
                    "reconcile_attempts": submissions.c.reconcile_attempts + 1,
                },
                expected=1,
            )

    def reconciled_found(
        self,
        submission_id: int,
        *,
        submission_uid: str,
        accepted: Sequence[tuple[str, str]],
        missing: Sequence[int],
        next_poll_at: datetime,
    ) -> states.Moved:
        """Search found the submission at MyInvois: its documents take their uuids, and those it
        did not accept (refused on arrival, the reason was in the lost answer) go back to
        pending. One transaction: a crash leaves all of it or none."""
        now = utcnow()
        with self.engine.begin() as conn:
            moved = states.move(
                conn,
                states.sub("found"),
                submissions.c.id == submission_id,
                owner=self.sender,
                values={
                    "submission_uid": submission_uid,
                    "accepted_at": now,
                    "next_poll_at": next_poll_at,
                    "error": None,
                },
                expected=1,
            )
            if moved.lost:
                return moved
            claimed.accept(conn, submission_id, _by_id(self._claimed_by_number(conn, submission_id), accepted), now)
            claimed.release(conn, submission_id, missing, now)
            return moved

    def still_in_doubt(self, submission_id: int, reason: str, *, searched: bool = True) -> states.Moved:
        """Give the reconciliation back: the search failed or may lag; a later cycle tries again.

        ``searched=False``: MyInvois was never asked (no token, throttled, unreachable), so the
        attempt counted when it was taken is given back: ``reconcile_max_attempts`` counts
        searches, and a login back-off must not use them all up in a second."""
        values: dict[str, object] = {"error": reason}
        if not searched:
            values["reconcile_attempts"] = submissions.c.reconcile_attempts - 1
        with self.engine.begin() as conn:
            return states.move(
                conn,
                states.sub("still_in_doubt"),
                submissions.c.id == submission_id,
                owner=self.sender,
                values=values,
                expected=1,
            )

    def start_resend(self, submission_id: int) -> states.Moved:
        """Before re-sending the identical payload. ``first_sent_at`` stays: the search window
        of a later reconciliation must still cover the first send."""
        now = utcnow()
        with self.engine.begin() as conn:
            return states.move(
                conn,
                states.sub("resend"),
                submissions.c.id == submission_id,
                owner=self.sender,
                values={"sent_at": now, "claimed_at": now},
                expected=1,
            )

    def escalate(self, submission_id: int, reason: str) -> states.Moved:
        with self.engine.begin() as conn:
            return states.move(
                conn,
                states.sub("escalate"),
                submissions.c.id == submission_id,
                owner=self.sender,
                values={"error": reason},
                expected=1,
            )

    def nothing_left(self, submission_id: int) -> states.Moved:
        """None of its documents is still claimed in doubt: close it (never with one open)."""
        with self.engine.begin() as conn:
            open_docs = (
                select(func.count())
                .select_from(documents)
                .where(documents.c.submission_id == submission_id, documents.c.state.in_(list(states.IN_FLIGHT)))
                .scalar_subquery()
            )
            return states.move(
                conn,
                states.sub("nothing_left"),
                submissions.c.id == submission_id,
                open_docs == 0,
                owner=self.sender,
                expected=1,
            )

    # --- recovery ---------------------------------------------------------------------------

    def recover_after_crash(self, *, abandoned_before: datetime) -> int:
        """At start-up: a submission this connector held when it stopped (sending, re-sending or
        reconciling) may have reached MyInvois: it is in doubt. So is one held by any connector
        since before ``abandoned_before`` (longer than a call can last: its holder is gone).
        Another connector's call in progress is left to it."""
        # No sender recorded (a ledger from before senders were named): treated as ours, the safe side.
        ours_or_abandoned = [submissions.c.sender.is_(None), submissions.c.claimed_at < abandoned_before]
        if self.sender is not None:
            ours_or_abandoned.append(submissions.c.sender == self.sender)
        return self._interrupt(or_(*ours_or_abandoned), "the connector stopped while it held this submission")

    def recover_abandoned(self, *, abandoned_before: datetime) -> int:
        """While running: a submission held since before any call can last was left by a
        connector sharing this ledger that stopped and has not come back."""
        return self._interrupt(
            submissions.c.claimed_at < abandoned_before,
            "the connector that held this submission stopped and did not come back",
        )

    def _interrupt(self, condition, error: str) -> int:
        with self.engine.begin() as conn:
            return states.move(conn, states.sub("interrupted"), condition, values={"error": error}).count

    # --- internals --------------------------------------------------------------------------

    @staticmethod
    def _claimed_by_number(conn, submission_id: int) -> dict[str, int]:
        return {
            r.number: r.id
            for r in conn.execute(
                select(documents.c.id, documents.c.number).where(
                    documents.c.submission_id == submission_id, documents.c.state == D.SUBMITTING.value
                )
            )
        }

    @staticmethod
    def _reject_documents(
        conn, submission_id: int, by_number: dict[str, int], rejected, now, *, as_batch: bool
    ) -> None:
        rows = [
            {"b_id": by_number[number], "b_errors": json.dumps(errors), "b_details": json.dumps(details)}
            for number, errors, details in rejected
            if number in by_number
        ]
        if rows:
            states.move(
                conn,
                states.doc("rejected"),
                documents.c.id == bindparam("b_id"),
                owner=submission_id,
                values={
                    "errors": bindparam("b_errors"),
                    "error_details": bindparam("b_details"),
                    "refused_as_batch": as_batch,
                    "updated_at": now,
                    "final_at": now,
                },
                rows=rows,
            )

    def _submissions(
        self, cond, *, order=None, limit=None, with_documents=False, with_content=True
    ) -> list[SubmissionRecord]:
        with self.engine.connect() as conn:
            return load_submissions(
                conn, cond, order=order, limit=limit, with_documents=with_documents, with_content=with_content
            )


def _by_id(by_number: dict[str, int], accepted: Sequence[tuple[str, str]]) -> list[tuple[int, str]]:
    """(code number, uuid) from MyInvois's answer -> (document id, uuid) of our claimed rows."""
    return [(by_number[number], uuid) for number, uuid in accepted if number in by_number]


def load_submissions(
    conn, cond, *, order=None, limit=None, with_documents=False, with_content=True
) -> list[SubmissionRecord]:
    stmt = select(submissions).where(cond).order_by(order if order is not None else submissions.c.id)
    if limit is not None:
        stmt = stmt.limit(limit)
    rows = list(conn.execute(stmt))
    docs = documents_of(conn, [r.id for r in rows], with_content=with_content) if with_documents else {}
    return [
        SubmissionRecord(
            id=r.id,
            profile=r.profile,
            state=r.state,
            submission_uid=r.submission_uid,
            payload_hash=r.payload_hash,
            document_count=r.document_count,
            created_at=as_utc(r.created_at),
            sent_at=as_utc(r.sent_at),
            first_sent_at=as_utc(r.first_sent_at),
            poll_count=r.poll_count,
            reconcile_attempts=r.reconcile_attempts,
            sender=r.sender,
            documents=docs.get(r.id, []),
        )
        for r in rows
    ]


def documents_of(conn, submission_ids: list[int], *, with_content: bool = True) -> dict[int, list[SubmittedDocument]]:
    """The documents of some submissions; ``with_content=False`` leaves out the built bytes
    (polling never needs them; only a re-send does)."""
    out: dict[int, list[SubmittedDocument]] = {}
    content = document_bodies.c.document if with_content else literal_column("NULL").label("document")
    for chunk in chunks(submission_ids):
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
                documents.c.document_type,
            )
            .select_from(_WITH_BODY if with_content else documents)
            .where(documents.c.submission_id.in_(chunk))
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
                    issued_at=as_utc(r.issued_at),
                    state=r.state,
                    document_type=r.document_type,
                )
            )
    return out
