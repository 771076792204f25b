"""``myinvois-connector cancel INVOICE --reason TEXT``: cancel one validated invoice at MyInvois.

The cancel is recorded in the ledger before it is sent (see :mod:`connector_core.pipeline.cancel`).
When a connector already runs on this configuration (it holds the state folder), the command
only records it: the running connector sends it with its next fetch cycle, and the ERP hears
the outcome as from any cancel. Otherwise the command sends it itself, at once, and writes the
outcome back to the ERP before it exits.
"""

from __future__ import annotations

import click

from connector_core.exitcodes import ExitCode
from connector_core.pipeline.cancel import MAX_REASON, CancelResult, Verdict, checked_reason

#: What the command exits with, by what became of the cancel.
EXIT_BY_VERDICT = {
    Verdict.CANCELLED: ExitCode.OK,
    Verdict.RECORDED: ExitCode.OK,
    Verdict.SKIPPED: ExitCode.OK,
    Verdict.REFUSED: ExitCode.REFUSED,
    Verdict.IN_DOUBT: ExitCode.MYINVOIS_UNAVAILABLE,
    Verdict.NOT_SENT: ExitCode.MYINVOIS_UNAVAILABLE,
    Verdict.UNKNOWN_INVOICE: ExitCode.UNKNOWN_INVOICE,
}


@click.command("cancel")
@click.argument("invoice")
@click.option(
    "--reason",
    required=True,
    help=f"Why it is cancelled (1 to {MAX_REASON} characters; MyInvois shows it to the buyer).",
)
@click.option("--source", help="The source the invoice came from, when its number is in several.")
@click.pass_obj
def cancel_command(env, invoice: str, reason: str, source: str | None) -> None:
    """Cancel INVOICE (its number or ERP key) at MyInvois, within 72 hours of its validation."""
    from connector_core.commands.invoices import fail, open_existing_ledger, resolve

    if checked_reason(reason) is None:
        fail(f"--reason: give 1 to {MAX_REASON} characters (it has {len(reason.strip())})", ExitCode.CONFIG)
    settings = env.settings()
    if settings.uses_inprocess_simulator:
        fail(
            "cancel needs the MyInvois that validated the invoice; this configuration starts an empty simulator "
            "in-process for each command: run `myinvois-connector simulator` and set api_base_url to it",
            ExitCode.CONFIG,
        )
    ledger = open_existing_ledger(settings, invoice)
    try:
        ref = resolve(ledger, settings, invoice, source)
    finally:
        ledger.close()
    result = _cancel(env, settings, ref.source, ref.source_key, reason)
    click.echo(result.line())
    raise SystemExit(int(EXIT_BY_VERDICT[result.verdict]))


def _cancel(env, settings, source: str, source_key: str, reason: str) -> CancelResult:
    from connector_core.runtime import Connector, StateDirInUse

    try:
        connector = Connector(settings)
    except StateDirInUse:
        return _record_for_the_running_connector(settings, source, source_key, reason)
    except Exception:
        # Any other problem of assembling the connector is reported as `run` reports it.
        connector = env.connector(settings)
    with connector:
        return _cancel_now(connector, source, source_key, reason)


def _cancel_now(connector, source: str, source_key: str, reason: str) -> CancelResult:
    from connector_core.pipeline.cancel import cancel_waiting, request_cancel
    from connector_core.pipeline.report import report_source

    ctx = connector.ctx
    target = ctx.ledger.cancels.target(source, source_key)
    if target is None:  # pragma: no cover - resolve() found it a moment ago
        return CancelResult(Verdict.UNKNOWN_INVOICE, detail=f"invoice {source_key} of source {source} is gone")
    result = request_cancel(ctx.ledger, ctx.settings, target, reason)
    if result.verdict is Verdict.RECORDED or (result.verdict is Verdict.SKIPPED and target.state == "cancelling"):
        sent = cancel_waiting(ctx, target.profile, only=target.id)
        if sent:
            result = sent[0]
    if source in ctx.sources:
        # The outcome (cancelled, or still valid with the refusal) reaches the ERP now.
        report_source(ctx, ctx.sources[source])
    return result


def _record_for_the_running_connector(settings, source: str, source_key: str, reason: str) -> CancelResult:
    from connector_core.ledger import Ledger
    from connector_core.pipeline.cancel import request_cancel

    ledger = Ledger(settings.ledger_url())
    try:
        target = ledger.cancels.target(source, source_key)
        if target is None:  # pragma: no cover - resolve() found it a moment ago
            return CancelResult(Verdict.UNKNOWN_INVOICE, detail=f"invoice {source_key} of source {source} is gone")
        result = request_cancel(ledger, settings, target, reason)
    finally:
        ledger.close()
    if result.verdict is Verdict.RECORDED:
        return CancelResult(
            Verdict.RECORDED,
            result.target,
            detail="a connector is running on this configuration: it sends the cancel with its next fetch cycle "
            "and the ERP hears the outcome; `myinvois-connector show` tells it too",
        )
    return result
