"""Edits that waited: a ``held`` version moves on once the version before it is final.

Called at the end of every transaction that can make a document final (a submit answer, a
reconciliation, a poll), inside that transaction, so that a crash never leaves an edit waiting
behind a version that has already finished.
"""

from __future__ import annotations

import json

from sqlalchemy import and_, select
from sqlalchemy.orm import aliased

from connector_core.contract import DocumentState
from connector_core.ledger import states
from connector_core.ledger.database import utcnow
from connector_core.ledger.intake import changed_after_valid_message
from connector_core.ledger.schema import documents

D = DocumentState


def release_held(conn) -> int:
    """Move every ``held`` version whose predecessor is final; return how many moved."""
    previous = aliased(documents)
    rows = conn.execute(
        select(
            documents.c.id,
            documents.c.number,
            documents.c.errors,
            previous.c.state.label("previous_state"),
            previous.c.uuid,
            previous.c.long_id,
            previous.c.validation_link,
        )
        .join(
            previous,
            and_(
                previous.c.source == documents.c.source,
                previous.c.source_key == documents.c.source_key,
                previous.c.version == documents.c.version - 1,
            ),
        )
        .where(documents.c.state == D.HELD.value, previous.c.state.in_(states.FINAL))
    ).all()
    moved = 0
    now = utcnow()
    for r in rows:
        if r.previous_state in states.AFTER_VALID:
            result = states.move(
                conn,
                states.doc("release_held_after_valid"),
                documents.c.id == r.id,
                values={
                    "uuid": r.uuid,
                    "long_id": r.long_id,
                    "validation_link": r.validation_link,
                    "errors": json.dumps([changed_after_valid_message(r.number, r.uuid)]),
                    "updated_at": now,
                    "final_at": now,
                },
            )
        elif r.errors:
            result = states.move(
                conn,
                states.doc("release_held_invalid"),
                documents.c.id == r.id,
                values={"updated_at": now, "final_at": now},
            )
        else:
            result = states.move(conn, states.doc("release_held"), documents.c.id == r.id, values={"updated_at": now})
        moved += result.count
    return moved
