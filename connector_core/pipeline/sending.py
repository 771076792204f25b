"""One submit call and the recording of its answer, shared by first sends (:mod:`.submit`) and
by the re-send of an in-doubt submission (:mod:`.reconcile`), so both follow the same rules.

How each answer is recorded, by what MyInvois may have done with the request:

=====================================  ==============================  ===========================
answer                                 first send                      re-send after reconciling
=====================================  ==============================  ===========================
202                                    accepted                        accepted
400 / 403 on the envelope              refused (documents rejected)    refused
422 duplicate, timeout, 5xx, unknown   in doubt: reconciled            in doubt again
429, 401, rate backend                 not sent: documents pending     in doubt again: the first
                                                                       send may still be there
connect error, login failed or         withdrawn: documents pending,   in doubt again
refused (nothing left this host)       no submission row kept
=====================================  ==============================  ===========================

Every answer also tells :class:`~connector_core.pipeline.availability.Availability` whether
MyInvois could be reached (a connect error, a timeout or a 5xx could not; any other answer
could) and whether the profile's login is refused, so that an outage is logged once and backed
off from, not logged and retried on every cycle beat.
"""

from __future__ import annotations

import base64
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from connector_core.api import (
    ApiError,
    AuthenticationFailed,
    BatchRefused,
    DuplicateSubmission,
    Endpoint,
    RateBackendUnavailable,
    RateLimited,
    RetriableError,
    SubmitOutcomeUnknown,
)
from connector_core.ledger import Moved, utcnow
from connector_core.pipeline.context import PipelineContext
from connector_core.pipeline.messages import api_error_messages, error_details, rejection_messages
from connector_core.pipeline.packing import entry_size

log = logging.getLogger("connector_core.pipeline.sending")


class BatchOutcome(str, Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    IN_DOUBT = "in_doubt"
    NOT_SENT = "not_sent"
    AUTH_FAILED = "auth_failed"
    #: The rate-limit backend (Redis, PostgreSQL, SQLite file) failed: nothing was sent, and
    #: sending pauses until it is back.
    BACKEND_DOWN = "backend_down"
    #: Another writer claimed or changed every document first: nothing was opened or sent.
    LOST_CLAIM = "lost_claim"
    #: MyInvois could not be reached; the request never left this host. The documents are
    #: pending again and no submission row is kept; sending backs off (``Availability``).
    UNREACHABLE = "unreachable"
    #: Our answer could not be recorded: another connector holds the submission now.
    LOST_RACE = "lost_race"


@dataclass(frozen=True)
class ReadyDocument:
    """A built document as it goes on the wire."""

    id: int
    number: str
    document_hash: str
    base64: str

    @classmethod
    def from_stored(cls, doc_id: int, number: str, document_hash: str, document: str) -> ReadyDocument:
        """From the ledger's copy: the exact bytes built and hashed before, Base64-encoded."""
        return cls(doc_id, number, document_hash, base64.b64encode(document.encode("utf-8")).decode("ascii"))

    def entry(self) -> dict[str, str]:
        return {
            "format": "JSON",
            "documentHash": self.document_hash,
            "codeNumber": self.number,
            "document": self.base64,
        }

    @property
    def wire_size(self) -> int:
        return entry_size(len(self.base64), self.number)


@dataclass
class SubmitReport:
    profile: str
    submissions: int = 0
    documents_sent: int = 0
    accepted: int = 0
    rejected: int = 0
    in_doubt: int = 0
    not_sent: int = 0
    locally_invalid: int = 0
    lost_claims: int = 0
    outcomes: list[BatchOutcome] = field(default_factory=list)


def first_poll_at(ctx: PipelineContext, documents: int, now: datetime | None = None) -> datetime:
    """LHDN: wait 'depending on the size of your submission' before the first Get Submission."""
    cycles = ctx.settings.cycles
    delay = cycles.first_poll_delay_seconds + documents * cycles.first_poll_delay_per_document_seconds
    return (now or utcnow()) + timedelta(seconds=delay)


def record_submit_answer(
    ctx: PipelineContext,
    profile: str,
    sub_id: int,
    call: Callable,
    report: SubmitReport | None = None,
    *,
    resend: bool = False,
) -> BatchOutcome:
    """Make the submit call and record its answer. ``resend``: this is the re-send of an
    in-doubt submission, whose first send may be at MyInvois whatever this call's fate."""
    sends = ctx.ledger.sends
    journal = ctx.ledger.journal
    availability = ctx.availability

    def in_doubt(reason: str) -> BatchOutcome:
        return _checked(ctx, sends.submission_in_doubt(sub_id, reason), BatchOutcome.IN_DOUBT, report, "in_doubt")

    def not_sent(reason: str, outcome: BatchOutcome) -> BatchOutcome:
        if resend:
            # The re-send did not arrive, but the first send may have (search lags): the
            # documents stay claimed and in doubt, never back to pending.
            log.warning("re-send of submission %s not taken (%s); it stays in doubt", sub_id, reason)
            in_doubt(f"re-send not taken: {reason}")
            return outcome
        return _checked(ctx, sends.submission_not_sent(sub_id, reason), outcome, report, "not_sent")

    def withdrawn(reason: str, outcome: BatchOutcome) -> BatchOutcome:
        if resend:
            return not_sent(reason, outcome)
        moved = sends.submission_withdrawn(sub_id)
        return _lost_race(ctx, sub_id, outcome.value) if moved.lost else outcome

    try:
        result = call()
    except DuplicateSubmission as exc:
        availability.reached(profile)
        # MyInvois already has this exact payload: it arrived; reconciliation finds where.
        journal.increment("duplicate_submission_answers")
        return in_doubt(f"MyInvois already holds this payload (422 DuplicateSubmission): {exc}")
    except SubmitOutcomeUnknown as exc:
        if exc.status is not None and exc.status >= 500:
            # It may have arrived, so it stays in doubt; and MyInvois is failing: after a
            # second one in a row, sending backs off. A lost answer (no status) says nothing
            # about an outage: it is reconciled like any other in-doubt submission.
            availability.server_failed(profile, Endpoint.submit.value, str(exc))
        elif exc.status is not None:
            availability.reached(profile)
        log.warning(
            "submission %s of profile %s: outcome unknown (%s); it will be reconciled, not re-sent",
            sub_id,
            profile,
            exc,
        )
        journal.increment("submissions_in_doubt")
        return in_doubt(str(exc))
    except BatchRefused as exc:
        availability.reached(profile)
        messages = api_error_messages(exc)
        log.error("submission %s of profile %s refused: %s", sub_id, profile, "; ".join(messages))
        documents = len(ctx.ledger.polls.documents_of(sub_id))
        outcome = _checked(
            ctx, sends.submission_refused(sub_id, messages, error_details(exc.detail)), BatchOutcome.REFUSED, None, ""
        )
        if outcome is BatchOutcome.REFUSED:
            journal.add_incident("batch_refused", "; ".join(messages), subject=profile)
            if report is not None:
                report.rejected += documents
        return outcome
    except AuthenticationFailed as exc:
        if exc.endpoint is not Endpoint.login:
            # The login worked but the submit got 401 again with the fresh token: another
            # thread's call saw that token revoked in the meantime. 401 means not processed,
            # so the batch is simply not sent; it is not a refused login, which would stop
            # 'run --once' and tell the operator to fix credentials that are fine.
            availability.reached(profile)
            log.warning(
                "submission %s of profile %s: token rejected twice (%s); sent again next round", sub_id, profile, exc
            )
            journal.increment("token_rejected")
            return not_sent(str(exc), BatchOutcome.NOT_SENT)
        # The login was refused (or not attempted: placeholder credentials, or still inside
        # the back-off of a refused one): the submit never left this host. One ERROR and one
        # incident per refusal, not per batch (Availability).
        if exc.status is not None:
            availability.reached(profile)
        journal.increment("login_failures")
        if availability.login_refused(profile, str(exc)):
            ctx.emit("login_failed", profile=profile, error=exc)  # Sentry: once per refusal
        return withdrawn(str(exc), BatchOutcome.AUTH_FAILED)
    except (RateLimited, RetriableError) as exc:
        if isinstance(exc, RateBackendUnavailable):
            # Before anything was sent: certainly not at MyInvois.
            log.error("submission %s of profile %s not sent: %s", sub_id, profile, exc)
            return not_sent(str(exc), BatchOutcome.BACKEND_DOWN)
        if isinstance(exc, RetriableError):
            # A failure to connect, or a login that got no usable answer: the request never
            # left this host. Availability says it once per outage and backs off; no row.
            availability.unreachable(profile, exc.endpoint.value if exc.endpoint else Endpoint.submit.value, str(exc))
            log.debug("submission %s of profile %s withdrawn: %s", sub_id, profile, exc)
            return withdrawn(str(exc), BatchOutcome.UNREACHABLE)
        # A 429: MyInvois did not take the request.
        # Said once per batch, so an operator sees why documents wait without a 429 counter.
        availability.reached(profile)
        log.warning(
            "submission %s of profile %s not sent (%s); its documents wait for the next cycle", sub_id, profile, exc
        )
        return not_sent(str(exc), BatchOutcome.NOT_SENT)
    except ApiError as exc:
        # Any other answer we do not understand: assume it may have arrived.
        availability.reached(profile)
        return in_doubt(f"unexpected answer: {exc}")
    except Exception as exc:
        # A bug or an unexpected transport error after the request may have left: in doubt.
        log.exception("submission %s: unexpected error while submitting", sub_id)
        return in_doubt(f"unexpected {type(exc).__name__} while submitting")

    availability.reached(profile)
    availability.login_accepted(profile)
    accepted = [(doc.code_number, doc.uuid) for doc in result.accepted]
    rejected = [(doc.code_number, rejection_messages(doc.error), error_details(doc.error)) for doc in result.rejected]
    moved = sends.submission_accepted(
        sub_id,
        submission_uid=result.submission_uid,
        accepted=accepted,
        rejected=rejected,
        next_poll_at=first_poll_at(ctx, len(accepted)),
    )
    if moved.lost:
        return _lost_race(ctx, sub_id, "202 accepted")
    if report is not None:
        report.accepted += len(accepted)
        report.rejected += len(rejected)
    ctx.emit(
        "submission_accepted",
        profile=profile,
        submission_uid=result.submission_uid,
        accepted=len(accepted),
        rejected=len(rejected),
    )
    log.info(
        "submission %s accepted: %d documents, %d rejected on arrival",
        result.submission_uid,
        len(accepted),
        len(rejected),
    )
    return BatchOutcome.ACCEPTED


def _checked(
    ctx: PipelineContext, moved: Moved, outcome: BatchOutcome, report: SubmitReport | None, counter: str
) -> BatchOutcome:
    if moved.lost:
        return _lost_race(ctx, None, outcome.value)
    if report is not None and counter:
        setattr(report, counter, getattr(report, counter) + 1)
    return outcome


def _lost_race(ctx: PipelineContext, sub_id: int | None, answer: str) -> BatchOutcome:
    """The submission is no longer ours to record (another connector took it as abandoned while
    our call lasted): its reconciliation finds the truth at MyInvois; we record nothing."""
    log.warning(
        "submission %s: answer %r not recorded: another connector holds it now and reconciles it", sub_id, answer
    )
    ctx.ledger.journal.increment("lost_races")
    return BatchOutcome.LOST_RACE
