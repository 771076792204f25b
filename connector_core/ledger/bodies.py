"""The bulky part of a document, beside its row: the invoice JSON it was built from and the
exact bytes sent (``document_bodies``).

Written once: the invoice JSON when the invoice is recorded, the bytes when it is claimed. An
ERP edit before the claim replaces both (the row is still ``pending`` or ``held``); nothing else
ever rewrites them.

Kept while they can be needed: building (pending), sending and re-sending the identical bytes
after a lost answer (in flight). Once a document is final, nothing sends it again; its bytes
stay for ``ledger.keep_bodies_days`` (at least MyInvois's 72-hour cancellation window, so an
operator can still look at what was sent) and are then pruned. The row keeps what an audit
needs: the hash of the bytes, uuid, longId, times and errors.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, insert, select, update

from connector_core.ledger import states
from connector_core.ledger.database import LedgerPart, chunks, utcnow
from connector_core.ledger.journal import Journal
from connector_core.ledger.schema import bookmarks, document_bodies, documents

#: Documents whose bodies one pruning statement removes: small enough that a pruning run never
#: holds the write lock for long (SQLite has one writer), large enough to keep up with
#: MyInvois's ceiling of 10,000 documents a minute in a few statements.
PRUNE_BATCH = 2000

#: How often the daemon's maintenance looks for bodies to prune.
PRUNE_EVERY_SECONDS = 60.0

log = logging.getLogger("connector_core.ledger")
#: The bookmark of the pruning: the last document it looked at.
_PRUNED_TO = "bodies_pruned_to"

# Compiled once; run as executemany with one parameter set per document.
_INSERT = insert(document_bodies)
_INSERT_BY_KEY = insert(document_bodies).from_select(
    ["document_id", "invoice_json"],
    select(documents.c.id, bindparam("b_json", type_=document_bodies.c.invoice_json.type)).where(
        documents.c.source == bindparam("b_source"),
        documents.c.source_key == bindparam("b_key"),
        documents.c.version == bindparam("b_version"),
    ),
)
_SET_DOCUMENT = (
    update(document_bodies)
    .where(document_bodies.c.document_id == bindparam("b_id"))
    .values(document=bindparam("b_doc"))
)


class BodyPruned(LookupError):
    """A body was asked for after it was pruned. Only a final document's body is ever pruned,
    and nothing in the connector needs a final document's bytes again."""

    def __init__(self, doc_id: int) -> None:
        super().__init__(
            f"document {doc_id} is final and its invoice JSON and built bytes were pruned after "
            "ledger.keep_bodies_days; the ledger keeps its hash, uuid, longId, times and errors, "
            "and MyInvois keeps the document itself (Get Document by uuid)"
        )


def write(conn, source: str, rows: Sequence[tuple[str, int, str]]) -> None:
    """New bodies of rows just inserted: (source key, version, invoice JSON). Each finds its
    document id through the unique key, in the same statement: no id has to come back from
    the insert (SQLite gives RETURNING of a batch only one row per statement)."""
    if rows:
        conn.execute(
            _INSERT_BY_KEY,
            [{"b_source": source, "b_key": key, "b_version": v, "b_json": body} for key, v, body in rows],
        )


def replace_invoice(conn, doc_id: int, invoice_json: str | None) -> None:
    """An ERP edit of a row not claimed yet: the new content, and no built bytes."""
    conn.execute(delete(document_bodies).where(document_bodies.c.document_id == doc_id))
    if invoice_json is not None:
        conn.execute(_INSERT, [{"document_id": doc_id, "invoice_json": invoice_json}])


def set_documents(conn, rows: Sequence[tuple[int, str | None]]) -> None:
    """The bytes to send, stored by the claim: (document id, content)."""
    if not rows:
        return
    updated = conn.execute(_SET_DOCUMENT, [{"b_id": doc_id, "b_doc": content} for doc_id, content in rows]).rowcount
    if updated != len(rows):
        # A row without a body (recorded without invoice JSON, or by a tool): the bytes sent
        # must be kept all the same, or a re-send after a lost answer could not be identical.
        have = set(
            conn.execute(
                select(document_bodies.c.document_id).where(document_bodies.c.document_id.in_([i for i, _ in rows]))
            ).scalars()
        )
        missing = [{"document_id": i, "document": content} for i, content in rows if i not in have]
        if missing:
            conn.execute(_INSERT, missing)


class Bodies(LedgerPart):
    """Reading one body, and pruning those of final documents."""

    def __init__(self, engine, sender) -> None:
        super().__init__(engine, sender)
        self._last_run: float | None = None

    def content(self, doc_id: int) -> tuple[str | None, str | None]:
        """(invoice JSON, built bytes) of one document; raises :class:`BodyPruned` if its body
        was pruned, (None, None) for a document that never had one (refused before building)."""
        with self.engine.connect() as conn:
            row = conn.execute(
                select(documents.c.state, document_bodies.c.document_id, document_bodies.c.invoice_json,
                       document_bodies.c.document)
                .select_from(documents.outerjoin(document_bodies, document_bodies.c.document_id == documents.c.id))
                .where(documents.c.id == doc_id)
            ).first()  # fmt: skip
        if row is None:
            return None, None
        if row.document_id is None:
            if row.state in states.FINAL:
                raise BodyPruned(doc_id)
            return None, None
        return row.invoice_json, row.document

    def prune_if_due(self, keep_days: float) -> int:
        """:meth:`prune`, at most once every :data:`PRUNE_EVERY_SECONDS`: the daemon calls it
        after every poll cycle (every 2 s by default), and a day's retention needs no finer grain."""
        now = time.monotonic()
        if self._last_run is not None and now - self._last_run < PRUNE_EVERY_SECONDS:
            return 0
        self._last_run = now
        removed = self.prune(keep_days)
        if removed:
            Journal(self.engine, self.sender).increment("bodies_pruned", removed)
            log.info(
                "pruned the invoice JSON and sent bytes of %d final document(s) (ledger.keep_bodies_days)", removed
            )
        return removed

    def prune(self, keep_days: float, *, now: datetime | None = None, batch: int = PRUNE_BATCH) -> int:
        """Remove the bodies of documents final for more than ``keep_days``; return how many.

        Reads documents in the order they became final (ix_documents_final_at), from where the
        previous run stopped: the ``bookmarks`` row, moved in the same transaction as the
        deletes. Each batch is its own short transaction."""
        cutoff = (now or utcnow()) - timedelta(days=keep_days)
        removed = 0
        while True:
            with self.engine.begin() as conn:
                mark = conn.execute(
                    select(bookmarks.c.at, bookmarks.c.last_id).where(bookmarks.c.name == _PRUNED_TO)
                ).first()
                # No condition on the state in SQL: final_at alone keeps the read on the index
                # range. The rare row with a final_at that is not final (an edit held with its
                # problems) is skipped; it becomes final later with a new final_at, after the mark.
                columns = select(documents.c.id, documents.c.final_at, documents.c.state)
                order = (documents.c.final_at, documents.c.id)
                rows: list[Any] = []
                if mark is not None:
                    # The rest of the mark's own final_at first (a poll finalises a hundred with
                    # one time), then what follows: two index ranges, where one condition
                    # "after (at, last_id)" is read from ``at`` on by SQLite, mark's peers included.
                    rows += conn.execute(
                        columns.where(
                            documents.c.final_at == mark.at,
                            documents.c.id > mark.last_id,
                            documents.c.final_at <= cutoff,
                        )
                        .order_by(*order)
                        .limit(batch)
                    ).all()
                if len(rows) < batch:
                    after = columns.where(documents.c.final_at <= cutoff)
                    if mark is not None:
                        after = after.where(documents.c.final_at > mark.at)
                    rows += conn.execute(after.order_by(*order).limit(batch - len(rows))).all()
                if not rows:
                    return removed
                for chunk in chunks([r.id for r in rows if r.state in states.FINAL]):
                    deleted = conn.execute(delete(document_bodies).where(document_bodies.c.document_id.in_(chunk)))
                    removed += deleted.rowcount or 0
                last = {"at": rows[-1].final_at, "last_id": rows[-1].id}
                if mark is None:
                    conn.execute(insert(bookmarks).values(name=_PRUNED_TO, **last))
                    continue
                moved = conn.execute(
                    update(bookmarks)
                    .where(
                        bookmarks.c.name == _PRUNED_TO, bookmarks.c.at == mark.at, bookmarks.c.last_id == mark.last_id
                    )
                    .values(**last)
                ).rowcount
            # Moved by another connector pruning the same range meanwhile (the deletes were the
            # same, and harmless twice): it carries on from there.
            if moved != 1 or len(rows) < batch:
                return removed

    def stored(self) -> dict[str, Any]:
        """What ``status`` says about bodies: how many are kept. Counts the side table (bounded
        by the retention), not the ledger; for ``status``, never run per cycle."""
        with self.engine.connect() as conn:
            count = conn.execute(select(func.count()).select_from(document_bodies)).scalar()
        return {"kept": int(count or 0)}
