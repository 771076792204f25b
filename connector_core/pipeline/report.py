"""Report stage: write final outcomes back to the ERP through ``on_submission_result``.

An outcome is marked reported only after the hook returned normally. When the hook raises for
a batch, the batch is split in halves until the outcome the ERP refuses (a closed period, a
trigger, a constraint) stands alone: the others are written back, and that one waits out a
back-off before it is offered again, named in ``status``, counted in metrics, with an
incident; it never blocks the rest of its source.
"""

from __future__ import annotations

import logging

from connector_core.contract import DocumentOutcome, Source
from connector_core.pipeline.context import PipelineContext
from connector_core.plugins import HookFailed

log = logging.getLogger("connector_core.pipeline.report")

BATCH = 500
#: Back-off of an outcome the ERP refused: 1 min, doubling, at most 1 h.
RETRY_FIRST_SECONDS = 60.0
RETRY_MAX_SECONDS = 3600.0


def report_source(ctx: PipelineContext, source: Source) -> int:
    reported = 0
    while not ctx.stop.is_set():
        pending = ctx.ledger.writeback.unreported_outcomes(source.name, limit=BATCH)
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
    ctx.ledger.writeback.mark_reported([doc_id for doc_id, _ in pending])
    for _, outcome in pending:
        elapsed = (
            (outcome.final_at - outcome.fetched_at).total_seconds() if outcome.final_at and outcome.fetched_at else None
        )
        ctx.emit("document_final", source=source.name, state=outcome.state.value, seconds_since_fetch=elapsed)
        log.info(
            "invoice %s v%d: %s%s",
            outcome.number,
            outcome.version,
            outcome.state.value,
            f" (uuid {outcome.uuid})" if outcome.uuid else "",
            extra={"invoice": outcome.number, "uuid": outcome.uuid, "submission_uid": outcome.submission_uid},
        )
    return len(pending)


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
