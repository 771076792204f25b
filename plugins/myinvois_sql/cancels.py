"""The SQL plugin's cancel requests: the ERP sets a status value and writes a reason.

* Staging tables: the ERP sets ``myinvois_status = 'cancel_requested'`` on the invoice's header
  row and writes why in ``myinvois_cancel_reason`` (a column added by
  ``config/sql/cancel-requests.sql``; a table without it offers no cancel requests, said once in
  the log). Once the connector recorded the requests they are marked ``cancelling``; the
  outcome then arrives through the ordinary write-back: ``cancelled``, or the invoice's status
  again with the reason the cancel was refused in ``myinvois_errors``.
* Custom queries: ``queries.cancel_requests`` returns ``source_key`` and ``reason``;
  ``queries.mark_cancel_taken`` (optional) marks ``:source_key`` once it is recorded.

A request is read in a short transaction of its own and marked in another, after the connector
recorded every request of the page (the generator's code after its last ``yield``).
"""

from __future__ import annotations

import logging
from collections.abc import Iterator

from sqlalchemy import column, inspect, select, table, text, update
from sqlalchemy.exc import SQLAlchemyError

from connector_core.contract import CancelRequest
from myinvois_sql.columns import CANCEL_REQUEST_COLUMNS
from myinvois_sql.store import QueryStore, StagingStore

log = logging.getLogger("myinvois_sql")

REQUESTED_STATUS = "cancel_requested"
TAKEN_STATUS = "cancelling"
[REASON_COLUMN] = CANCEL_REQUEST_COLUMNS
#: Requests read per cycle; more wait for the next one.
PAGE = 500


def cancel_requests(store: StagingStore | QueryStore) -> Iterator[CancelRequest]:
    if isinstance(store, QueryStore):
        yield from _from_queries(store)
    else:
        yield from _from_staging(store)


def _from_staging(store: StagingStore) -> Iterator[CancelRequest]:
    options = store.options
    if not _has_reason_column(store):
        return
    header = table(
        options.header_table, column("id"), column("myinvois_status"), column(REASON_COLUMN), schema=options.db_schema
    )
    try:
        with store.engine.connect() as conn:
            rows = conn.execute(
                select(header.c.id, header.c[REASON_COLUMN])
                .where(header.c.myinvois_status == REQUESTED_STATUS)
                .order_by(header.c.id)
                .limit(PAGE)
            ).all()
    except SQLAlchemyError as exc:
        raise store._failure(f"reading cancel requests from table {options.header_table}", exc) from exc
    for row in rows:
        yield CancelRequest(
            source_key=str(row.id), reason=row[1] or "", location=f"table {options.header_table} id={row.id}"
        )
    if not rows:
        return
    try:
        with store.engine.begin() as conn:
            conn.execute(
                update(header)
                .where(header.c.id.in_([row.id for row in rows]), header.c.myinvois_status == REQUESTED_STATUS)
                .values(myinvois_status=TAKEN_STATUS)
            )
    except SQLAlchemyError as exc:
        raise store._failure(f"marking cancel requests taken in table {options.header_table}", exc) from exc


_checked: dict[int, bool] = {}


def _has_reason_column(store: StagingStore) -> bool:
    """Whether the header table has the reason column; asked once per store, told once if not."""
    known = _checked.get(id(store))
    if known is not None:
        return known
    options = store.options
    try:
        with store.engine.connect() as conn:
            inspector = inspect(conn)
            if not inspector.has_table(options.header_table, schema=options.db_schema):
                return False  # not created yet: fetch_pending_invoices reports or creates it
            names = {c["name"] for c in inspector.get_columns(options.header_table, schema=options.db_schema)}
    except SQLAlchemyError as exc:
        raise store._failure(f"checking table {options.header_table} for cancel requests", exc) from exc
    found = REASON_COLUMN in names
    if not found:
        log.warning(
            "source %r: table %s has no column %s, so the ERP cannot ask to cancel invoices through it; "
            "add it with config/sql/cancel-requests.sql (docs/plugin-sql.md, Cancelling)",
            store.source_name,
            options.header_table,
            REASON_COLUMN,
        )
    _checked[id(store)] = found
    return found


def _from_queries(store: QueryStore) -> Iterator[CancelRequest]:
    queries = store.queries
    if not queries.cancel_requests:
        return
    try:
        with store.engine.connect() as conn:
            result = conn.execute(text(queries.cancel_requests.rstrip().rstrip(";")))
            names = set(result.keys())
            if not {"source_key", "reason"} <= names:
                raise ValueError(
                    f"source {store.source_name!r}: setting queries.cancel_requests must return the columns source_key "
                    f"and reason (it returns {', '.join(sorted(names)) or 'none'}); alias the ERP's columns to them"
                )
            rows = list(result.mappings().fetchmany(PAGE))
    except SQLAlchemyError as exc:
        raise store._failure("running setting queries.cancel_requests", exc) from exc
    for row in rows:
        key = str(row["source_key"])
        yield CancelRequest(
            source_key=key, reason=str(row["reason"] or ""), location=f"queries.cancel_requests source_key={key}"
        )
    if not rows or not queries.mark_cancel_taken:
        return
    try:
        with store.engine.begin() as conn:
            conn.execute(
                text(queries.mark_cancel_taken.rstrip().rstrip(";")),
                [{"source_key": str(r["source_key"])} for r in rows],
            )
    except SQLAlchemyError as exc:
        raise store._failure("running setting queries.mark_cancel_taken", exc) from exc
