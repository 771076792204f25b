"""Recording fetched invoices: new ones, new versions, edits, and re-queued rows.

What happens to a fetched invoice depends on its latest version in the ledger:

============================  ====================  =========================================
latest version                content unchanged     content changed (an ERP edit)
============================  ====================  =========================================
none                          recorded as version 1 (``pending``, or ``locally_invalid``)
``pending``                   nothing               new content, built bytes dropped
``submitting``/``submitted``  nothing               new version ``held`` until MyInvois answers
``held``                      nothing               the held content is replaced
``valid`` (or after it)       outcome written again new version ``changed_after_valid``
other final, written back     outcome written again new version (sent again)
  …refused as a batch         checked again, sent   new version
  …``locally_invalid``        checked again         new version
============================  ====================  =========================================

Every move is a compare-and-set (see :mod:`connector_core.ledger.states`): the submitter of the
same cycle may claim a ``pending`` row between our read and our write, and then the edit must
not reset it; it becomes ``held`` instead.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from sqlalchemy import and_, func, select, update

from connector_core.contract import DocumentState
from connector_core.ledger import bodies, states
from connector_core.ledger.database import LedgerPart, chunks, create_lock, hold, utcnow
from connector_core.ledger.records import FetchedItem, RecordSummary
from connector_core.ledger.schema import documents

D = DocumentState
#: States in which an invoice number belongs to its row: MyInvois has, or will have, a document
#: with that number from it.
_HOLDS_NUMBER = frozenset(
    s.value
    for s in (
        D.PENDING,
        D.HELD,
        D.SUBMITTING,
        D.SUBMITTED,
        D.VALID,
        D.REJECTION_REQUESTED,
        D.CANCELLING,
        D.CHANGED_AFTER_VALID,
    )
)
#: Re-evaluations of one row when another writer keeps winning (each loss means real progress).
_MAX_TRIES = 5


def changed_after_valid_message(number: str, uuid: str | None) -> str:
    return (
        f"invoice {number} was changed in the ERP after MyInvois validated it (uuid {uuid}); the validated document "
        "stands and the change is not sent: cancel the document on MyInvois within 72 hours of its validation and "
        "queue the invoice again, or issue a credit or debit note for the difference"
    )


def number_taken_message(number: str, other_source: str, other_key: str, other_state: str) -> str:
    return (
        f"invoice {number}: this number is already used by row {other_key} of source {other_source} "
        f"(MyInvois state: {other_state}); two documents must not share an invoice number: give this invoice "
        "its own number in the ERP and queue it again"
    )


class Intake(LedgerPart):
    """The fetch stage's writes."""

    def __init__(self, engine, sender) -> None:
        super().__init__(engine, sender)
        self._locks_created: set[str] = set()

    def record_fetched(
        self, *, source: str, profile: str, items: Sequence[FetchedItem], retry: bool = False
    ) -> RecordSummary:
        """Record a page of fetched invoices; the same content fetched twice is recorded once.

        ``retry`` (the ``retry`` command) checks an invoice refused for a reason outside its
        content again even before that refusal was written back to the ERP: exactly what its
        ERP row set back to pending does once it was."""
        summary = RecordSummary()
        # The last occurrence wins when a plugin yields one key twice in a page.
        by_key = {item.source_key: item for item in items}
        lock = f"intake:{profile}"
        if lock not in self._locks_created:
            create_lock(self.engine, lock)
            self._locks_created.add(lock)
        with self.engine.begin() as conn:
            # One recorder per profile at a time, across connectors: otherwise two of them
            # could both find an invoice number free and both send it.
            hold(conn, lock)
            latest = self._latest(conn, source, list(by_key))
            holders = self._number_holders(conn, profile, {item.number for item in by_key.values()})
            # MyInvois's duplicate rule includes the document type: an invoice and a credit note
            # may share a number.
            inserts: list[dict[str, Any]] = []
            for key, item in by_key.items():
                for _ in range(_MAX_TRIES):
                    row = latest.get(key)
                    outcome = self._record_one(conn, source, profile, key, item, row, holders, inserts, summary, retry)
                    if outcome != "lost":
                        break
                    # Another writer moved the row between our read and our write: read it again,
                    # as a locking read (MariaDB's repeatable read would show the old snapshot).
                    latest[key] = self._latest_locked(conn, source, key)
                else:
                    raise RuntimeError(
                        f"invoice {key} of source {source}: the ledger row kept changing while it was recorded; "
                        "the page is recorded again on the next fetch"
                    )
            new_bodies = [(row["source_key"], row["version"], row.pop("invoice_json")) for row in inserts]
            for transition, rows in _group_inserts(inserts):
                states.insert_state(conn, transition, rows)
            bodies.write(conn, source, [body for body in new_bodies if body[2] is not None])
        return summary

    # --- one invoice ------------------------------------------------------------------------

    def _record_one(self, conn, source, profile, key, item, row, holders, inserts, summary, retry=False) -> str:
        now = utcnow()
        rechecks = row is not None and _rechecks(row, retry)
        problems = list(item.problems)
        if row is None or row.fingerprint != item.fingerprint or rechecks:
            holder = holders.get((item.number, item.document_type))
            if not problems and holder is not None and (holder[0], holder[1]) != (source, key):
                problems.append(number_taken_message(item.number, *holder))
                summary.number_taken.append(key)
        values = _content(item, problems, now)

        if row is None:
            inserts.append(_new_row(source, profile, key, 1, values, now))
            self._count_new(summary, problems, new=True)
            if not problems:
                holders.setdefault((item.number, item.document_type), (source, key, D.PENDING.value))
            return "done"

        state = row.state
        if rechecks and problems and state == D.LOCALLY_INVALID.value and json.loads(row.errors or "[]") == problems:
            # Checked again, refused for the same reasons: the same outcome goes back.
            moved = self._report_again(conn, row)
            if moved.lost:
                return "lost"
            summary.reported_again += 1
            return "done"
        if row.fingerprint == item.fingerprint and not rechecks:
            if state in states.FINAL and row.reported_at is not None:
                moved = self._report_again(conn, row)
                if moved.lost:
                    return "lost"
                summary.reported_again += 1
            else:
                summary.unchanged += 1
            return "done"

        if state == D.PENDING.value:
            transition = states.doc("edit_to_invalid" if problems else "edit_pending")
            content = values.pop("invoice_json")
            moved = states.move(
                conn,
                transition,
                documents.c.id == row.id,
                documents.c.fingerprint == row.fingerprint,
                values={**values, "document_hash": None, "issued_at": None},
            )
            if moved.lost:
                return "lost"
            bodies.replace_invoice(conn, row.id, content)
            summary.updated += 1
            if problems:
                summary.locally_invalid += 1
            return "done"

        if state == D.HELD.value:
            content = values.pop("invoice_json")
            moved = states.move(
                conn,
                states.doc("edit_held"),
                documents.c.id == row.id,
                documents.c.fingerprint == row.fingerprint,
                values=values,
            )
            if moved.lost:
                return "lost"
            bodies.replace_invoice(conn, row.id, content)
            summary.updated += 1
            summary.changed_after_submit.append(key)
            return "done"

        if state in states.IN_FLIGHT:
            # MyInvois has (or may have) the previous version: the edit waits for its outcome.
            inserts.append(
                _new_row(source, profile, key, row.version + 1, {**values, "final_at": None}, now, held=True)
            )
            summary.changed_after_submit.append(key)
            return "done"

        if state in states.AFTER_VALID:
            inserts.append(
                _new_row(
                    source,
                    profile,
                    key,
                    row.version + 1,
                    {
                        **values,
                        "errors": json.dumps([changed_after_valid_message(item.number, row.uuid)]),
                        "uuid": row.uuid,
                        "long_id": row.long_id,
                        "validation_link": row.validation_link,
                        "final_at": now,
                    },
                    now,
                    changed_after_valid=True,
                )
            )
            summary.changed_after_valid.append(key)
            return "done"

        # A final outcome after which the invoice may be sent again: a new version.
        inserts.append(_new_row(source, profile, key, row.version + 1, values, now))
        self._count_new(summary, problems, new=False)
        return "done"

    @staticmethod
    def _count_new(summary: RecordSummary, problems: list[str], *, new: bool) -> None:
        if new:
            summary.new += 1
        else:
            summary.new_versions += 1
        if problems:
            summary.locally_invalid += 1

    @staticmethod
    def _report_again(conn, row) -> states.Moved:
        """The ERP row was set back to pending unchanged: offer the same outcome again. Not a
        state change, but still compare-and-set on the state and write-back we read."""
        result = conn.execute(
            update(documents)
            .where(documents.c.id == row.id, documents.c.state == row.state, documents.c.reported_at.is_not(None))
            .values(reported_at=None, report_attempts=0, report_error=None, next_report_at=None)
        )
        return states.Moved(states.doc("record"), result.rowcount or 0, 1)

    # --- reads ------------------------------------------------------------------------------

    @staticmethod
    def _latest(conn, source: str, keys: list[str]) -> dict[str, Any]:
        latest: dict[str, Any] = {}
        for chunk in chunks(keys):
            newest = (
                select(documents.c.source_key, func.max(documents.c.version).label("v"))
                .where(documents.c.source == source, documents.c.source_key.in_(chunk))
                .group_by(documents.c.source_key)
                .subquery()
            )
            stmt = (
                select(*_LATEST_COLUMNS)
                .join(newest, and_(documents.c.source_key == newest.c.source_key, documents.c.version == newest.c.v))
                .where(documents.c.source == source)
            )
            rows = conn.execute(stmt)
            latest.update({r.source_key: r for r in rows})
        return latest

    @staticmethod
    def _latest_locked(conn, source: str, key: str):
        return conn.execute(
            select(*_LATEST_COLUMNS)
            .where(documents.c.source == source, documents.c.source_key == key)
            .order_by(documents.c.version.desc())
            .limit(1)
            .with_for_update()
        ).first()

    @staticmethod
    def _number_holders(conn, profile: str, numbers: set[str]) -> dict[tuple[str, str | None], tuple[str, str, str]]:
        """Which row holds each (invoice number, document type) in ``profile``: (source, source key, state).

        The state is checked here, not in the WHERE: given ``state IN (…)`` too, SQLite reads
        through ``ix_documents_state_profile``, every row of the profile that holds a number,
        on every page, a range that grows with the ledger. By number, it reads only the few
        versions of the page's own numbers."""
        holders: dict[tuple[str, str | None], tuple[str, str, str]] = {}
        for chunk in chunks(sorted(numbers)):
            rows = conn.execute(
                select(
                    documents.c.id,
                    documents.c.number,
                    documents.c.document_type,
                    documents.c.source,
                    documents.c.source_key,
                    documents.c.state,
                ).where(documents.c.profile == profile, documents.c.number.in_(chunk))
            )
            for r in sorted(rows, key=lambda r: r.id):
                if r.state in _HOLDS_NUMBER:
                    holders.setdefault((r.number, r.document_type), (r.source, r.source_key, r.state))
        return holders


_LATEST_COLUMNS = tuple(
    documents.c[name]
    for name in (
        "id", "source_key", "version", "fingerprint", "state", "uuid", "long_id", "validation_link",
        "reported_at", "refused_as_batch", "errors",
    )
)  # fmt: skip


def _rechecks(row, retry: bool = False) -> bool:
    """An unchanged invoice whose outcome was not about its content is looked at again: a
    batch refused with 400/403 (a profile or credential since fixed), or a local refusal
    (pre-validation may now pass: the profile's TIN corrected, the other row with its number
    gone). Only once the outcome was written back: before that, nothing was re-queued; unless
    the ``retry`` command asks for it."""
    if row.reported_at is None and not retry:
        return False
    return (row.state == D.REJECTED.value and bool(row.refused_as_batch)) or row.state == D.LOCALLY_INVALID.value


def _content(item: FetchedItem, problems: list[str], now) -> dict[str, Any]:
    """The row's new values; ``invoice_json`` goes to ``document_bodies``, not the row."""
    return {
        "fingerprint": item.fingerprint,
        "number": item.number,
        "document_type": item.document_type,
        "issuer_tin": item.issuer_tin,
        "invoice_json": item.invoice_json,
        "errors": json.dumps(problems) if problems else None,
        "updated_at": now,
        "final_at": now if problems else None,
    }


def _new_row(source, profile, key, version, values, now, *, held=False, changed_after_valid=False) -> dict[str, Any]:
    if changed_after_valid:
        transition = "record_changed_after_valid"
    elif held:
        transition = "record_held"
    else:
        transition = "record_invalid" if values.get("final_at") else "record"
    return {
        "_transition": transition,
        "source": source,
        "source_key": key,
        "version": version,
        "profile": profile,
        "fetched_at": now,
        "attempts": 0,
        "report_attempts": 0,
        "refused_as_batch": False,
        **values,
    }


def _group_inserts(inserts: list[dict[str, Any]]):
    """Rows with the same columns share one executemany."""
    groups: dict[tuple[str, tuple[str, ...]], list[dict[str, Any]]] = {}
    for row in inserts:
        name = row.pop("_transition")
        groups.setdefault((name, tuple(sorted(row))), []).append(row)
    for (name, _columns), rows in groups.items():
        yield states.doc(name), rows
