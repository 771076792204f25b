"""Hook implementations of the Odoo plugin (entry point ``odoo = "myinvois_odoo.plugin"``)."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator

from connector_core import hookimpl
from connector_core.contract import CancelRequest, DocumentOutcome, Source
from connector_core.model import Invoice, RejectedRecord
from myinvois_odoo.cancels import cancel_requests
from myinvois_odoo.check import check_source  # noqa: F401 - a hook of this plugin, kept in its own module
from myinvois_odoo.options import OdooSourceOptions
from myinvois_odoo.source import OdooSource

log = logging.getLogger("myinvois_odoo")

KIND = "odoo"


def _odoo(source: Source) -> OdooSource:
    assert isinstance(source.options, OdooSourceOptions), "the core hands an odoo source its OdooSourceOptions"
    return OdooSource(source.name, source.options)


@hookimpl
def register_source_kinds(register: Callable[..., None]) -> None:
    register(
        KIND,
        OdooSourceOptions,
        description="Posted invoices, credit notes and vendor bills from Odoo 16-18 (XML-RPC or JSON-RPC)",
    )


@hookimpl
def fetch_pending_invoices(source: Source, limit: int) -> Iterator[Invoice | RejectedRecord]:
    odoo = _odoo(source)
    try:
        yield from odoo.pending(limit)
    finally:
        odoo.client.close()


@hookimpl
def on_invoices_recorded(source: Source, source_keys: list[str]) -> None:
    odoo = _odoo(source)
    try:
        odoo.mark_queued(source_keys)
    finally:
        odoo.client.close()


@hookimpl
def fetch_cancel_requests(source: Source) -> Iterator[CancelRequest]:
    return cancel_requests(_odoo(source))


@hookimpl
def on_submission_result(source: Source, outcomes: list[DocumentOutcome]) -> None:
    odoo = _odoo(source)
    try:
        odoo.write_outcomes(outcomes)
    finally:
        odoo.client.close()
    log.info("source %r: %d outcome(s) written back to Odoo", source.name, len(outcomes))
