"""Polling: which accepted submissions are due, and what Get Submission said about them.

A submission closes (``done``) only in the same statement that finds none of its documents
open, so no submission is ever closed while a document of it is unresolved.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import and_, bindparam, func, select, update

from connector_core.contract import DocumentState
from connector_core.ledger import claimed, states
from connector_core.ledger.database import LedgerPart, as_utc, utcnow
from connector_core.ledger.held import release_held
from connector_core.ledger.records import DocumentStatusUpdate, SubmissionRecord, SubmittedDocument
from connector_core.ledger.schema import document_bodies, documents, submissions
from connector_core.ledger.sends import documents_of, load_submissions
from connector_core.ledger.states import SubmissionState
from connector_core.ledger.watch import close_or_watch

D = DocumentState
_BY_STATE = {D.VALID: "validated", D.INVALID: "invalidated", D.CANCELLED: "cancelled"}


class Polls(LedgerPart):
    """The poll stage's reads and writes."""

    def submissions_due(self, profile: str, now: datetime, limit: int) -> list[SubmissionRecord]:
        cond = and_(
            submissions.c.profile == profile,
            submissions.c.state == SubmissionState.ACCEPTED.value,
            submissions.c.next_poll_at <= now,
        )
        with self.engine.connect() as conn:
            return load_submissions(
                conn, cond, order=submissions.c.next_poll_at, limit=limit, with_documents=True, with_content=False
            )

    def next_poll_time(self, profile: str | None = None) -> datetime | None:
        cond = submissions.c.state == SubmissionState.ACCEPTED.value
        if profile is not None:
            cond = and_(cond, submissions.c.profile == profile)
        with self.engine.connect() as conn:
            return as_utc(conn.execute(select(func.min(submissions.c.next_poll_at)).where(cond)).scalar())

    def documents_of(self, submission_id: int) -> list[SubmittedDocument]:
        with self.engine.connect() as conn:
            return documents_of(conn, [submission_id]).get(submission_id, [])

    def record_poll(
        self,
        submission_id: int,
        *,
        overall_status: str | None,
        updates: Sequence[DocumentStatusUpdate] = (),
        next_poll_at: datetime | None,
        found_unnamed: Sequence[tuple[int, str]] = (),
        not_in_submission: Sequence[int] = (),
        watch_interval: timedelta | None = None,
    ) -> bool:
        """Record one Get Submission round; return True when it closed the submission (done,
        or watching: see :mod:`.watch`, polled every ``watch_interval`` from then on).

        ``found_unnamed``: (document id, uuid) of documents the 202 did not name and Get
        Submission lists; ``not_in_submission``: documents it does not list although it is
        complete: certainly not accepted in it, so free to be sent again."""
        now = utcnow()
        with self.engine.begin() as conn:
            claimed.accept(conn, submission_id, found_unnamed, now)
            claimed.release(conn, submission_id, not_in_submission, now)
            # Updates that set the same columns share one executemany (a poll of a valid
            # submission is a single statement); an UPDATE per document cost a statement build per row.
            by_columns: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
            # Each update finds its row by primary key: by uuid and owner alone, SQLite (no
            # statistics) read the submission's whole index range for every row, a hundred
            # rows per update. A uuid not among the submission's submitted documents would not
            # move anyway: the compare-and-set below still names uuid, state and owner.
            ids = _submitted_ids(conn, submission_id) if updates else {}
            for u in updates:
                if u.uuid not in ids:
                    continue
                values: dict[str, Any] = {"updated_at": now, "final_at": now}
                if u.long_id:
                    values["long_id"] = u.long_id
                if u.validation_link:
                    values["validation_link"] = u.validation_link
                if u.validated_at:
                    values["validated_at"] = u.validated_at
                if u.watch_until:
                    values["watch_until"] = u.watch_until
                if u.errors:
                    values["errors"] = json.dumps(u.errors)
                    values["error_details"] = json.dumps(u.error_details)
                key = (_BY_STATE[u.state], tuple(values))
                by_columns.setdefault(key, []).append(
                    {"b_id": ids[u.uuid], "b_uuid": u.uuid, **{f"b_{k}": v for k, v in values.items()}}
                )
            for (name, columns), rows in by_columns.items():
                states.move(
                    conn,
                    states.doc(name),
                    documents.c.id == bindparam("b_id"),
                    documents.c.uuid == bindparam("b_uuid"),
                    owner=submission_id,
                    values={column: bindparam(f"b_{column}") for column in columns},
                    rows=rows,
                )
            release_held(conn)
            conn.execute(
                update(submissions)
                .where(submissions.c.id == submission_id, submissions.c.state == SubmissionState.ACCEPTED.value)
                .values(
                    overall_status=overall_status,
                    last_polled_at=now,
                    poll_count=submissions.c.poll_count + 1,
                    next_poll_at=next_poll_at,
                )
            )
            # Nothing open any more: done, or watched while a document is inside its window.
            return close_or_watch(conn, submission_id, now, watch_interval).won

    def adopt(
        self,
        doc_id: int,
        submission_id: int,
        *,
        uuid: str,
        state: DocumentState,
        long_id: str | None,
        validation_link: str | None,
    ) -> states.Moved:
        """DS302 named our own earlier, identical document: it is this invoice's one accepted
        document, and its state is this document's."""
        now = utcnow()
        with self.engine.begin() as conn:
            moved = states.move(
                conn,
                states.doc(_BY_STATE[state]),
                documents.c.id == doc_id,
                owner=submission_id,
                values={
                    "uuid": uuid,
                    "long_id": long_id,
                    "validation_link": validation_link,
                    "errors": None,
                    "error_details": None,
                    "updated_at": now,
                    "final_at": now,
                },
                expected=1,
            )
            release_held(conn)
            return moved

    def refuse_duplicate_number(
        self, doc_id: int, submission_id: int, *, errors: list[str], details: list[dict[str, Any]]
    ) -> states.Moved:
        """DS302 named another invoice's document: this row keeps none of its uuid, and the
        clerk is told which row holds the number."""
        now = utcnow()
        with self.engine.begin() as conn:
            moved = states.move(
                conn,
                states.doc("duplicate_of_other"),
                documents.c.id == doc_id,
                owner=submission_id,
                values={
                    "errors": json.dumps(errors),
                    "error_details": json.dumps(details),
                    "updated_at": now,
                    "final_at": now,
                },
                expected=1,
            )
            release_held(conn)
            return moved

    def holder_of(self, uuid: str) -> dict[str, Any] | None:
        """The ledger row that MyInvois document ``uuid`` belongs to, if any."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(
                    documents.c.id, documents.c.source, documents.c.source_key, documents.c.version, documents.c.number,
                    documents.c.state, documents.c.document_hash,
                )
                .where(documents.c.uuid == uuid, documents.c.state != D.CHANGED_AFTER_VALID.value)
                .order_by(documents.c.id)
                .limit(1)
            ).first()  # fmt: skip
            return dict(row._mapping) if row else None

    def document_content(self, doc_id: int) -> tuple[str | None, str | None]:
        """The stored bytes and hash of one document. The bytes are None once a final
        document's body was pruned (see :mod:`.bodies`); the hash is kept for good."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(document_bodies.c.document, documents.c.document_hash)
                .select_from(documents.outerjoin(document_bodies, document_bodies.c.document_id == documents.c.id))
                .where(documents.c.id == doc_id)
            ).first()
            return (row.document, row.document_hash) if row else (None, None)


def _submitted_ids(conn, submission_id: int) -> dict[str, int]:
    """uuid -> id of the submission's documents waiting for their outcome."""
    return {
        r.uuid: r.id
        for r in conn.execute(
            select(documents.c.uuid, documents.c.id).where(
                documents.c.submission_id == submission_id, documents.c.state == D.SUBMITTED.value
            )
        )
        if r.uuid is not None
    }
