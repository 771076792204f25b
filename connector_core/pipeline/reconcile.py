"""Reconciling submissions whose outcome is unknown, before anything is re-sent.

A submit whose answer was lost (timeout, dropped connection, 5xx, or a crash mid-call) may or
may not have reached MyInvois. Sending it again blindly could create a second accepted document
for the same invoice. So, for each such submission, one connector at a time (it takes the
submission ``in_doubt`` → ``reconciling``; a connector that stops mid-way leaves a claim that
ages out and is taken again):

1. **Search Documents** for its documents (by e-invoice number, in a window from its *first*
   send, matching the exact issue time we stamped, and, where Get Document can show them,
   exactly the bytes we sent: another system's document with our number is never taken for
   ours): if MyInvois has them, take their uuids and the submission's uid from there, and poll
   that submission as usual.
2. If the search finds nothing, re-send the **identical bytes** (same issue time, same hash):
   * 202: it had not arrived; this is its one and only acceptance;
   * 422 ``DuplicateSubmission``: it had arrived (the search index lagged): in doubt again;
   * not taken (429, connection refused, login refused): in doubt again, never back to
     pending: the first send may still be at MyInvois;
   * if it had arrived more than 10 minutes earlier without the search seeing it, MyInvois
     marks the re-sent documents Invalid with ``DS302`` naming the earlier uuid, and the poll
     stage adopts that earlier document (see :mod:`connector_core.pipeline.poll`).
3. A submission still unresolved after ``cycles.reconcile_max_attempts`` or older than
   ``cycles.reconcile_give_up_after_hours`` is **escalated**: an incident, a metric and a line
   in ``status``, and no more Search calls. Stored bytes are never re-sent once their issue
   time nears LHDN's 72-hour limit, and never rebuilt: a rebuilt document has a new issue time,
   so MyInvois's duplicate check could not recognise it.

Each ERP invoice therefore ends with exactly one accepted document.
"""

from __future__ import annotations

import hashlib
import logging
import time
from datetime import datetime, timedelta

from connector_core.api import (
    ApiError,
    AuthenticationFailed,
    DocumentStatus,
    DocumentSummary,
    NotFound,
    RateLimited,
    RetriableError,
)
from connector_core.contract import DocumentState
from connector_core.ledger import SubmissionRecord, SubmittedDocument, utcnow
from connector_core.pipeline.context import PipelineContext
from connector_core.pipeline.sending import BatchOutcome, ReadyDocument, first_poll_at, record_submit_answer
from connector_core.settings import Settings

log = logging.getLogger("connector_core.pipeline.reconcile")

#: Documents of one submission probed by search before concluding it never arrived. One hit is
#: enough: it names the submission, and Get Submission then lists all its documents.
PROBES_PER_SUBMISSION = 3
#: Search window: from a little before the submission was first sent.
WINDOW_BEFORE = timedelta(minutes=2)
#: MyInvois refuses a document issued more than 72 hours before it arrives; bytes this close to
#: that are not re-sent (a call may take a while to arrive, and clocks differ).
ISSUANCE_LIMIT = timedelta(hours=72)
RESEND_MARGIN = timedelta(hours=1)


def abandoned_before(settings: Settings, now: datetime | None = None) -> datetime:
    """A submission still ``sending`` since before this was left by a connector that stopped."""
    return (now or utcnow()) - timedelta(seconds=settings.submission.abandoned_after_seconds)


def reconcile_profile(ctx: PipelineContext, profile: str) -> int:
    """Reconcile every in-doubt submission of ``profile`` that is old enough and that no other
    connector is reconciling; return how many were resolved (found, re-sent or closed)."""
    sends = ctx.ledger.sends
    grace = timedelta(seconds=ctx.settings.cycles.reconcile_after_seconds)
    now = utcnow()
    # Connectors sharing this ledger: one that stopped mid-send or mid-reconciliation and never
    # came back left its submission claimed; nobody else would ever reconcile it.
    abandoned = sends.recover_abandoned(abandoned_before=abandoned_before(ctx.settings, now))
    if abandoned:
        log.warning("%d submission(s) left claimed by a connector that stopped; they will be reconciled", abandoned)
    resolved = 0
    if time.monotonic() < ctx.reconcile_paused_until.get(profile, 0.0):
        return 0
    for sub in sends.unresolved_submissions(profile):
        if ctx.stop.is_set() or not ctx.availability.may_try(profile):
            break
        # Give a slow server time to finish: the answer may still have been on its way.
        if sub.sent_at and now - sub.sent_at < grace:
            continue
        if sends.take_reconciliation(sub.id).lost:
            continue  # another connector took it first: it is theirs
        try:
            if reconcile_submission(ctx, profile, sub):
                resolved += 1
        except NotAsked as exc:
            # No token, a login back-off, a throttle, or an unreachable MyInvois before Search
            # answered: not a reconciliation, so not counted; the others would fail the same
            # way, so none is tried before a pause (without it, run --once's loop tried again
            # every beat and a login back-off used up every attempt in a second).
            cause = exc.__cause__ or exc
            retry_after = getattr(cause, "retry_after", None) or 0.0
            pause = max(ctx.settings.cycles.reconcile_after_seconds, ctx.settings.retry.max_delay_s, retry_after)
            ctx.reconcile_paused_until[profile] = time.monotonic() + pause
            log.warning(
                "submission %s stays in doubt: MyInvois could not be asked (%s); reconciliation pauses %.3g s",
                sub.id,
                cause,
                pause,
            )
            sends.still_in_doubt(sub.id, f"reconciliation could not ask MyInvois: {cause}", searched=False)
            break
        except RetriableError as exc:
            # Search (or the backend) is failing even after the client's retries: the others
            # would fail the same way. One line per cycle, not one per submission. Not an
            # outage of the profile: sending may work while Search is down.
            log.warning(
                "submission %s stays in doubt: reconciliation failed (%s); the next cycle tries again", sub.id, exc
            )
            sends.still_in_doubt(sub.id, f"reconciliation failed: {exc}")
            break
        except ApiError as exc:
            log.warning("submission %s stays in doubt: reconciliation failed (%s); next cycle tries again", sub.id, exc)
            sends.still_in_doubt(sub.id, f"reconciliation failed: {exc}")
        except BaseException:
            sends.still_in_doubt(sub.id, "reconciliation interrupted by an unexpected error")
            raise
    return resolved


class NotAsked(Exception):
    """Search Documents gave no answer (login, throttle, transport): the reconciliation did not
    happen, and does not count against ``cycles.reconcile_max_attempts``."""


def reconcile_submission(ctx: PipelineContext, profile: str, sub: SubmissionRecord) -> bool:
    """Reconcile one submission this connector has taken; it ends found, re-sent, escalated,
    closed or given back in doubt."""
    sends = ctx.ledger.sends
    client = ctx.clients[profile]
    docs = [d for d in sub.documents if d.state == DocumentState.SUBMITTING.value]
    if not docs:
        if sends.nothing_left(sub.id).lost:
            sends.still_in_doubt(sub.id, "documents still open but none in doubt")
            return False
        return True

    reason = _escalation_reason(ctx, sub)
    if reason:
        _escalate(ctx, profile, sub, reason)
        return False

    try:
        found = find_submitted(ctx, profile, sub, docs)
    except (RetriableError, RateLimited, AuthenticationFailed) as exc:
        raise NotAsked(str(exc)) from exc
    if found:
        uid = next((s.submission_uid for s in found.values() if s.submission_uid), None)
        if not uid:
            sends.still_in_doubt(sub.id, "found at MyInvois without its submission uid; searched again later")
            return False
        # The submission arrived: Get Submission lists every document it accepted.
        submission = client.get_submission_all(uid)
        numbers = {d.number for d in docs}
        found.update({s.internal_id: s for s in submission.documents if s.internal_id in numbers})
        accepted = [(number, summary.uuid) for number, summary in found.items()]
        # Not in the submission that arrived: refused on arrival (the reason was in the lost
        # answer). They go back to pending; the re-send brings the reason back.
        missing = [d.id for d in docs if d.number not in found]
        moved = sends.reconciled_found(
            sub.id, submission_uid=uid, accepted=accepted, missing=missing, next_poll_at=first_poll_at(ctx, 0)
        )
        if moved.lost:
            return False
        ctx.ledger.journal.increment("reconciled_found")
        ctx.emit("reconciled", profile=profile, found=len(accepted), missing=len(missing))
        log.info("in-doubt submission %s found at MyInvois as %s (%d documents)", sub.id, uid, len(accepted))
        return True

    # Not found: re-send the very same bytes, so MyInvois's own duplicate checks protect us.
    too_old = utcnow() - (ISSUANCE_LIMIT - RESEND_MARGIN)
    if any(d.document is None or not d.issued_at or d.issued_at < too_old for d in docs):
        _escalate(
            ctx,
            profile,
            sub,
            "its stored documents are too close to LHDN's 72-hour issuance limit to be re-sent; they are not rebuilt "
            "either (a new issue time would escape MyInvois's duplicate check), so no duplicate can follow: check the "
            "invoices on the MyInvois portal",
        )
        return False
    ready = [ReadyDocument.from_stored(d.id, d.number, d.document_hash or "", d.document) for d in docs if d.document]
    if sends.start_resend(sub.id).lost:
        return False
    ctx.ledger.journal.increment("reconciled_resent")
    outcome = record_submit_answer(ctx, profile, sub.id, lambda: client.submit([d.entry() for d in ready]), resend=True)
    log.info("in-doubt submission %s not found at MyInvois; re-sent identically: %s", sub.id, outcome.value)
    return outcome in (BatchOutcome.ACCEPTED, BatchOutcome.REFUSED)


def _escalation_reason(ctx: PipelineContext, sub: SubmissionRecord) -> str | None:
    cycles = ctx.settings.cycles
    first = sub.first_sent_at or sub.sent_at or sub.created_at
    age = utcnow() - first
    if sub.reconcile_attempts >= cycles.reconcile_max_attempts:
        return f"still in doubt after {sub.reconcile_attempts} reconciliations"
    if age > timedelta(hours=cycles.reconcile_give_up_after_hours):
        return f"still in doubt {age.total_seconds() / 3600:.1f} hours after it was first sent"
    return None


def _escalate(ctx: PipelineContext, profile: str, sub: SubmissionRecord, reason: str) -> None:
    if ctx.ledger.sends.escalate(sub.id, reason).lost:
        return
    numbers = ", ".join(d.number for d in sub.documents[:10])
    message = (
        f"submission {sub.id} of profile {profile!r} ({sub.document_count} document(s): {numbers}) is escalated: {reason}. "
        "The connector stops searching for it and never re-sends it: look the invoices up on the MyInvois portal"
    )
    log.error("%s", message)
    ctx.ledger.journal.add_incident("submission_escalated", message, subject=profile)
    ctx.ledger.journal.increment("submissions_escalated")
    ctx.emit("submission_escalated", profile=profile, submission=sub.id)


def find_submitted(
    ctx: PipelineContext, profile: str, sub: SubmissionRecord, docs: list[SubmittedDocument]
) -> dict[str, DocumentSummary]:
    """Search Documents for a few of the submission's documents; return what was found by number.

    A hit with our number, issuer and issue second is only a candidate: another system (a
    second installation on our client id, a manual upload) may have sent a document with the
    same number in the same second. A candidate MyInvois still holds the bytes of (Submitted,
    Valid, Cancelled) is ours only if Get Document returns exactly the bytes we sent. An
    Invalid one cannot be checked that way (Get Document does not return Invalid documents):
    it is taken only when no candidate proved to be ours, and taking it can only ever report
    an invalid outcome to the ERP, never another system's Valid uuid."""
    client = ctx.clients[profile]
    tin = ctx.profiles[profile].tin
    # From the first send, not the latest re-send: a window that slid with each re-send would
    # lose sight of the first send once it was older than the slide.
    sent_at = sub.first_sent_at or sub.sent_at or sub.created_at
    window_from = sent_at - WINDOW_BEFORE
    # The API takes whole seconds and the client truncates: a window ending "now" would end up to
    # a second before now, and miss a document MyInvois received in that second.
    window_to = max(utcnow(), sent_at).replace(microsecond=0) + timedelta(seconds=2)
    found: dict[str, DocumentSummary] = {}
    for doc in docs[:PROBES_PER_SUBMISSION]:
        candidates: list[DocumentSummary] = []
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
            candidates += [summary for summary in page.documents if _could_be_ours(summary, doc, tin)]
            if page_no >= page.total_pages:
                break
            page_no += 1
        ours = _ours_among(ctx, profile, doc, candidates)
        if ours is not None:
            found[doc.number] = ours
            break
    return found


def _could_be_ours(summary: DocumentSummary, doc: SubmittedDocument, tin: str) -> bool:
    if summary.internal_id != doc.number:
        return False
    if summary.issuer_tin and summary.issuer_tin != tin:
        return False
    # The issue time we stamped is unique to this build of the document: an older submission
    # of the same invoice number (an earlier, invalid version) does not match.
    if doc.issued_at and summary.date_time_issued:
        return abs((summary.date_time_issued - doc.issued_at).total_seconds()) < 1
    return True


def _ours_among(
    ctx: PipelineContext, profile: str, doc: SubmittedDocument, candidates: list[DocumentSummary]
) -> DocumentSummary | None:
    unverifiable: list[DocumentSummary] = []
    for summary in candidates:
        if summary.status == DocumentStatus.INVALID:
            unverifiable.append(summary)
        elif _holds_our_bytes(ctx, profile, doc, summary.uuid):
            return summary
    # Newest first (Search's order): the latest of our sends that MyInvois refused.
    return unverifiable[0] if unverifiable else None


def _holds_our_bytes(ctx: PipelineContext, profile: str, doc: SubmittedDocument, uuid: str) -> bool:
    if not doc.document_hash:
        return False
    try:
        raw = ctx.clients[profile].get_document_raw(uuid)
    except NotFound:
        return False
    return hashlib.sha256(raw.document.encode("utf-8")).hexdigest() == doc.document_hash
