"""What the commands about one invoice share: opening the ledger without creating it, and
turning what the clerk typed (an invoice number or an ERP key) into exactly one invoice."""

from __future__ import annotations

import json
import sys
from datetime import datetime, timedelta
from typing import Any, NoReturn

import click
from sqlalchemy.engine import make_url
from sqlalchemy.exc import SQLAlchemyError

from connector_core.contract import DocumentState
from connector_core.exitcodes import ExitCode
from connector_core.ledger import Ledger, NoLedgerYet
from connector_core.ledger.database import as_utc, utcnow
from connector_core.ledger.lookup import InvoiceRef
from connector_core.ledger.writeback import cancel_advice

D = DocumentState
#: MyInvois's cancellation window when the ledger has no watch end for a document (validated
#: before the connector watched): 72 hours after validation (BEYOND-V1.md §3).
DEFAULT_CANCELLATION_WINDOW = timedelta(hours=72)
#: States in which the validated document stands at MyInvois and may still be cancelled.
STANDING = frozenset({D.VALID.value, D.REJECTION_REQUESTED.value, D.CANCELLING.value})


def describe_url(url: str) -> str:
    return make_url(url).render_as_string(hide_password=True)


def fail(message: str, code: ExitCode) -> NoReturn:
    click.echo(f"error: {message}", err=True)
    sys.exit(int(code))


def open_ledger(settings) -> Ledger | None:
    """The ledger opened for reading, or None when nothing has run with this configuration
    yet (nothing is created: not the file, not its folder, not a schema)."""
    url = settings.ledger_url()
    try:
        return Ledger(url, create=False)
    except NoLedgerYet:
        return None
    except SQLAlchemyError as exc:
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        fail(
            f"cannot open the ledger {describe_url(url)}: {detail}; check ledger.url and that the database server runs",
            ExitCode.CONFIG,
        )


def open_existing_ledger(settings, invoice: str) -> Ledger:
    """As :func:`open_ledger`, for a command about one invoice: no ledger means no such invoice."""
    ledger = open_ledger(settings)
    if ledger is None:
        fail(
            f"invoice {invoice}: no ledger yet at {describe_url(settings.ledger_url())}: nothing has run with this "
            "configuration (`run` creates it); check --config",
            ExitCode.UNKNOWN_INVOICE,
        )
    return ledger


def resolve(ledger: Ledger, settings, invoice: str, source: str | None) -> InvoiceRef:
    """The one invoice ``invoice`` (a number or an ERP key) names, or exit with what to do."""
    if source is not None and source not in settings.sources:
        known = ", ".join(sorted(settings.sources)) or "none"
        fail(f"--source {source}: no source of that name in the configuration (sources: {known})", ExitCode.CONFIG)
    sources = [source] if source is not None else sorted(settings.sources)
    profiles = sorted({settings.sources[name].profile for name in sources})
    found = ledger.lookup.find(invoice, sources=sources, profiles=profiles, source=source)
    if not found:
        where = f"source {source}" if source else f"sources {', '.join(sources) or '(none configured)'}"
        fail(
            f"invoice {invoice}: not in the ledger of {where}, neither as an invoice number nor as an ERP key; "
            "check the number (the connector has not fetched it yet if the ERP has not queued it)",
            ExitCode.UNKNOWN_INVOICE,
        )
    if len(found) > 1:
        candidates = "; ".join(ref.describe() for ref in found)
        fail(
            f"invoice {invoice} names {len(found)} invoices: {candidates}; pass --source NAME, or give the ERP key "
            "instead of the number, to choose one",
            ExitCode.CONFIG,
        )
    return found[0]


def cancellation_window(row: dict[str, Any], settings) -> dict[str, Any] | None:
    """Until when the issuer may still cancel this version at MyInvois, and whether that is
    still ahead; None for a version that is not a validated document standing at MyInvois.

    The watch records ``watch_until`` = end of the window + ``cycles.watch_margin_seconds``;
    a version validated before the watch existed has none, and its window is taken as 72 hours
    after its validation (or, lacking that, after it became final)."""
    if row["state"] not in STANDING or not row.get("uuid"):
        return None
    watch_until = as_utc(row.get("watch_until"))
    if watch_until is not None:
        until = watch_until - timedelta(seconds=settings.cycles.watch_margin_seconds)
    else:
        validated = as_utc(row.get("validated_at")) or as_utc(row.get("final_at"))
        if validated is None:
            return None
        until = validated + DEFAULT_CANCELLATION_WINDOW
    return {"until": until, "open": utcnow() < until}


def json_list(text: str | None) -> list[Any]:
    if not text:
        return []
    try:
        value = json.loads(text)
    except ValueError:
        return [text]
    return value if isinstance(value, list) else [value]


def cancel_error_lines(text: str | None) -> list[str]:
    """The last refusal of our cancel, in the words the ERP was given."""
    return cancel_advice(text)


def iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat(timespec="seconds") if value else None
