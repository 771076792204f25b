"""Report stage: write final outcomes back to the ERP through ``on_submission_result``.

An outcome is marked reported only after the hook returned normally; if it raises, the same
outcomes are offered again on the next cycle (plugins write idempotently, see the hookspec).
"""

from __future__ import annotations

import logging

from connector_core.contract import Source
from connector_core.pipeline.context import PipelineContext
from connector_core.plugins import HookFailed

log = logging.getLogger("connector_core.pipeline.report")

BATCH = 500


def report_source(ctx: PipelineContext, source: Source) -> int:
    reported = 0
    while not ctx.stop.is_set():
        pending = ctx.ledger.unreported_outcomes(source.name, limit=BATCH)
        if not pending:
            break
        ids = [doc_id for doc_id, _ in pending]
        outcomes = [outcome for _, outcome in pending]
        try:
            ctx.host.on_submission_result(source, outcomes)
        except HookFailed as failure:
            ctx.report_hook_failure(failure)
            break
        ctx.ledger.mark_reported(ids)
        reported += len(ids)
        for outcome in outcomes:
            elapsed = (outcome.final_at - outcome.fetched_at).total_seconds() if outcome.final_at and outcome.fetched_at else None
            ctx.emit("document_final", source=source.name, state=outcome.state.value, seconds_since_fetch=elapsed)
            log.info(
                "invoice %s v%d: %s%s",
                outcome.number,
                outcome.version,
                outcome.state.value,
                f" (uuid {outcome.uuid})" if outcome.uuid else "",
                extra={"invoice": outcome.number, "uuid": outcome.uuid, "submission_uid": outcome.submission_uid},
            )
        if len(pending) < BATCH:
            break
    return reported
