"""Submit stage: build pending documents, pack them, and send each batch exactly once.

The order of every step is what makes a crash harmless:

1. the built bytes, hash and issue time are stored (``store_built``);
2. the batch's documents are claimed into a ``sending`` submission (``open_submission``);
3. the HTTP call is made;
4. its answer is recorded: accepted, rejected, refused, not sent, or in doubt.

A crash between 2 and 4 leaves a ``sending`` submission, which the next start treats as in
doubt and reconciles (see :mod:`connector_core.pipeline.reconcile`) instead of re-sending.
"""

from __future__ import annotations

import base64
import logging
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from enum import Enum

from connector_core.api import (
    ApiError,
    AuthenticationFailed,
    BatchRefused,
    DuplicateSubmission,
    Endpoint,
    RateLimited,
    RetriableError,
    SubmitOutcomeUnknown,
)
from connector_core.document import MAX_DOCUMENT_BYTES, build, check_size, describe_problems
from connector_core.ledger import PendingDocument
from connector_core.ledger.store import utcnow
from connector_core.model import Invoice
from connector_core.pipeline.context import PipelineContext
from connector_core.pipeline.fetch import FetchFeed
from connector_core.pipeline.messages import api_error_messages, error_details, rejection_messages
from connector_core.pipeline.packing import entry_size, is_full, pack

log = logging.getLogger("connector_core.pipeline.submit")

#: Wire size of the largest document MyInvois accepts (300 KB, Base64-encoded).
LARGEST_ENTRY = entry_size(4 * -(-MAX_DOCUMENT_BYTES // 3), "")
#: How long a submitter waiting for the fetch beside it sleeps at most before looking again.
FEED_WAIT_SECONDS = 1.0


class BatchOutcome(str, Enum):
    ACCEPTED = "accepted"
    REFUSED = "refused"
    IN_DOUBT = "in_doubt"
    NOT_SENT = "not_sent"
    AUTH_FAILED = "auth_failed"


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
        return {"format": "JSON", "documentHash": self.document_hash, "codeNumber": self.number, "document": self.base64}

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
    outcomes: list[BatchOutcome] = field(default_factory=list)


def first_poll_at(ctx: PipelineContext, documents: int, now: datetime | None = None) -> datetime:
    """LHDN: wait 'depending on the size of your submission' before the first Get Submission."""
    cycles = ctx.settings.cycles
    delay = cycles.first_poll_delay_seconds + documents * cycles.first_poll_delay_per_document_seconds
    return (now or utcnow()) + timedelta(seconds=delay)


def prepare(ctx: PipelineContext, pending: list[PendingDocument]) -> list[ReadyDocument]:
    """Build what needs building and persist it before anything is sent."""
    now = utcnow().replace(microsecond=0)
    stale_before = now - timedelta(hours=ctx.settings.cycles.rebuild_after_hours)
    to_store: list[tuple[int, str, str, datetime]] = []
    ready: list[ReadyDocument] = []
    for doc in pending:
        if doc.document and doc.document_hash and doc.issued_at and doc.issued_at > stale_before:
            ready.append(ReadyDocument.from_stored(doc.id, doc.number, doc.document_hash, doc.document))
            continue
        invoice = Invoice.model_validate_json(doc.invoice_json)
        built = build(invoice, now)
        problems = describe_problems(check_size(built))
        if problems:
            ctx.ledger.mark_locally_invalid(doc.id, [f"invoice {doc.number}: {p}" for p in problems])
            continue
        to_store.append((doc.id, built.content.decode("utf-8"), built.sha256_hex, now))
        ready.append(ReadyDocument(doc.id, doc.number, built.sha256_hex, built.base64))
    ctx.ledger.store_built(to_store)
    return ready


def submit_profile(ctx: PipelineContext, profile: str, feed: FetchFeed | None = None) -> SubmitReport:
    """Send every pending document of one profile, batch by batch, until none is left, the
    connector is stopping, or MyInvois cannot be reached.

    With a ``feed``, a fetch is recording invoices meanwhile: while it may add more, only full
    submissions are sent, because a part-filled one spends a whole slot of the 100-per-minute
    limit; what is left over goes with the next page, or once the fetch is over."""
    from connector_core.pipeline.reconcile import reconcile_profile

    report = SubmitReport(profile=profile)
    reconcile_profile(ctx, profile)
    settings = ctx.settings.submission
    client = ctx.clients[profile]
    round_size = settings.max_documents * settings.concurrency

    def full(batch: list[ReadyDocument]) -> bool:
        return is_full(
            batch,
            size_of=lambda d: d.wire_size,
            max_documents=settings.max_documents,
            max_bytes=settings.max_bytes,
            largest_item=LARGEST_ENTRY,
        )

    with ThreadPoolExecutor(max_workers=settings.concurrency, thread_name_prefix=f"submit-{profile}") as pool:
        while not ctx.stop.is_set():
            more_coming = feed is not None and feed.open
            seen_pages = feed.pages if feed is not None else 0
            pending = ctx.ledger.pending_documents(profile, limit=round_size)
            if more_coming and len(pending) < settings.max_documents:
                feed.wait_for_more(seen_pages, FEED_WAIT_SECONDS)
                continue
            if not pending:
                break
            ready = prepare(ctx, pending)
            report.locally_invalid += len(pending) - len(ready)
            if not ready:
                continue
            batches = pack(
                ready,
                size_of=lambda d: d.wire_size,
                key_of=lambda d: d.number,
                max_documents=settings.max_documents,
                max_bytes=settings.max_bytes,
            )
            if more_coming:
                batches = [batch for batch in batches if full(batch)]
                if not batches:
                    feed.wait_for_more(seen_pages, FEED_WAIT_SECONDS)
                    continue
            futures = [pool.submit(send_batch, ctx, profile, client, batch, report) for batch in batches]
            outcomes = [f.result() for f in futures]
            report.outcomes.extend(outcomes)
            # Documents that could not be sent stay pending for the next cycle; looping now
            # would only hammer an API that is down or refusing our credentials.
            if BatchOutcome.NOT_SENT in outcomes or BatchOutcome.AUTH_FAILED in outcomes:
                break
    return report


def send_batch(ctx: PipelineContext, profile: str, client, batch: list[ReadyDocument], report: SubmitReport) -> BatchOutcome:
    if ctx.stop.is_set():
        return BatchOutcome.NOT_SENT
    sub_id, claimed = ctx.ledger.open_submission(profile=profile, doc_ids=[d.id for d in batch])
    if not claimed:
        return BatchOutcome.NOT_SENT
    claimed_ids = set(claimed)
    batch = [d for d in batch if d.id in claimed_ids]
    report.submissions += 1
    report.documents_sent += len(batch)
    ctx.emit("submission_sending", profile=profile, documents=len(batch))
    return record_submit_answer(ctx, profile, sub_id, lambda: client.submit([d.entry() for d in batch]), report)


def record_submit_answer(ctx: PipelineContext, profile: str, sub_id: int, call, report: SubmitReport | None = None) -> BatchOutcome:
    """Make the submit call and record its answer. Shared by first sends and by the re-send
    of an in-doubt submission, so both follow the same rules."""
    ledger = ctx.ledger
    try:
        result = call()
    except DuplicateSubmission as exc:
        # MyInvois already has this exact payload: it arrived; reconciliation finds where.
        ledger.submission_in_doubt(sub_id, f"MyInvois already holds this payload (422 DuplicateSubmission): {exc}")
        ledger.increment("duplicate_submission_answers")
        _count(report, "in_doubt")
        return BatchOutcome.IN_DOUBT
    except SubmitOutcomeUnknown as exc:
        log.warning("submission %s of profile %s: outcome unknown (%s); it will be reconciled, not re-sent", sub_id, profile, exc)
        ledger.submission_in_doubt(sub_id, str(exc))
        ledger.increment("submissions_in_doubt")
        _count(report, "in_doubt")
        return BatchOutcome.IN_DOUBT
    except BatchRefused as exc:
        messages = api_error_messages(exc)
        log.error("submission %s of profile %s refused: %s", sub_id, profile, "; ".join(messages))
        ledger.submission_refused(sub_id, messages, error_details(exc.detail))
        ledger.add_incident("batch_refused", "; ".join(messages), subject=profile)
        _count(report, "rejected", ledger_docs=len(ledger.documents_of(sub_id)))
        return BatchOutcome.REFUSED
    except AuthenticationFailed as exc:
        ledger.submission_not_sent(sub_id, str(exc))
        if exc.endpoint is not Endpoint.login:
            # The login worked but the submit got 401 again with the fresh token: another
            # thread's call saw that token revoked in the meantime. 401 means not processed,
            # so the batch is simply not sent; it is not a refused login, which would stop
            # 'run --once' and tell the operator to fix credentials that are fine.
            log.warning("submission %s of profile %s: token rejected twice (%s); sent again next round", sub_id, profile, exc)
            ledger.increment("token_rejected")
            _count(report, "not_sent")
            return BatchOutcome.NOT_SENT
        ledger.add_incident("login_failed", str(exc), subject=profile)
        ledger.increment("login_failures")
        ctx.emit("login_failed", profile=profile, error=exc)
        _count(report, "not_sent")
        return BatchOutcome.AUTH_FAILED
    except (RateLimited, RetriableError) as exc:
        # A 429 or a failure to connect: MyInvois did not take the request.
        ledger.submission_not_sent(sub_id, str(exc))
        # Said once per batch, so an operator sees why documents wait without a 429 counter.
        log.warning("submission %s of profile %s not sent (%s); its documents wait for the next cycle", sub_id, profile, exc)
        _count(report, "not_sent")
        return BatchOutcome.NOT_SENT
    except ApiError as exc:
        # Any other answer we do not understand: assume it may have arrived.
        ledger.submission_in_doubt(sub_id, f"unexpected answer: {exc}")
        _count(report, "in_doubt")
        return BatchOutcome.IN_DOUBT
    except Exception as exc:
        # A bug or an unexpected transport error after the request may have left: in doubt.
        log.exception("submission %s: unexpected error while submitting", sub_id)
        ledger.submission_in_doubt(sub_id, f"unexpected {type(exc).__name__} while submitting")
        _count(report, "in_doubt")
        return BatchOutcome.IN_DOUBT

    accepted = [(doc.code_number, doc.uuid) for doc in result.accepted]
    rejected = [(doc.code_number, rejection_messages(doc.error), error_details(doc.error)) for doc in result.rejected]
    ledger.submission_accepted(
        sub_id,
        submission_uid=result.submission_uid,
        accepted=accepted,
        rejected=rejected,
        next_poll_at=first_poll_at(ctx, len(accepted)),
    )
    if report is not None:
        report.accepted += len(accepted)
        report.rejected += len(rejected)
    ctx.emit("submission_accepted", profile=profile, submission_uid=result.submission_uid, accepted=len(accepted), rejected=len(rejected))
    log.info(
        "submission %s accepted: %d documents, %d rejected on arrival", result.submission_uid, len(accepted), len(rejected)
    )
    return BatchOutcome.ACCEPTED


def _count(report: SubmitReport | None, name: str, ledger_docs: int | None = None) -> None:
    if report is None:
        return
    setattr(report, name, getattr(report, name) + (ledger_docs if ledger_docs is not None else 1))
