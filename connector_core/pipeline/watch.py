"""Watch stage: what becomes of a Valid document while MyInvois may still change it.

For 72 hours after validation (the document type's cancellation window, plus
``cycles.watch_margin_seconds``) the issuer may cancel a document on the portal and the buyer
may ask for its rejection. Neither is pushed to us, so a submission holding such documents is
re-polled every ``cycles.watch_interval_seconds``, through Get Submission only: never per
document, never Search (LHDN: Search and Recent are "not designed for reconciliation", 12 a
minute). The poll stage takes due watched submissions only after the normal ones of the same
round, so the watch spends what is left of Get Submission's 300 a minute.

What it finds reaches the ERP through ``on_submission_result``: ``rejection_requested`` (still
Valid at MyInvois, the buyer's reason and time) and ``cancelled`` (on the portal, or our own
cancel whose answer was lost). When every document's watch has ended, one last poll at or after
the end closes the submission (``done``).
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from connector_core.api import DocumentStatus, DocumentSummary
from connector_core.contract import DocumentState
from connector_core.ledger import SubmissionRecord, WatchEvent
from connector_core.ledger.records import SubmittedDocument
from connector_core.pipeline.context import PipelineContext

log = logging.getLogger("connector_core.pipeline.watch")

D = DocumentState
#: States in which a document is followed by the watch.
_FOLLOWED = frozenset({D.VALID.value, D.REJECTION_REQUESTED.value, D.CANCELLING.value})


def watch_interval(ctx: PipelineContext) -> timedelta:
    return timedelta(seconds=ctx.settings.cycles.watch_interval_seconds)


def watch_until(ctx: PipelineContext, profile: str, doc: SubmittedDocument, validated_at: datetime) -> datetime:
    """The end of a just-validated document's watch: its type's window plus the margin."""
    window = ctx.windows.window(ctx.clients[profile], doc.document_type, validated_at)
    return validated_at + window + timedelta(seconds=ctx.settings.cycles.watch_margin_seconds)


def watch_submission(ctx: PipelineContext, profile: str, sub: SubmissionRecord) -> None:
    """One watch poll of a ``watching`` submission: one Get Submission (a page per 100
    documents), the news recorded, the next poll set or the watch closed."""
    assert sub.submission_uid is not None
    submission = ctx.clients[profile].get_submission_all(sub.submission_uid)
    ours = {d.uuid: d for d in sub.documents if d.uuid and d.state in _FOLLOWED}
    events = [event for summary in submission.documents if (event := _news(ours.get(summary.uuid), summary))]
    over = ctx.ledger.watch.record_watch(sub.id, events, interval=watch_interval(ctx))
    for event in events:
        log.info(
            "submission %s: document %s is %s at MyInvois%s",
            sub.submission_uid,
            event.uuid,
            event.state.value.replace("_", " "),
            f" ({event.reason})" if event.reason else "",
        )
    ctx.emit("watched", profile=profile, submission_uid=sub.submission_uid, news=len(events), over=over)


def _news(doc: SubmittedDocument | None, summary: DocumentSummary) -> WatchEvent | None:
    """What Get Submission says happened to one of our followed documents, if anything."""
    if doc is None:
        return None
    if summary.status is DocumentStatus.CANCELLED:
        return WatchEvent(summary.uuid, D.CANCELLED, summary.document_status_reason, summary.cancel_date_time)
    if doc.state == D.VALID.value and summary.reject_request_date_time is not None:
        return WatchEvent(
            summary.uuid, D.REJECTION_REQUESTED, summary.document_status_reason, summary.reject_request_date_time
        )
    # A cancel in progress that MyInvois still shows Valid is the cancel stage's to settle.
    return None
