"""Reconciling submissions whose outcome is unknown, before anything is re-sent.

A submit whose answer was lost (timeout, dropped connection, 5xx, or a crash mid-call) may or
may not have reached MyInvois. Sending it again blindly could create a second accepted document
for the same invoice. So, for each such submission:

1. **Search Documents** for its documents (by e-invoice number, within the submission's time
   window, matching the exact issue time we stamped): if MyInvois has them, take their uuids and
   the submission's uid from there, and poll that submission as usual.
2. If the search finds nothing, re-send the **identical bytes** (same issue time, same hash):
   * 202: it had not arrived; this is its one and only acceptance;
   * 422 ``DuplicateSubmission``: it had arrived (the search index lagged): stay in doubt and
     search again on the next cycle;
   * if it had arrived more than 10 minutes earlier without the search seeing it, MyInvois
     marks the re-sent documents Invalid with ``DS302`` naming the earlier uuid, and the poll
     stage adopts that earlier document (see :mod:`connector_core.pipeline.poll`).

Each ERP invoice therefore ends with exactly one accepted document.
"""

from __future__ import annotations

import logging
from datetime import datetime, timedelta

from connector_core.api import ApiError, DocumentSummary
from connector_core.contract import DocumentState
from connector_core.ledger import SubmissionRecord, SubmittedDocument
from connector_core.ledger.store import utcnow
from connector_core.pipeline.context import PipelineContext
from connector_core.pipeline.submit import BatchOutcome, ReadyDocument, first_poll_at, record_submit_answer
from connector_core.settings import Settings

log = logging.getLogger("connector_core.pipeline.reconcile")

#: Documents of one submission probed by search before concluding it never arrived. One hit is
#: enough: it names the submission, and Get Submission then lists all its documents.
PROBES_PER_SUBMISSION = 3
#: Search window around the moment the submission was sent.
WINDOW_BEFORE = timedelta(minutes=2)


def abandoned_before(settings: Settings, now: datetime | None = None) -> datetime:
    """A submission still ``sending`` since before this was left by a connector that stopped."""
    return (now or utcnow()) - timedelta(seconds=settings.submission.abandoned_after_seconds)


def reconcile_profile(ctx: PipelineContext, profile: str) -> int:
    """Reconcile every unresolved submission of ``profile`` that is old enough; return how many
    were resolved (found, re-sent or closed)."""
    grace = timedelta(seconds=ctx.settings.cycles.reconcile_after_seconds)
    now = utcnow()
    # Connectors sharing this ledger: one that stopped mid-send and never came back left its
    # submission 'sending'; nobody else would ever reconcile it.
    abandoned = ctx.ledger.recover_abandoned_sends(abandoned_before=abandoned_before(ctx.settings, now))
    if abandoned:
        log.warning("%d submission(s) left 'sending' by a connector that stopped; they will be reconciled", abandoned)
    resolved = 0
    for sub in ctx.ledger.unresolved_submissions(profile):
        if ctx.stop.is_set():
            break
        # Give a slow server time to finish: the answer may still have been on its way.
        if sub.sent_at and now - sub.sent_at < grace:
            continue
        try:
            if reconcile_submission(ctx, profile, sub):
                resolved += 1
        except ApiError as exc:
            log.warning("submission %s stays in doubt: reconciliation failed (%s); next cycle tries again", sub.id, exc)
    return resolved


def reconcile_submission(ctx: PipelineContext, profile: str, sub: SubmissionRecord) -> bool:
    ledger = ctx.ledger
    client = ctx.clients[profile]
    ledger.note_reconcile_attempt(sub.id)
    docs = [d for d in sub.documents if d.state == DocumentState.SUBMITTING.value]
    if not docs:
        ledger.submission_accepted(sub.id, submission_uid=sub.submission_uid, accepted=[], rejected=[], next_poll_at=None)
        return True

    found = find_submitted(ctx, profile, sub, docs)
    if found:
        uid = next((s.submission_uid for s in found.values() if s.submission_uid), None)
        if uid:
            # The submission arrived: Get Submission lists every document it accepted.
            submission = client.get_submission_all(uid)
            found.update({s.internal_id: s for s in submission.documents if s.internal_id in {d.number for d in docs}})
        accepted = [(number, summary.uuid) for number, summary in found.items()]
        ledger.submission_accepted(sub.id, submission_uid=uid, accepted=accepted, rejected=[], next_poll_at=first_poll_at(ctx, 0))
        missing = [d.id for d in docs if d.number not in found]
        if missing:
            # Not in the submission that arrived: they were refused on arrival (the reason was in
            # the lost answer). They go back to pending; the re-send brings the reason back.
            ledger.submission_not_sent(sub.id, "not accepted in the submission that arrived", document_ids=missing)
        ledger.increment("reconciled_found")
        ctx.emit("reconciled", profile=profile, found=len(accepted), missing=len(missing))
        log.info("in-doubt submission %s found at MyInvois as %s (%d documents)", sub.id, uid, len(accepted))
        return True

    # Not found: re-send the very same bytes, so MyInvois's own duplicate checks protect us.
    ready = [ReadyDocument.from_stored(d.id, d.number, d.document_hash or "", d.document) for d in docs if d.document is not None]
    ledger.mark_resending(sub.id)
    ledger.increment("reconciled_resent")
    # If MyInvois does not take the re-send (not sent, login refused), the documents go back to
    # pending, which is right: the search showed it had not taken the original either.
    outcome = record_submit_answer(ctx, profile, sub.id, lambda: client.submit([d.entry() for d in ready]))
    log.info("in-doubt submission %s not found at MyInvois; re-sent identically: %s", sub.id, outcome.value)
    return outcome is not BatchOutcome.IN_DOUBT


def find_submitted(
    ctx: PipelineContext, profile: str, sub: SubmissionRecord, docs: list[SubmittedDocument]
) -> dict[str, DocumentSummary]:
    """Search Documents for a few of the submission's documents; return what was found by number."""
    client = ctx.clients[profile]
    tin = ctx.profiles[profile].tin
    sent_at = sub.sent_at or sub.created_at
    window_from = sent_at - WINDOW_BEFORE
    window_to = max(utcnow(), sent_at + timedelta(seconds=1))
    found: dict[str, DocumentSummary] = {}
    for doc in docs[:PROBES_PER_SUBMISSION]:
        page_no = 1
        while True:
            page = client.search_documents(
                window_from,
                window_to,
                page_no=page_no,
                page_size=100,
                invoice_direction="Sent",
                search_query=doc.number,
            )
            for summary in page.documents:
                if _is_ours(summary, doc, tin):
                    found[doc.number] = summary
            if page_no >= page.total_pages or doc.number in found:
                break
            page_no += 1
        if found:
            break
    return found


def _is_ours(summary: DocumentSummary, doc: SubmittedDocument, tin: str) -> bool:
    if summary.internal_id != doc.number:
        return False
    if summary.issuer_tin and summary.issuer_tin != tin:
        return False
    # The issue time we stamped is unique to this build of the document: an older submission
    # of the same invoice number (an earlier, invalid version) does not match.
    if doc.issued_at and summary.date_time_issued:
        return abs((summary.date_time_issued - doc.issued_at).total_seconds()) < 1
    return True

