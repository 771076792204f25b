"""An ERP held in memory, for driving the exactly-once scenarios step by step.

It keeps what the SQL and Odoo plugins keep: one row per invoice with a MyInvois status
(``pending`` → ``queued`` when recorded → the final outcome), the uuid and the errors. A clerk
can edit a row, set it back to ``pending``, or make the ERP refuse to take one outcome (a
closed period). It is a real plugin, registered through the same hooks as any other.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass, field
from typing import Any

from pydantic import BaseModel, ConfigDict

from connector_core import hookimpl
from tests.document.factories import make_invoice


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ClosedPeriod(RuntimeError):
    """What an ERP says when an outcome lands in a closed accounting period."""


@dataclass
class Row:
    key: str
    number: str
    #: Bumped by each edit: it changes the invoice's content (a line description), not its totals.
    revision: int = 1
    status: str = "pending"
    uuid: str | None = None
    errors: list[str] = field(default_factory=list)
    #: Every outcome written back: (version, state, uuid).
    outcomes: list[tuple[int, str, str | None]] = field(default_factory=list)


class MemoryErp:
    __name__ = "memory-erp"

    def __init__(self, kind: str = "memory") -> None:
        self.kind = kind
        self.rows: dict[str, Row] = {}
        self.refuse: set[str] = set()
        self.lock = threading.RLock()
        #: Called after each page is recorded (the plugin's on_invoices_recorded): a test's hook
        #: to act in the middle of a cycle.
        self.on_recorded = None

    # --- what a clerk does ---------------------------------------------------------------

    def add(self, key: str, number: str | None = None) -> Row:
        with self.lock:
            row = Row(key, number or f"INV-{key}")
            self.rows[key] = row
            return row

    def edit(self, key: str, *, requeue: bool = False) -> None:
        with self.lock:
            self.rows[key].revision += 1
            if requeue:
                self.rows[key].status = "pending"

    def requeue(self, key: str) -> None:
        with self.lock:
            self.rows[key].status = "pending"

    # --- hooks ---------------------------------------------------------------------------

    @hookimpl
    def register_source_kinds(self, register):
        register(self.kind, _Options, description="in-memory ERP of the exactly-once tests")

    @hookimpl
    def fetch_pending_invoices(self, source, limit):
        with self.lock:
            rows = [r for r in self.rows.values() if r.status == "pending"][:limit]
            return [_invoice_of(r) for r in rows]

    @hookimpl
    def on_invoices_recorded(self, source, source_keys):
        with self.lock:
            for key in source_keys:
                if key in self.rows and self.rows[key].status == "pending":
                    self.rows[key].status = "queued"
        if self.on_recorded is not None:
            self.on_recorded(source_keys)

    @hookimpl
    def on_submission_result(self, source, outcomes):
        with self.lock:
            refused = [o for o in outcomes if o.source_key in self.refuse]
            if refused:
                raise ClosedPeriod(f"invoice {refused[0].number}: the accounting period is closed")
            for o in outcomes:
                row = self.rows[o.source_key]
                row.status = o.state.value
                row.uuid = o.uuid
                row.errors = list(o.errors)
                row.outcomes.append((o.version, o.state.value, o.uuid))


def _invoice_of(row: Row):
    invoice = make_invoice(source_key=row.key, number=row.number)
    if row.revision == 1:
        return invoice
    data: dict[str, Any] = invoice.model_dump(exclude_computed_fields=True)
    data["lines"][0]["description"] = f"{data['lines'][0]['description']} (revision {row.revision})"
    return type(invoice).model_validate(data)
