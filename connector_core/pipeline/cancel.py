"""Cancel stage: cancel validated invoices at MyInvois, asked by a clerk or by the ERP.

A request comes from ``myinvois-connector cancel`` or from a plugin's ``fetch_cancel_requests``;
either way it goes through :func:`request_cancel`, which refuses what cannot be cancelled
without a call (never validated, the window over as the ledger knows it) and records the rest
in the ledger (``cancelling``) before anything is sent. :func:`cancel_waiting` then sends what
is recorded, at the rate policy's 12 a minute, and records each answer:

* success: ``cancelled``; the ERP hears it through ``on_submission_result``;
* a refusal (OperationPeriodOver, IncorrectState, ActiveReferencingDocuments, 403 ...): back to
  ``valid`` (or ``rejection_requested``) with ``cancel_error``: what MyInvois said and what the
  clerk can do about it. Never repeated by itself: the same call would be refused again;
* no answer (a timeout, a 5xx, the connection lost after sending): MyInvois may have cancelled
  it. The document stays ``cancelling`` and its submission is read through Get Submission
  before anything else is sent: Cancelled ends it, Valid allows one more attempt;
* not sent at all (throttled, login refused, the rate-limit backend down): tried again on a
  later cycle, without a check, since MyInvois never saw it.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum
from typing import Any

from connector_core.api.errors import (
    ApiError,
    AuthenticationFailed,
    NotFound,
    RateBackendUnavailable,
    RateLimited,
    RetriableError,
)
from connector_core.api.responses import DocumentStatus
from connector_core.contract import DocumentState, Source
from connector_core.ledger import Ledger
from connector_core.ledger.cancels import CANCELLABLE, CancelTarget
from connector_core.ledger.database import iso, utcnow
from connector_core.pipeline.context import PipelineContext
from connector_core.pipeline.reconcile import abandoned_before
from connector_core.plugins import HookFailed
from connector_core.settings import Settings

log = logging.getLogger("connector_core.pipeline.cancel")

D = DocumentState
MAX_REASON = 300  # the Cancel Document page's limit
#: Cancels sent per profile and cycle; more wait for the next cycle (LHDN allows 12 a minute).
BATCH = 50
#: Calls for one cancel in one cycle: the first, and after a lost answer and a check showing it
#: still Valid, up to two more. Beyond that MyInvois is struggling: a later cycle tries again.
ATTEMPTS_PER_CYCLE = 3


class Verdict(str, Enum):
    """What became of one cancel request."""

    RECORDED = "recorded"  # in the ledger as cancelling; sent by this or a later cycle
    CANCELLED = "cancelled"
    REFUSED = "refused"  # by MyInvois, or locally without a call; ``refusal`` says why
    IN_DOUBT = "in_doubt"  # sent, no answer: Get Submission decides before anything is sent again
    NOT_SENT = "not_sent"  # MyInvois never saw it: tried again later
    SKIPPED = "skipped"  # already being cancelled, or cancelled
    UNKNOWN_INVOICE = "unknown_invoice"


@dataclass(frozen=True)
class Refusal:
    """Why a cancel did not happen, in the clerk's words (``advice``), and as MyInvois said it."""

    code: str
    advice: str
    message: str | None = None
    #: Notes (credit, debit, refund) that reference the invoice: MyInvois uuid -> our number (or None).
    notes: dict[str, str | None] = field(default_factory=dict)
    status: int | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "code": self.code,
            "advice": self.advice,
            "message": self.message,
            "notes": [{"uuid": uuid, "number": number} for uuid, number in self.notes.items()],
            "status": self.status,
            "at": iso(utcnow()),
        }


@dataclass(frozen=True)
class CancelResult:
    verdict: Verdict
    target: CancelTarget | None = None
    refusal: Refusal | None = None
    detail: str = ""

    def line(self) -> str:
        """One line for the clerk."""
        what = self.target.describe() if self.target else "the invoice"
        if self.verdict is Verdict.CANCELLED:
            return f"{what}: cancelled at MyInvois (uuid {self.target.uuid if self.target else '?'})"
        if self.verdict is Verdict.REFUSED and self.refusal is not None:
            said = f" [{self.refusal.message}]" if self.refusal.message else ""
            return f"{what}: not cancelled ({self.refusal.code}): {self.refusal.advice}{said}"
        if self.verdict is Verdict.IN_DOUBT:
            return (
                f"{what}: MyInvois did not answer the cancel ({self.detail}); it may have been cancelled all the same. "
                "The connector reads its submission from MyInvois before sending anything again; "
                "see 'myinvois-connector show' or the ERP for the outcome"
            )
        if self.verdict is Verdict.NOT_SENT:
            return f"{what}: recorded, not sent yet ({self.detail}); the connector sends it on its next cycle"
        if self.verdict is Verdict.SKIPPED:
            return f"{what}: {self.detail}"
        if self.verdict is Verdict.RECORDED:
            return f"{what}: cancel recorded; {self.detail or 'the connector sends it on its next cycle'}"
        return f"{what}: {self.detail}"


# --- advice ---------------------------------------------------------------------------------


def window_over_advice() -> str:
    return "the 72-hour window to cancel it is over: issue a credit note instead"


def refusal_of(error: ApiError, profile: str, numbers_of: Any) -> Refusal | None:
    """The refusal an error means, with advice a clerk can act on; None when the error says
    nothing about the cancel itself (no answer, not sent): those are not refusals."""
    if isinstance(error, (RetriableError, RateLimited, AuthenticationFailed)):
        return None
    detail = error.detail
    code = error.code or (detail.code if detail else None) or f"HTTP {error.status}"
    said = detail.summary() if detail else str(error)
    if code == "OperationPeriodOver":
        return Refusal(code, window_over_advice(), said, status=error.status)
    if code == "IncorrectState":
        state = _state_in(detail)
        return Refusal(code, _incorrect_state_advice(state), said, status=error.status)
    if code == "ActiveReferencingDocuments":
        uuids = [d.target for d in (detail.details if detail else ()) if d.target]
        known = numbers_of(uuids)
        notes = {uuid: known.get(uuid) for uuid in uuids}
        named = ", ".join(f"{number} (uuid {uuid})" if number else f"uuid {uuid}" for uuid, number in notes.items())
        advice = (
            f"it is referenced by {named or 'a note MyInvois did not name'}: cancel "
            f"{'that note' if len(notes) == 1 else 'those notes'} first, then cancel this invoice again"
        )
        return Refusal(code, advice, said, notes=notes, status=error.status)
    if error.status == 403:
        return Refusal(
            "Forbidden",
            f"MyInvois refused it (403): the credentials of profile {profile!r} are not those of the document's issuer; "
            "cancel it with the issuer's profile, or on the MyInvois portal",
            said,
            status=403,
        )
    if isinstance(error, NotFound):
        return Refusal(
            "NotFound",
            f"MyInvois does not know this document for profile {profile!r}: it is not the issuer's profile, "
            "or the document is not this taxpayer's",
            said,
            status=error.status,
        )
    return Refusal(
        str(code),
        f"MyInvois refused the cancel ({said}); correct what it names and ask again",
        said,
        status=error.status,
    )


_STATE_PATTERNS = (re.compile(r"status is ([\w ]+)", re.I), re.compile(r"document is ([\w ]+?) and cannot", re.I))


def _state_in(detail: Any) -> str | None:
    texts = [detail.message or ""] + [d.message or "" for d in detail.details] if detail else []
    for text in texts:
        for pattern in _STATE_PATTERNS:
            match = pattern.search(text)
            if match:
                return match.group(1).strip()
    return None


def _incorrect_state_advice(state: str | None) -> str:
    said = (state or "not valid").lower()
    if said == "cancelled":
        return "MyInvois says it is already cancelled: nothing to do; the ERP hears it with the next check"
    if said == "invalid":
        return "MyInvois says it is invalid: an invalid document needs no cancellation"
    if "rejection" in said:
        return f"MyInvois says it is {said}: it can no longer be changed this way; check it on the portal"
    return f"MyInvois says it is {said}: only a valid document can be cancelled"


# --- recording a request ----------------------------------------------------------------------


def cancellable_until(settings: Settings, target: CancelTarget) -> datetime | None:
    """End of the cancellation window as the ledger knows it (None: not known, MyInvois decides)."""
    if target.watch_until is None:
        return None
    return target.watch_until - timedelta(seconds=settings.cycles.watch_margin_seconds)


def checked_reason(reason: str) -> str | None:
    """The reason as sent, or None when MyInvois would refuse it."""
    reason = (reason or "").strip()
    return reason if 0 < len(reason) <= MAX_REASON else None


def request_cancel(ledger: Ledger, settings: Settings, target: CancelTarget, reason: str) -> CancelResult:
    """Record a cancel of ``target`` (refusing locally what MyInvois would certainly refuse)."""
    if target.state in (D.CANCELLING.value, D.CANCELLED.value):
        already = "already being cancelled" if target.state == D.CANCELLING.value else "already cancelled"
        return CancelResult(Verdict.SKIPPED, target, detail=already)
    text = checked_reason(reason)
    if text is None:
        refusal = Refusal(
            "BadReason",
            f"the reason must be 1 to {MAX_REASON} characters (it is shown to the buyer); it has {len(reason.strip())}",
        )
        ledger.cancels.refused_locally(target.id, refusal.as_json())
        return CancelResult(Verdict.REFUSED, target, refusal)
    if target.state not in CANCELLABLE or target.uuid is None:
        refusal = Refusal("NotValid", _not_validated_advice(target.state))
        ledger.cancels.refused_locally(target.id, refusal.as_json())
        return CancelResult(Verdict.REFUSED, target, refusal)
    until = cancellable_until(settings, target)
    if until is not None and utcnow() > until:
        refusal = Refusal(
            "OperationPeriodOver", window_over_advice(), f"the window ended at {iso(until)} (checked locally, not sent)"
        )
        ledger.cancels.refused_locally(target.id, refusal.as_json())
        return CancelResult(Verdict.REFUSED, target, refusal)
    if not ledger.cancels.request(target.id, text):
        fresh = ledger.cancels.get(target.id)
        return CancelResult(
            Verdict.SKIPPED, fresh, detail=f"it changed meanwhile: it is {fresh.state if fresh else 'gone'}"
        )
    log.info("invoice %s: cancel recorded (reason: %s)", target.describe(), text, extra={"invoice": target.number})
    return CancelResult(Verdict.RECORDED, ledger.cancels.get(target.id))


def _not_validated_advice(state: str) -> str:
    words = state.replace("_", " ")
    if state in (D.PENDING.value, D.HELD.value, D.SUBMITTING.value, D.SUBMITTED.value):
        return f"it is not validated yet ({words}): only a valid document can be cancelled; ask again once it is valid"
    if state == D.CHANGED_AFTER_VALID.value:
        return "this version was edited after validation and never sent; the validated version is the one to cancel"
    return f"it is {words}: only a document MyInvois validated can be cancelled"


# --- sending ------------------------------------------------------------------------------------


def cancel_waiting(ctx: PipelineContext, profile: str, *, only: int | None = None) -> list[CancelResult]:
    """Send the recorded cancels of ``profile`` (only document ``only`` when given) and record
    each answer. One whose earlier answer was lost is first read through Get Submission."""
    results = []
    stale = abandoned_before(ctx.settings)
    for target in ctx.ledger.cancels.waiting(profile, limit=BATCH):
        if ctx.stop.is_set():
            break
        if only is not None and target.id != only:
            continue
        if target.cancel_attempts == 0:
            results.append(_attempt(ctx, target))
        elif target.cancel_requested_at is not None and target.cancel_requested_at < stale:
            # Sent by a connector that stopped before recording the answer (or whose own check
            # failed): an attempt that recent may still be in flight elsewhere.
            results.append(_check_then_retry(ctx, target))
    return results


def _attempt(ctx: PipelineContext, target: CancelTarget) -> CancelResult:
    """Send the cancel; after a lost answer, read the status and send again only if it is still
    Valid, at most :data:`ATTEMPTS_PER_CYCLE` times in all."""
    ledger = ctx.ledger
    for _ in range(ATTEMPTS_PER_CYCLE):
        if not ledger.cancels.claim_attempt(target):
            return CancelResult(Verdict.SKIPPED, target, detail="another connector is sending this cancel")
        result = _send(ctx, target)
        if result.verdict is not Verdict.IN_DOUBT:
            return result
        if target.submission_id is not None:
            ledger.cancels.check_due_now(target.submission_id)
        # Our own call is over: its status, read now, cannot be overtaken by it.
        status = _status_at_myinvois(ctx, target)
        if status is DocumentStatus.CANCELLED:
            ledger.cancels.confirmed(target.id, target.cancel_reason)
            return CancelResult(Verdict.CANCELLED, ledger.cancels.get(target.id) or target)
        if status is not DocumentStatus.VALID or ctx.stop.is_set():
            return result
        target = ledger.cancels.get(target.id) or target
        if target.state != D.CANCELLING.value:
            return CancelResult(Verdict.SKIPPED, target, detail=f"it is {target.state} now")
        log.info(
            "invoice %s: still valid at MyInvois after the lost answer; sending the cancel again", target.describe()
        )
    return result


def _send(ctx: PipelineContext, target: CancelTarget) -> CancelResult:
    """One call (its attempt already counted), its answer recorded."""
    ledger = ctx.ledger
    reason = target.cancel_reason or ""
    try:
        answer = ctx.clients[target.profile].cancel_document(target.uuid, reason)
    except (RateBackendUnavailable, RateLimited, AuthenticationFailed) as exc:
        ledger.cancels.not_sent(target.id)
        log.warning("invoice %s: cancel not sent (%s); tried again next cycle", target.describe(), exc)
        return CancelResult(Verdict.NOT_SENT, target, detail=type(exc).__name__)
    except RetriableError as exc:
        log.warning(
            "invoice %s: no answer to the cancel (%s); reading its status before anything else", target.describe(), exc
        )
        return CancelResult(Verdict.IN_DOUBT, target, detail=type(exc).__name__)
    except ApiError as exc:
        refusal = refusal_of(exc, target.profile, ledger.cancels.numbers_of)
        assert refusal is not None
        return _refused(ctx, target, refusal)
    if answer.status is DocumentStatus.CANCELLED:
        ledger.cancels.confirmed(target.id, reason)
        log.info(
            "invoice %s: cancelled at MyInvois",
            target.describe(),
            extra={"invoice": target.number, "uuid": target.uuid},
        )
        return CancelResult(Verdict.CANCELLED, ledger.cancels.get(target.id) or target)
    # A success that does not say Cancelled: read the truth rather than guess.
    return CancelResult(Verdict.IN_DOUBT, target, detail=f"the answer said {answer.status.value}")


def _refused(ctx: PipelineContext, target: CancelTarget, refusal: Refusal) -> CancelResult:
    ctx.ledger.cancels.refused(target.id, refusal.as_json())
    log.warning(
        "invoice %s: MyInvois refused the cancel (%s): %s", target.describe(), refusal.code, refusal.advice,
        extra={"invoice": target.number, "uuid": target.uuid},
    )  # fmt: skip
    ctx.ledger.journal.add_incident(
        "cancel_refused",
        f"invoice {target.describe()} not cancelled ({refusal.code}): {refusal.advice}",
        subject=target.source,
    )
    return CancelResult(Verdict.REFUSED, ctx.ledger.cancels.get(target.id) or target, refusal)


def _check_then_retry(ctx: PipelineContext, target: CancelTarget) -> CancelResult:
    status = _status_at_myinvois(ctx, target)
    if status is DocumentStatus.CANCELLED:
        ctx.ledger.cancels.confirmed(target.id, target.cancel_reason)
        return CancelResult(Verdict.CANCELLED, ctx.ledger.cancels.get(target.id) or target)
    if status is DocumentStatus.VALID:
        # Checked after the lost attempt and still valid: one more attempt is safe.
        return _attempt(ctx, target)
    if status is None:
        return CancelResult(Verdict.IN_DOUBT, target, detail="its status could not be read")
    return _refused(ctx, target, Refusal("IncorrectState", _incorrect_state_advice(status.value)))


def _status_at_myinvois(ctx: PipelineContext, target: CancelTarget) -> DocumentStatus | None:
    """The document's status in Get Submission (the same read the watch makes); None if unreadable."""
    if not target.submission_uid:
        return None
    try:
        submission = ctx.clients[target.profile].get_submission_all(target.submission_uid)
    except ApiError as exc:
        log.warning("invoice %s: could not read its submission to check the cancel (%s)", target.describe(), exc)
        return None
    for document in submission.documents:
        if document.uuid == target.uuid:
            return document.status
    return None


# --- the ERP's requests -------------------------------------------------------------------------


def take_requests(ctx: PipelineContext, source: Source) -> list[CancelResult]:
    """Record the cancel requests ``source``'s plugin offers; each gets an answer (see the hook)."""
    results: list[CancelResult] = []
    try:
        for request in ctx.host.fetch_cancel_requests(source):
            results.append(_take(ctx, source, request.source_key, request.reason, request.location))
    except HookFailed as failure:
        ctx.report_hook_failure(failure)
    return results


def _take(ctx: PipelineContext, source: Source, key: str, reason: str, location: str) -> CancelResult:
    target = ctx.ledger.cancels.target(source.name, key)
    where = f" ({location})" if location else ""
    if target is None:
        message = (
            f"source {source.name}: cancel request for invoice {key!r}{where} names an invoice the connector never "
            "recorded; correct the key (the invoice number or key the source gives it), or cancel it on the MyInvois portal"
        )
        log.error("%s", message)
        ctx.ledger.journal.add_incident("cancel_refused", message, subject=source.name)
        return CancelResult(Verdict.UNKNOWN_INVOICE, None, detail=message)
    result = request_cancel(ctx.ledger, ctx.settings, target, reason)
    if result.verdict is Verdict.SKIPPED and target.state == D.CANCELLED.value:
        # The ERP asks again for what is done (it marked the request taken and waits for the
        # outcome): it hears "cancelled" once more; an outcome already there is not duplicated.
        ctx.ledger.cancels.offer_again(target.id)
    if result.verdict is Verdict.REFUSED and result.refusal is not None:
        log.warning(
            "source %s: cancel of %s%s refused: %s", source.name, target.describe(), where, result.refusal.advice
        )
    return result


def cancel_cycle(ctx: PipelineContext, sources: list[Source], profiles: list[str]) -> list[CancelResult]:
    """One cycle's cancellation: the ERP's requests of ``sources`` recorded, then every waiting
    cancel of ``profiles`` sent."""
    results: list[CancelResult] = []
    for source in sources:
        if ctx.stop.is_set():
            break
        results.extend(take_requests(ctx, source))
    for profile in profiles:
        if ctx.stop.is_set():
            break
        results.extend(cancel_waiting(ctx, profile))
    return results
