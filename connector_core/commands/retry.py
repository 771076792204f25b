"""``retry INVOICE``: send again an invoice that was refused for a reason outside its content,
once that reason is fixed.

Two refusals qualify: a whole batch refused with 400/403 (``refused_as_batch``: the profile's
credentials or its TIN, not this invoice), and a local refusal that no longer holds (the
profile's TIN corrected, the other row with its number gone). The invoice is checked again
exactly as when its ERP row is set back to pending (``Intake.record_fetched``, issue 10's
scenario G): pre-validated with today's profile, then recorded as a new version that the next
cycle sends. An invoice refused for its content is refused here with the errors to correct
in the ERP; a valid or unfinished one has nothing to retry.
"""

from __future__ import annotations

import sys
from typing import Any

import click

from connector_core.commands.invoices import describe_url, fail, json_list, open_existing_ledger, resolve
from connector_core.contract import DocumentState
from connector_core.exitcodes import ExitCode
from connector_core.ledger import Ledger
from connector_core.ledger.bodies import BodyPruned
from connector_core.ledger.states import AFTER_VALID, IN_FLIGHT
from connector_core.model import Invoice
from connector_core.pipeline.fetch import to_fetched_item

D = DocumentState


def refusal(row: dict[str, Any]) -> str | None:
    """Why ``row`` (an invoice's latest version) cannot be retried, in words with what to do
    instead; None when it can."""
    state = row["state"]
    number = row["number"]
    if state == D.REJECTED.value and row["refused_as_batch"]:
        return None
    if state == D.LOCALLY_INVALID.value:
        return None  # checked again below: it qualifies when today's check passes
    errors = "; ".join(str(e) for e in json_list(row["errors"])) or "see `show`"
    if state in (D.INVALID.value, D.REJECTED.value):
        return (
            f"invoice {number} was refused by MyInvois for its content ({errors}); sending the same content again "
            "would be refused again: correct the invoice in the ERP and queue it again (a corrected invoice is sent "
            "as a new version)"
        )
    if state in AFTER_VALID:
        return (
            f"invoice {number} is {state.replace('_', ' ')} at MyInvois (uuid {row['uuid']}): there is nothing to send "
            "again; to undo it, `cancel` it within the cancellation window or issue a credit note"
        )
    if state == D.CANCELLED.value:
        return (
            f"invoice {number} was cancelled at MyInvois (uuid {row['uuid']}): to issue it again, change it in the ERP "
            "(e.g. a new number or date) and queue it again"
        )
    if state == D.PENDING.value:
        return f"invoice {number} is already queued (version {row['version']}): `run --once` or the running daemon sends it"
    if state in IN_FLIGHT or state == D.HELD.value:
        return (
            f"invoice {number} is {state.replace('_', ' ')}: it is on its way and has no outcome yet; "
            "`run --once` or the running daemon finishes it"
        )
    return f"invoice {number} is {state.replace('_', ' ')}: not an outcome that `retry` can send again"


@click.command("retry")
@click.argument("invoice")
@click.option("--source", help="The source the invoice came from, when its number is used in several.")
@click.pass_obj
def retry_command(env, invoice: str, source: str | None) -> None:
    """Send again an invoice (its number or ERP key) refused for a reason outside its content
    (its whole batch refused, a profile credential or TIN since fixed): checked again, then sent
    by the next `run --once` or the running daemon."""
    settings = env.settings()
    reader = open_existing_ledger(settings, invoice)
    try:
        ref = resolve(reader, settings, invoice, source)
    finally:
        reader.close()
    # Writing from here: a ledger at an older schema is brought to this version first, as `run` does.
    ledger = Ledger(settings.ledger_url())
    try:
        _retry(ledger, settings, ref)
    finally:
        ledger.close()


def _retry(ledger: Ledger, settings, ref) -> None:
    row = ledger.lookup.versions(ref.source, ref.source_key)[-1]
    number = row["number"]
    why = refusal(row)
    if why is not None:
        fail(why, ExitCode.REFUSED)
    try:
        invoice_json, _document = ledger.bodies.content(row["id"])
    except BodyPruned:
        invoice_json = None
    if invoice_json is None and row["state"] == D.LOCALLY_INVALID.value:
        errors = "; ".join(str(e) for e in json_list(row["errors"]))
        fail(
            f"invoice {number} could not be read from the ERP ({errors}): correct the record in the ERP and queue it again",
            ExitCode.REFUSED,
        )
    if invoice_json is None:
        fail(
            f"invoice {number}: the ledger no longer holds what was read from the ERP (kept for ledger.keep_bodies_days "
            "after the outcome, and never for a record that could not be read); set its ERP row back to pending "
            "to have it read and sent again",
            ExitCode.REFUSED,
        )
    source_settings = settings.sources.get(ref.source)
    if source_settings is None:
        fail(f"invoice {number}: its source {ref.source} is no longer configured", ExitCode.CONFIG)
    profile_name = source_settings.profile
    item = to_fetched_item(
        Invoice.model_validate_json(invoice_json),
        profile_tin=settings.profiles[profile_name].tin,
        profile_name=profile_name,
    )
    if item.problems:
        fail(
            # Each problem names its field and fix (the ERP record, or the profile it is bound to).
            f"invoice {number} still fails the check before sending: {'; '.join(item.problems)}; correct it "
            "and queue it again",
            ExitCode.REFUSED,
        )
    summary = ledger.intake.record_fetched(source=ref.source, profile=profile_name, items=[item], retry=True)
    if summary.new_versions == 1 and summary.locally_invalid == 0:
        click.echo(
            f"Invoice {number} (source {ref.source}, ERP key {ref.source_key}) checked again and queued as version "
            f"{row['version'] + 1}: the next `run --once`, or the running daemon within "
            f"{settings.cycles.fetch_interval_seconds:g} s, sends it. Ledger: {describe_url(settings.ledger_url())}"
        )
        return
    latest = ledger.lookup.versions(ref.source, ref.source_key)[-1]
    if latest["state"] == D.LOCALLY_INVALID.value:
        errors = "; ".join(str(e) for e in json_list(latest["errors"]))
        fail(f"invoice {number} is still refused: {errors}", ExitCode.REFUSED)
    click.echo(
        f"Invoice {number}: already queued again (version {latest['version']}, {latest['state'].replace('_', ' ')})",
        err=True,
    )
    sys.exit(int(ExitCode.OK))
