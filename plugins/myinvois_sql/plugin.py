"""Hook implementations of the SQL plugin (entry point ``sql = "myinvois_sql.plugin"``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from connector_core import hookimpl
from connector_core.contract import CancelRequest, DocumentOutcome, Source
from connector_core.model import Invoice, RejectedRecord
from myinvois_sql.cancels import cancel_requests
from myinvois_sql.check import check_source  # noqa: F401 - a hook of this plugin, kept in its own module
from myinvois_sql.engines import engine_for
from myinvois_sql.options import SqlSourceOptions
from myinvois_sql.store import store_for

log = logging.getLogger("myinvois_sql")

KIND = "sql"


def _store(source: Source):
    options = source.options
    assert isinstance(options, SqlSourceOptions), "the core hands a sql source its SqlSourceOptions"
    return store_for(source.name, options, engine_for(options))


@hookimpl
def register_source_kinds(register: Callable[..., None]) -> None:
    register(
        KIND,
        SqlSourceOptions,
        description="Invoices from SQL staging tables or custom queries (SQLite, PostgreSQL, MariaDB/MySQL)",
    )


@hookimpl
def fetch_pending_invoices(source: Source, limit: int) -> Iterator[Invoice | RejectedRecord]:
    return _store(source).pending(limit)


@hookimpl
def on_invoices_recorded(source: Source, source_keys: list[str]) -> None:
    _store(source).mark_queued(source_keys)
    log.debug("source %r: %d invoice(s) marked queued", source.name, len(source_keys))


@hookimpl
def fetch_cancel_requests(source: Source) -> Iterator[CancelRequest]:
    return cancel_requests(_store(source))


@hookimpl
def on_submission_result(source: Source, outcomes: list[DocumentOutcome]) -> None:
    _store(source).write_outcomes(outcomes)
    # The core logs each batch written back (counts, invoices to look at); this is the detail.
    log.debug("source %r: %d outcome(s) written back", source.name, len(outcomes))
