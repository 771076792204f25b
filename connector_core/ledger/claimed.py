"""Moves of documents claimed by a submission, shared by every writer that learns their fate:
the submit answer, a reconciliation, and a poll of a 202 that did not name them all."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from sqlalchemy import bindparam

from connector_core.ledger import states
from connector_core.ledger.schema import documents


def accept(conn, submission_id: int, accepted: Sequence[tuple[int, str]], now: datetime) -> None:
    """``accepted``: (document id, uuid) of documents MyInvois took in this submission."""
    if accepted:
        # One executemany, not one UPDATE per document: building a statement per row cost
        # more CPU than the whole rest of recording the answer (benchmarks/, docs/performance.md).
        states.move(
            conn,
            states.doc("accepted"),
            documents.c.id == bindparam("b_id"),
            owner=submission_id,
            values={"uuid": bindparam("b_uuid"), "submitted_at": now, "updated_at": now},
            rows=[{"b_id": doc_id, "b_uuid": uuid} for doc_id, uuid in accepted],
        )


def release(conn, submission_id: int, doc_ids: Sequence[int] | None, now: datetime) -> None:
    """Certainly not at MyInvois in this submission: back to pending, free to be claimed again.
    ``doc_ids=None``: every document the submission still holds."""
    if doc_ids is not None and not doc_ids:
        return
    where = documents.c.submission_id == submission_id if doc_ids is None else documents.c.id.in_(list(doc_ids))
    states.move(
        conn, states.doc("not_sent"), where, owner=submission_id, values={"submission_id": None, "updated_at": now}
    )
