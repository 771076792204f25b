"""Poll stage: the status of submitted documents, from Get Submission only.

LHDN's integration practices: status comes from Get Submission (never per document), the first
poll waits according to the submission's size, and polling backs off (3-5 s advised). Get
Document Details is called only to learn the errors of a document that is already Invalid, and
to read the earlier document a ``DS302`` names when Search Documents has not indexed it yet.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from connector_core.api import ApiError, DocumentStatus, DocumentSummary, NotFound
from connector_core.contract import DocumentState
from connector_core.ledger import DocumentStatusUpdate, SubmissionRecord
from connector_core.ledger.store import utcnow
from connector_core.pipeline.context import PipelineContext

log = logging.getLogger("connector_core.pipeline.poll")

_STATE_OF = {
    DocumentStatus.VALID: DocumentState.VALID,
    DocumentStatus.INVALID: DocumentState.INVALID,
    DocumentStatus.CANCELLED: DocumentState.CANCELLED,
}
#: MyInvois document ids: 26 upper-case letters and digits.
_UUID = re.compile(r"\b[A-Z0-9]{26}\b")
DUPLICATE_DOCUMENT_CODE = "DS302"


def next_poll_delay(ctx: PipelineContext, sub: SubmissionRecord, now: datetime) -> float:
    cycles = ctx.settings.cycles
    age = (now - (sub.sent_at or sub.created_at)).total_seconds()
    if age > cycles.slow_poll_after_seconds:
        return cycles.slow_poll_interval_seconds
    return min(cycles.poll_max_interval_seconds, cycles.poll_min_interval_seconds * cycles.poll_backoff_factor**sub.poll_count)


def poll_profile(ctx: PipelineContext, profile: str) -> int:
    """Poll every submission of ``profile`` that is due; return how many were polled."""
    settings = ctx.settings.submission
    polled = 0
    with ThreadPoolExecutor(max_workers=settings.poll_concurrency, thread_name_prefix=f"poll-{profile}") as pool:
        while not ctx.stop.is_set():
            due = ctx.ledger.submissions_due(profile, utcnow(), limit=settings.poll_concurrency * 4)
            if not due:
                break
            results = list(pool.map(lambda sub: _poll_safely(ctx, profile, sub), due))
            polled += sum(results)
            if not all(results):
                break  # MyInvois is failing: leave the rest for the next cycle
    return polled


def _poll_safely(ctx: PipelineContext, profile: str, sub: SubmissionRecord) -> bool:
    try:
        poll_submission(ctx, profile, sub)
        return True
    except ApiError as exc:
        log.warning("polling submission %s failed (%s); it is polled again next cycle", sub.submission_uid, exc)
        now = utcnow()
        ctx.ledger.record_poll(sub.id, overall_status=None, updates=[], next_poll_at=now + timedelta(seconds=next_poll_delay(ctx, sub, now)))
        return False


def poll_submission(ctx: PipelineContext, profile: str, sub: SubmissionRecord) -> None:
    client = ctx.clients[profile]
    assert sub.submission_uid is not None
    submission = client.get_submission_all(sub.submission_uid)
    ours = {d.uuid: d for d in sub.documents if d.uuid}
    updates: list[DocumentStatusUpdate] = []
    for summary in submission.documents:
        doc = ours.get(summary.uuid)
        if doc is None or DocumentState(doc.state).is_final:
            continue
        state = _STATE_OF.get(summary.status)
        if state is None:
            continue  # still Submitted
        if state is DocumentState.VALID:
            updates.append(
                DocumentStatusUpdate(summary.uuid, state, long_id=summary.long_id, validation_link=summary.validation_link(ctx.portal_base_url))
            )
        elif state is DocumentState.INVALID:
            update = _invalid_update(ctx, profile, doc.id, summary)
            if update is not None:
                updates.append(update)
        else:
            updates.append(DocumentStatusUpdate(summary.uuid, state))
    now = utcnow()
    ctx.ledger.record_poll(
        sub.id,
        overall_status=submission.overall_status.value,
        updates=updates,
        next_poll_at=now + timedelta(seconds=next_poll_delay(ctx, sub, now)),
    )
    ctx.emit("polled", profile=profile, submission_uid=sub.submission_uid, final=len(updates))


def _invalid_update(ctx: PipelineContext, profile: str, doc_id: int, summary: DocumentSummary) -> DocumentStatusUpdate | None:
    """Errors of an Invalid document, from Get Document Details. A ``DS302`` duplicate naming
    an earlier uuid means that earlier document is this invoice's accepted one: adopt it."""
    client = ctx.clients[profile]
    details = client.get_document_details(summary.uuid)
    errors = details.errors
    for error in errors:
        if error.code == DUPLICATE_DOCUMENT_CODE:
            earlier = [u for u in _UUID.findall(error.message or "") if u != summary.uuid]
            if earlier and _adopt_earlier(ctx, profile, doc_id, earlier[0], summary):
                return None
    messages = [e.clerk_message() for e in errors] or ["MyInvois marked the document invalid without listing errors"]
    raw = [step.error and _as_dict(step) for step in details.steps if step.error]
    return DocumentStatusUpdate(summary.uuid, DocumentState.INVALID, errors=messages, error_details=[r for r in raw if r])


def _adopt_earlier(ctx: PipelineContext, profile: str, doc_id: int, earlier_uuid: str, summary: DocumentSummary) -> bool:
    """Find the earlier document by search and make it this invoice's document. Returns False
    when it cannot be found (then the DS302 error is reported like any other)."""
    client = ctx.clients[profile]
    received = summary.date_time_received or utcnow()
    page = client.search_documents(
        received - timedelta(hours=3), utcnow(), page_size=100, invoice_direction="Sent", search_query=earlier_uuid
    )
    match = next((d for d in page.documents if d.uuid == earlier_uuid), None)
    if match is None:
        # MyInvois indexes documents for search asynchronously, and this path is reached exactly
        # when a search missed the earlier document (that is why it was re-sent). Reporting the
        # DS302 as an error then told the ERP "invalid" for an invoice that is Valid at LHDN
        # (seen with the simulator's search_lag_seconds). Get Document Details reads the
        # document by uuid, without the index; it must be this same invoice of ours.
        try:
            details = client.get_document_details(earlier_uuid)
        except NotFound:
            return False
        found = details.summary
        if found.uuid != earlier_uuid or (found.internal_id and summary.internal_id and found.internal_id != summary.internal_id):
            return False
        if found.issuer_tin and found.issuer_tin != ctx.profiles[profile].tin:
            return False
        match = found
    state = _STATE_OF.get(match.status)
    if state is None:
        # Still being validated: look again at the next poll of this submission.
        log.info("document %s duplicates %s, which is still being validated", summary.uuid, earlier_uuid)
        return True
    ctx.ledger.reassign_document(
        doc_id, uuid=earlier_uuid, state=state, long_id=match.long_id, validation_link=match.validation_link(ctx.portal_base_url)
    )
    ctx.ledger.increment("duplicates_adopted")
    log.warning("document %s was a duplicate (DS302) of %s; the earlier document is kept", summary.uuid, earlier_uuid)
    return True


def _as_dict(step) -> dict:
    import dataclasses

    return {"step": step.name, "status": step.status.value, "error": dataclasses.asdict(step.error)}
