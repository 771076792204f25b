"""Counters and incidents: what ``status``, metrics and operators read about the connector's
own life (429s, logins, lost races, plugin errors), beside the documents' states."""

from __future__ import annotations

from typing import Any

from sqlalchemy import insert, select, update
from sqlalchemy.engine import Connection

from connector_core.ledger.database import LedgerPart, iso, utcnow
from connector_core.ledger.schema import counters, incidents

#: Counts documents that left a final state (a valid one whose buyer asked to reject it, or that
#: was cancelled, or that our cancel is about): the documents gauge recounts when it moved.
FINAL_STATE_LEFT = "documents_left_a_final_state"


def increment_in(conn: Connection, name: str, by: int = 1) -> None:
    """Add ``by`` to counter ``name`` inside the caller's transaction (so it commits, or not,
    with the change it counts)."""
    updated = conn.execute(update(counters).where(counters.c.name == name).values(value=counters.c.value + by)).rowcount
    if not updated:
        try:
            with conn.begin_nested():
                conn.execute(insert(counters).values(name=name, value=by))
        except Exception:
            # Another writer inserted it first: add to theirs.
            conn.execute(update(counters).where(counters.c.name == name).values(value=counters.c.value + by))


def counter_in(conn: Connection, name: str) -> int:
    return conn.execute(select(counters.c.value).where(counters.c.name == name)).scalar() or 0


class Journal(LedgerPart):
    def increment(self, name: str, by: int = 1) -> None:
        with self.engine.begin() as conn:
            increment_in(conn, name, by)

    def counter_values(self) -> dict[str, int]:
        with self.engine.connect() as conn:
            return {r.name: r.value for r in conn.execute(select(counters))}

    def add_incident(self, kind: str, message: str, subject: str | None = None) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(incidents).values(at=utcnow(), kind=kind, subject=subject, message=message[:4000]))

    def recent_incidents(self, limit: int = 10) -> list[dict[str, Any]]:
        with self.engine.connect() as conn:
            rows = conn.execute(select(incidents).order_by(incidents.c.id.desc()).limit(limit))
            return [{"at": iso(r.at), "kind": r.kind, "subject": r.subject, "message": r.message} for r in rows]
