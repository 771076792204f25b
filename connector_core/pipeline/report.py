"""Report stage: write final outcomes back to the ERP through ``on_submission_result``.

An outcome is marked reported only after the hook returned normally. When the hook raises for
a batch, the batch is split in halves until the outcome the ERP refuses (a closed period, a
trigger, a constraint) stands alone: the others are written back, and that one waits out a
back-off before it is offered again, named in ``status``, counted in metrics, with an
incident; it never blocks the rest of its source.
"""

from __future__ import annotations

import logging
from collections import Counter
from datetime import timedelta

from connector_core.contract import DocumentOutcome, DocumentState, Source
from connector_core.pipeline.context import PipelineContext
from connector_core.plugins import HookFailed

log = logging.getLogger("connector_core.pipeline.report")

BATCH = 500
#: Back-off of an outcome the ERP refused: 1 min, doubling, at most 1 h.
RETRY_FIRST_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0
#: Outcomes that ask nothing of a clerk: counted in the batch's line, not named.
QUIET_STATES = frozenset({DocumentState.VALID, DocumentState.CANCELLED})


def report_source(ctx: PipelineContext, source: Source) -> int:
    reported = 0
    while not ctx.stop.is_set():
        pending = ctx.ledger.writeback.unreported_outcomes(
            source.name, limit=BATCH, watch_margin=timedelta(seconds=ctx.settings.cycles.watch_margin_seconds)
        )
        if not pending:
            break
        done = _offer(ctx, source, pending)
        reported += done
        if len(pending) < BATCH or done == 0:
            break
    return reported


def _offer(ctx: PipelineContext, source: Source, pending: list[tuple[int, DocumentOutcome]]) -> int:
    """Offer ``pending`` to the plugin; on failure, split until each refused outcome is alone.
    Returns how many were written back."""
    try:
        ctx.host.on_submission_result(source, [outcome for _, outcome in pending])
    except HookFailed as failure:
        if len(pending) == 1:
            _refused(ctx, source, pending[0], failure)
            return 0
        log.warning(
            "source %s did not take %d outcome(s) (%s: %s); offering them again in smaller batches",
            source.name,
            len(pending),
            type(failure.error).__name__,
            failure.error,
        )
        middle = len(pending) // 2
        return _offer(ctx, source, pending[:middle]) + _offer(ctx, source, pending[middle:])
    ctx.ledger.writeback.mark_reported(
        [doc_id for doc_id, _ in pending], offered={doc_id: outcome.state.value for doc_id, outcome in pending}
    )
    outcomes = [outcome for _, outcome in pending]
    for outcome in outcomes:
        elapsed = (
            (outcome.final_at - outcome.fetched_at).total_seconds() if outcome.final_at and outcome.fetched_at else None
        )
        ctx.emit("document_final", source=source.name, state=outcome.state.value, seconds_since_fetch=elapsed)
    _log_written_back(source, outcomes)
    return len(outcomes)


def _log_written_back(source: Source, outcomes: list[DocumentOutcome]) -> None:
    """One INFO line per batch written back: counts by state, and the invoices a clerk has to
    look at by number. Each outcome's own line (uuid, submission) is at DEBUG: at 10,000
    documents a minute, a line per document was a cost of its own and buried the ones to act on."""
    by_state = Counter(outcome.state.value for outcome in outcomes)
    to_correct = [outcome for outcome in outcomes if outcome.state not in QUIET_STATES]
    log.info(
        "source %s: %d outcome(s) written back (%s)%s",
        source.name,
        len(outcomes),
        ", ".join(f"{count} {state}" for state, count in sorted(by_state.items())),
        "; to look at: " + ", ".join(f"{o.number} v{o.version} ({o.state.value})" for o in to_correct)
        if to_correct
        else "",
        extra={"documents": len(outcomes), "invoices": [o.number for o in to_correct]},
    )
    if log.isEnabledFor(logging.DEBUG):
        for outcome in outcomes:
            log.debug(
                "invoice %s v%d: %s%s",
                outcome.number,
                outcome.version,
                outcome.state.value,
                f" (uuid {outcome.uuid})" if outcome.uuid else "",
                extra={"invoice": outcome.number, "uuid": outcome.uuid, "submission_uid": outcome.submission_uid},
            )


def _refused(ctx: PipelineContext, source: Source, item: tuple[int, DocumentOutcome], failure: HookFailed) -> None:
    doc_id, outcome = item
    journal = ctx.ledger.journal
    reason = f"{type(failure.error).__name__}: {failure.error}"
    attempts, delay = ctx.ledger.writeback.report_failed(
        doc_id, reason, first_delay=RETRY_FIRST_SECONDS, max_delay=RETRY_MAX_SECONDS
    )
    message = (
        f"source {source.name} (plugin {failure.plugin}) refused the outcome of invoice {outcome.number} v{outcome.version} ({outcome.state.value}): "
        f"{reason}; the other outcomes went on, this one is offered again in {delay:.0f} s (attempt {attempts}): "
        "fix what the ERP objects to (a closed period, a trigger, a constraint)"
    )
    log.error("%s", message)
    log.debug("traceback of the write-back failure in source %s", source.name, exc_info=failure.error)
    journal.increment("writeback_failures")
    if attempts == 1:
        # One incident per outcome, not one per retry: the retries are in status.
        journal.add_incident("writeback_refused", message, subject=source.name)
    ctx.emit("plugin_error", plugin=failure.plugin, hook=failure.hook, source=failure.source, error=failure.error)
    ctx.emit("writeback_refused", source=source.name, invoice=outcome.number)
    ctx.note_source_failure(failure)
