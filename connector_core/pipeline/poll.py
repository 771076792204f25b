"""Poll stage: the status of submitted documents, from Get Submission only.

LHDN's integration practices: status comes from Get Submission (never per document), the first
poll waits according to the submission's size, and polling backs off (3-5 s advised). Get
Document Details is called only to learn the errors of a document that is already Invalid, and
to read the earlier document a ``DS302`` names when Search Documents has not indexed it yet.

A ``DS302`` duplicate is adopted only when the earlier document is this row's own: the same
bytes we stored (so the same source key, version and content). One that belongs to another ERP
row, or to nobody we know, is never written back as this invoice's uuid: the clerk is told
which row holds the number, and to renumber.
"""

from __future__ import annotations

import hashlib
import logging
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import datetime, timedelta

from connector_core.api import (
    ApiError,
    AuthenticationFailed,
    DocumentStatus,
    DocumentSummary,
    Endpoint,
    NotFound,
    RateBackendUnavailable,
    RetriableError,
    SubmissionStatus,
)
from connector_core.contract import DocumentState
from connector_core.ledger import DocumentStatusUpdate, SubmissionRecord, SubmissionState, SubmittedDocument, utcnow
from connector_core.pipeline.context import PipelineContext
from connector_core.pipeline.watch import watch_interval, watch_submission, watch_until

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
    return min(
        cycles.poll_max_interval_seconds, cycles.poll_min_interval_seconds * cycles.poll_backoff_factor**sub.poll_count
    )


def poll_profile(ctx: PipelineContext, profile: str) -> int:
    """Poll every submission of ``profile`` that is due, the watched ones (see
    :mod:`.watch`) after the others; return how many were polled."""
    settings = ctx.settings.submission
    polled = 0
    limit = settings.poll_concurrency * 4
    with ThreadPoolExecutor(max_workers=settings.poll_concurrency, thread_name_prefix=f"poll-{profile}") as pool:
        while not ctx.stop.is_set() and ctx.availability.may_try(profile):
            now = utcnow()
            due = ctx.ledger.polls.submissions_due(profile, now, limit=limit)
            if len(due) < limit:
                # The watch shares Get Submission's budget and takes what normal polling leaves:
                # the calls of a round are made in this order.
                due += ctx.ledger.watch.submissions_due(profile, now, limit=limit - len(due))
            if not due:
                break
            results = list(pool.map(lambda sub: _poll_safely(ctx, profile, sub), due))
            polled += sum(results)
            if not all(results):
                break  # MyInvois is failing: leave the rest for the next cycle
    return polled


def _poll_safely(ctx: PipelineContext, profile: str, sub: SubmissionRecord) -> bool:
    watching = sub.state == SubmissionState.WATCHING.value
    try:
        (watch_submission if watching else poll_submission)(ctx, profile, sub)
        ctx.availability.reached(profile)
        return True
    except ApiError as exc:
        if isinstance(exc, RetriableError) and not isinstance(exc, RateBackendUnavailable):
            # MyInvois is failing: said once per outage, and polling backs off with sending.
            ctx.availability.unreachable(profile, exc.endpoint.value if exc.endpoint else "get_submission", str(exc))
            log.debug("polling submission %s failed (%s)", sub.submission_uid, exc)
        elif isinstance(exc, AuthenticationFailed) and exc.endpoint is Endpoint.login:
            # Told once per refusal (Availability), not once per due submission every beat.
            ctx.availability.login_refused(profile, str(exc))
        else:
            log.warning("polling submission %s failed (%s); it is polled again next cycle", sub.submission_uid, exc)
        now = utcnow()
        retry_at = now + timedelta(seconds=next_poll_delay(ctx, sub, now))
        if watching:
            # Never closed on a failed poll: the last poll must have seen the end of the window.
            ctx.ledger.watch.watch_failed(sub.id, retry_at=min(retry_at, now + watch_interval(ctx)))
            return False
        ctx.ledger.polls.record_poll(sub.id, overall_status=None, updates=[], next_poll_at=retry_at)
        return False


def poll_submission(ctx: PipelineContext, profile: str, sub: SubmissionRecord) -> None:
    client = ctx.clients[profile]
    assert sub.submission_uid is not None
    submission = client.get_submission_all(sub.submission_uid)
    ours = {d.uuid: d for d in sub.documents if d.uuid}
    # Claimed but not named by the 202 (MyInvois's answer listed neither acceptance nor
    # rejection): Get Submission lists what the submission holds, by invoice number.
    unnamed = {d.number: d for d in sub.documents if not d.uuid and d.state == DocumentState.SUBMITTING.value}
    found_unnamed: list[tuple[int, str]] = []
    updates: list[DocumentStatusUpdate] = []
    for summary in submission.documents:
        doc = ours.get(summary.uuid)
        if doc is None and summary.internal_id in unnamed:
            doc = unnamed.pop(summary.internal_id)
            found_unnamed.append((doc.id, summary.uuid))
            doc = SubmittedDocument(
                doc.id,
                doc.number,
                summary.uuid,
                None,
                doc.document_hash,
                doc.issued_at,
                DocumentState.SUBMITTED.value,
                doc.document_type,  # its cancellation window, once Valid
            )
        if doc is None or DocumentState(doc.state).is_final or doc.state == DocumentState.CANCELLING.value:
            continue  # what happens after Valid is the watch's (see .watch)
        state = _STATE_OF.get(summary.status)
        if state is None:
            continue  # still Submitted
        if state is DocumentState.VALID:
            validated_at = summary.date_time_validated or utcnow()
            updates.append(
                DocumentStatusUpdate(
                    summary.uuid,
                    state,
                    long_id=summary.long_id,
                    validation_link=summary.validation_link(ctx.portal_base_url),
                    validated_at=validated_at,
                    watch_until=watch_until(ctx, profile, doc, validated_at),
                )
            )
        elif state is DocumentState.INVALID:
            update = _invalid_update(ctx, profile, sub, doc, summary, found_unnamed)
            if update is not None:
                updates.append(update)
        else:
            updates.append(DocumentStatusUpdate(summary.uuid, state))
    # A finished submission that still does not list them did not accept them.
    finished = submission.overall_status not in (SubmissionStatus.IN_PROGRESS, SubmissionStatus.UNKNOWN)
    not_in_submission = [d.id for d in unnamed.values()] if finished else []
    if not_in_submission:
        log.warning(
            "submission %s: %d document(s) its 202 did not name are not in it; they are sent again",
            sub.submission_uid,
            len(not_in_submission),
        )
    now = utcnow()
    ctx.ledger.polls.record_poll(
        sub.id,
        overall_status=submission.overall_status.value,
        updates=updates,
        next_poll_at=now + timedelta(seconds=next_poll_delay(ctx, sub, now)),
        found_unnamed=found_unnamed,
        not_in_submission=not_in_submission,
        watch_interval=watch_interval(ctx),
    )
    ctx.emit("polled", profile=profile, submission_uid=sub.submission_uid, final=len(updates))


def _invalid_update(
    ctx: PipelineContext,
    profile: str,
    sub: SubmissionRecord,
    doc: SubmittedDocument,
    summary: DocumentSummary,
    found_unnamed: list[tuple[int, str]],
) -> DocumentStatusUpdate | None:
    """Errors of an Invalid document, from Get Document Details. A ``DS302`` duplicate naming
    an earlier uuid is settled by :func:`_settle_duplicate` instead."""
    client = ctx.clients[profile]
    details = client.get_document_details(summary.uuid)
    errors = details.errors
    messages = [e.clerk_message() for e in errors] or ["MyInvois marked the document invalid without listing errors"]
    raw = [step.error and _as_dict(step) for step in details.steps if step.error]
    raw = [r for r in raw if r]
    for error in errors:
        if error.code == DUPLICATE_DOCUMENT_CODE:
            earlier = [u for u in _UUID.findall(error.message or "") if u != summary.uuid]
            if earlier:
                if any(doc_id == doc.id for doc_id, _ in found_unnamed):
                    # Record its uuid first (this poll), settle the duplicate on the next one.
                    return None
                if _settle_duplicate(ctx, profile, sub, doc, earlier[0], summary, messages, raw):
                    return None
    return DocumentStatusUpdate(summary.uuid, DocumentState.INVALID, errors=messages, error_details=raw)


def _settle_duplicate(
    ctx: PipelineContext,
    profile: str,
    sub: SubmissionRecord,
    doc: SubmittedDocument,
    earlier_uuid: str,
    summary: DocumentSummary,
    messages: list[str],
    raw: list[dict],
) -> bool:
    """Adopt the earlier document when it is this row's own; refuse the row, naming who holds
    the number, when it is not. Returns False when the earlier document cannot be read (then
    the DS302 error is reported like any other)."""
    polls = ctx.ledger.polls
    holder = polls.holder_of(earlier_uuid)
    if holder is not None and holder["id"] != doc.id:
        return _refuse_duplicate(ctx, sub, doc, earlier_uuid, messages, raw, holder=holder)
    match = _find_earlier(ctx, profile, earlier_uuid, summary)
    if match is None:
        return False
    if not _same_bytes(ctx, profile, doc, earlier_uuid):
        return _refuse_duplicate(ctx, sub, doc, earlier_uuid, messages, raw, holder=None)
    state = _STATE_OF.get(match.status)
    if state is None:
        # Still being validated: look again at the next poll of this submission.
        log.info("document %s duplicates %s, which is still being validated", summary.uuid, earlier_uuid)
        return True
    moved = polls.adopt(
        doc.id,
        sub.id,
        uuid=earlier_uuid,
        state=state,
        long_id=match.long_id,
        validation_link=match.validation_link(ctx.portal_base_url),
    )
    if moved.won:
        ctx.ledger.journal.increment("duplicates_adopted")
        log.warning(
            "document %s was a duplicate (DS302) of our own %s; the earlier document is kept",
            summary.uuid,
            earlier_uuid,
        )
    return True


def _find_earlier(
    ctx: PipelineContext, profile: str, earlier_uuid: str, summary: DocumentSummary
) -> DocumentSummary | None:
    client = ctx.clients[profile]
    received = summary.date_time_received or utcnow()
    page = client.search_documents(
        received - timedelta(hours=3), utcnow(), page_size=100, invoice_direction="Sent", search_query=earlier_uuid
    )
    match = next((d for d in page.documents if d.uuid == earlier_uuid), None)
    if match is not None:
        return match
    # MyInvois indexes documents for search asynchronously, and this path is reached exactly
    # when a search missed the earlier document (that is why it was re-sent). Get Document
    # Details reads the document by uuid, without the index.
    try:
        details = ctx.clients[profile].get_document_details(earlier_uuid)
    except NotFound:
        return None
    found = details.summary
    if found.uuid != earlier_uuid or (
        found.internal_id and summary.internal_id and found.internal_id != summary.internal_id
    ):
        return None
    if found.issuer_tin and found.issuer_tin != ctx.profiles[profile].tin:
        return None
    return found


def _same_bytes(ctx: PipelineContext, profile: str, doc: SubmittedDocument, earlier_uuid: str) -> bool:
    """Whether MyInvois's earlier document is exactly the bytes this row sent: a re-send after
    a lost answer is byte-identical, another row's document with the same number is not."""
    _content, stored_hash = ctx.ledger.polls.document_content(doc.id)
    if not stored_hash:
        return False
    try:
        raw = ctx.clients[profile].get_document_raw(earlier_uuid)
    except NotFound:
        return False
    return hashlib.sha256(raw.document.encode("utf-8")).hexdigest() == stored_hash


def _refuse_duplicate(
    ctx: PipelineContext,
    sub: SubmissionRecord,
    doc: SubmittedDocument,
    earlier_uuid: str,
    messages: list[str],
    raw: list[dict],
    *,
    holder: dict | None,
) -> bool:
    if holder is not None:
        whose = f"row {holder['source_key']} of source {holder['source']} (its version {holder['version']})"
    else:
        whose = (
            "a document this connector did not send from this row (another ERP row, another system, or a manual upload)"
        )
    message = (
        f"invoice {doc.number}: MyInvois already holds document {earlier_uuid} with this number, issue time and issuer, "
        f"from {whose}; this row's own content was never accepted: give this invoice its own number in the ERP and queue it again"
    )
    moved = ctx.ledger.polls.refuse_duplicate_number(doc.id, sub.id, errors=[message, *messages], details=raw)
    if moved.won:
        ctx.ledger.journal.increment("duplicate_numbers_refused")
        ctx.ledger.journal.add_incident("duplicate_number", message, subject=doc.number)
        log.warning("%s", message)
    return True


def _as_dict(step) -> dict:
    import dataclasses

    return {"step": step.name, "status": step.status.value, "error": dataclasses.asdict(step.error)}
