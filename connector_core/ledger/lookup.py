"""Read-only questions about single invoices: which ledger rows an invoice number or ERP key
names, every version of one invoice with its submission, and the invoices that became final
in a period (for ``show``, ``history``, ``retry`` and ``export``).

Every statement reads through an index (tests/core/test_query_plans.py), so asking about one
invoice costs the same in a ledger of ten million: a number is looked up within the configured
profiles (``ix_documents_profile_number``), a key within the configured sources (the unique
``source, source_key, version``), a period through ``ix_documents_final_at``. Nothing here
writes.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from sqlalchemy import and_, select, union

from connector_core.ledger.database import LedgerPart
from connector_core.ledger.queries import _is_latest_version
from connector_core.ledger.schema import documents, submissions

#: Rows fetched from the database at a time while an export streams.
EXPORT_BATCH = 500

#: The submission columns shown beside each version, prefixed ``submission_`` in its row.
_SUBMISSION_COLUMNS = tuple(
    submissions.c[name].label(f"submission_{name}")
    for name in ("submission_uid", "state", "sent_at", "accepted_at", "first_sent_at", "overall_status", "error")
)


@dataclass(frozen=True)
class InvoiceRef:
    """One ERP invoice in the ledger (a source's row), by its latest version."""

    source: str
    source_key: str
    number: str
    version: int
    state: str
    profile: str

    def describe(self) -> str:
        return f"{self.number} (source {self.source}, key {self.source_key}, {self.state.replace('_', ' ')})"


class Lookup(LedgerPart):
    def find(
        self, invoice: str, *, sources: Sequence[str], profiles: Sequence[str], source: str | None = None
    ) -> list[InvoiceRef]:
        """The invoices ``invoice`` names: an ERP key of one of ``sources`` or an invoice number
        in one of ``profiles`` (any of its versions); only ``source``'s when given. Sorted by
        source and key; empty when none."""
        if not sources or not profiles:
            return []
        # Two index reads joined by UNION (which also drops duplicates): an OR of the two
        # would leave the choice of a plan reading both indexes to each database's planner.
        by_key = select(documents.c.source, documents.c.source_key).where(
            documents.c.source.in_(list(sources)), documents.c.source_key == invoice
        )
        by_number = select(documents.c.source, documents.c.source_key).where(
            documents.c.profile.in_(list(profiles)), documents.c.number == invoice
        )
        if source is not None:
            by_key = by_key.where(documents.c.source == source)
            by_number = by_number.where(documents.c.source == source)
        named = union(by_key, by_number)
        named_sq = named.subquery()
        stmt = (
            select(
                documents.c.source,
                documents.c.source_key,
                documents.c.number,
                documents.c.version,
                documents.c.state,
                documents.c.profile,
            )
            .join(
                named_sq,
                and_(documents.c.source == named_sq.c.source, documents.c.source_key == named_sq.c.source_key),
            )
            .where(_is_latest_version())
            .order_by(documents.c.source, documents.c.source_key)
        )
        with self.engine.connect() as conn:
            return [
                InvoiceRef(r.source, r.source_key, r.number, r.version, r.state, r.profile) for r in conn.execute(stmt)
            ]

    def versions(self, source: str, source_key: str) -> list[dict[str, Any]]:
        """Every version of one invoice, oldest first: the document's columns (no bodies) and
        its latest submission's as ``submission_*`` (None when it was never sent)."""
        stmt = (
            select(documents, *_SUBMISSION_COLUMNS)
            .select_from(documents.outerjoin(submissions, submissions.c.id == documents.c.submission_id))
            .where(documents.c.source == source, documents.c.source_key == source_key)
            .order_by(documents.c.version)
        )
        with self.engine.connect() as conn:
            return [dict(r._mapping) for r in conn.execute(stmt)]

    def final_between(self, since: datetime, until: datetime) -> Iterator[dict[str, Any]]:
        """Invoices whose latest version became final in ``[since, until)``, in the order they
        became final: that version's columns and its submission's uid. Streamed: the database
        hands rows over in batches, so an export of a whole year never holds it in memory."""
        stmt = (
            select(documents, submissions.c.submission_uid.label("submission_submission_uid"))
            .select_from(documents.outerjoin(submissions, submissions.c.id == documents.c.submission_id))
            .where(documents.c.final_at >= since, documents.c.final_at < until, _is_latest_version())
            .order_by(documents.c.final_at, documents.c.id)
        )
        with self.engine.connect() as conn:
            result = conn.execution_options(stream_results=True, yield_per=EXPORT_BATCH).execute(stmt)
            for row in result:
                yield dict(row._mapping)
