"""Submit stage: build pending documents, pack them, and send each batch exactly once.

The order of every step is what makes a crash harmless:

1. documents are built from the content read (or their stored bytes reused);
2. the batch's documents are claimed into a ``sending`` submission together with those exact
   bytes (``Sends.claim``): only documents still ``pending`` with that content are taken, so an
   ERP edit or another connector in between loses nothing and duplicates nothing;
3. the HTTP call is made with the bytes of what was claimed;
4. its answer is recorded: accepted, rejected, refused, not sent, or in doubt
   (:mod:`connector_core.pipeline.sending`).

A crash between 2 and 4 leaves a ``sending`` submission, which the next start treats as in
doubt and reconciles (see :mod:`connector_core.pipeline.reconcile`) instead of re-sending.
"""

from __future__ import annotations

import logging
import re
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta

from connector_core.document import MAX_DOCUMENT_BYTES, build, check_size, describe_problems
from connector_core.ledger import BuiltDocument, PendingDocument, utcnow
from connector_core.model import Invoice
from connector_core.pipeline.context import PipelineContext
from connector_core.pipeline.fetch import FetchFeed
from connector_core.pipeline.packing import entry_size, is_full, pack
from connector_core.pipeline.reconcile import reconcile_profile
from connector_core.pipeline.sending import BatchOutcome, ReadyDocument, SubmitReport, record_submit_answer

log = logging.getLogger("connector_core.pipeline.submit")

#: Wire size of the largest document MyInvois accepts (300 KB, Base64-encoded).
LARGEST_ENTRY = entry_size(4 * -(-MAX_DOCUMENT_BYTES // 3), "")
#: Answers after which the claimed submission was withdrawn: the request never left this host,
#: so it is not counted as sent (summary, metrics) any more than it is kept in the ledger.
WITHDRAWN = frozenset({BatchOutcome.UNREACHABLE, BatchOutcome.AUTH_FAILED})
#: How long a submitter waiting for the fetch beside it sleeps at most before looking again.
FEED_WAIT_SECONDS = 1.0


def prepare(ctx: PipelineContext, pending: list[PendingDocument]) -> list[tuple[ReadyDocument, BuiltDocument]]:
    """Build what needs building. Nothing is stored here: the claim stores the bytes, and only
    for the documents it wins, so the ledger always keeps the bytes that went on the wire."""
    now = utcnow().replace(microsecond=0)
    stale_before = now - timedelta(hours=ctx.settings.cycles.rebuild_after_hours)
    ready: list[tuple[ReadyDocument, BuiltDocument]] = []
    for doc in pending:
        if doc.document and doc.document_hash and doc.issued_at and doc.issued_at > stale_before:
            stored = BuiltDocument(
                doc.id, doc.number, doc.fingerprint, None, doc.document_hash, doc.issued_at, fresh=False
            )
            ready.append((ReadyDocument.from_stored(doc.id, doc.number, doc.document_hash, doc.document), stored))
            continue
        invoice = Invoice.model_validate_json(doc.invoice_json)
        built = build(invoice, now)
        problems = describe_problems(check_size(built))
        if problems:
            moved = ctx.ledger.sends.refuse_too_large(
                doc.id, doc.fingerprint, [f"invoice {doc.number}: {p}" for p in problems]
            )
            if moved.lost:
                log.info("invoice %s changed or was claimed while it was built; it is looked at again", doc.number)
            continue
        fresh = BuiltDocument(
            doc.id, doc.number, doc.fingerprint, built.content.decode("utf-8"), built.sha256_hex, now, fresh=True
        )
        ready.append((ReadyDocument(doc.id, doc.number, built.sha256_hex, built.base64), fresh))
    return ready


def submit_profile(ctx: PipelineContext, profile: str, feed: FetchFeed | None = None) -> SubmitReport:
    """Send every pending document of one profile, batch by batch, until none is left, the
    connector is stopping, or MyInvois cannot be reached.

    With a ``feed``, a fetch is recording invoices meanwhile: while it may add more, only full
    submissions are sent, because a part-filled one spends a whole slot of the 100-per-minute
    limit; what is left over goes with the next page, or once the fetch is over."""
    report = SubmitReport(profile=profile)
    if not ctx.availability.may_try(profile):
        # MyInvois is down and the outage's back-off has not passed: every call would fail
        # the same way. Nothing is claimed, nothing logged; the invoices wait.
        return report
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
        while not ctx.stop.is_set() and ctx.availability.may_try(profile):
            # While the fetch is still recording, only full submissions go (a part-filled one
            # would waste a slot of the per-minute limit).
            open_feed = feed if feed is not None and feed.open else None
            seen_pages = feed.pages if feed is not None else 0
            pending = ctx.ledger.sends.pending_documents(profile, limit=round_size)
            if open_feed is not None and len(pending) < settings.max_documents:
                open_feed.wait_for_more(seen_pages, FEED_WAIT_SECONDS)
                continue
            if not pending:
                break
            prepared = prepare(ctx, pending)
            report.locally_invalid += len(pending) - len(prepared)
            if not prepared:
                continue
            built = {ready.id: stored for ready, stored in prepared}
            batches = pack(
                [ready for ready, _ in prepared],
                size_of=lambda d: d.wire_size,
                key_of=lambda d: d.number,
                max_documents=settings.max_documents,
                max_bytes=settings.max_bytes,
            )
            if open_feed is not None:
                batches = [batch for batch in batches if full(batch)]
                if not batches:
                    open_feed.wait_for_more(seen_pages, FEED_WAIT_SECONDS)
                    continue
            futures = [pool.submit(send_batch, ctx, profile, client, batch, built, report) for batch in batches]
            outcomes = [f.result() for f in futures]
            report.outcomes.extend(outcomes)
            if BatchOutcome.BACKEND_DOWN in outcomes:
                _rate_backend_down(ctx, profile)
                break
            if any(o is not BatchOutcome.LOST_CLAIM for o in outcomes):
                _rate_backend_back(ctx)
            # Documents that could not be sent stay pending for the next cycle; looping now
            # would only hammer an API that is down or refusing our credentials. A lost claim
            # is no reason to stop: another writer took those documents, the rest go on.
            if {BatchOutcome.NOT_SENT, BatchOutcome.AUTH_FAILED, BatchOutcome.UNREACHABLE} & set(outcomes):
                break
    return report


def send_batch(
    ctx: PipelineContext,
    profile: str,
    client,
    batch: list[ReadyDocument],
    built: dict[int, BuiltDocument],
    report: SubmitReport,
) -> BatchOutcome:
    if ctx.stop.is_set():
        return BatchOutcome.NOT_SENT
    claim = ctx.ledger.sends.claim(profile=profile, built=[built[d.id] for d in batch])
    if claim.submission_id is None:
        # Another connector (or an ERP edit) took every one of them first: nothing opened, nothing sent.
        _claims_lost(ctx, report, len(batch))
        return BatchOutcome.LOST_CLAIM
    if claim.lost:
        _claims_lost(ctx, report, len(claim.lost))
    claimed_ids = set(claim.claimed)
    batch = [d for d in batch if d.id in claimed_ids]
    outcome = record_submit_answer(
        ctx, profile, claim.submission_id, lambda: client.submit([d.entry() for d in batch]), report
    )
    if outcome not in WITHDRAWN:
        report.submissions += 1
        report.documents_sent += len(batch)
        ctx.emit("submission_sending", profile=profile, documents=len(batch))
    return outcome


def _claims_lost(ctx: PipelineContext, report: SubmitReport, documents: int) -> None:
    report.lost_claims += documents
    ctx.ledger.journal.increment("lost_claims", documents)
    ctx.emit("claims_lost", documents=documents)


def _rate_backend_down(ctx: PipelineContext, profile: str) -> None:
    """Sending pauses until the rate-limit backend is back; one incident, not one per batch."""
    with ctx.incident_lock:
        if ctx.rate_backend_down:
            return
        ctx.rate_backend_down = True
    backend = ctx.settings.rate_limit_backend()
    message = (
        f"the rate-limit backend failed; sending is paused (nothing was sent) and resumes by itself when it is back: "
        f"check the service behind rate_limits.backend ({_without_password(backend)})"
    )
    ctx.ledger.journal.add_incident("rate_backend_down", message, subject=profile)
    ctx.ledger.journal.increment("rate_backend_failures")
    ctx.emit("rate_backend_down", profile=profile)


def _rate_backend_back(ctx: PipelineContext) -> None:
    with ctx.incident_lock:
        if not ctx.rate_backend_down:
            return
        ctx.rate_backend_down = False
    log.warning("the rate-limit backend is back; sending goes on")
    ctx.emit("rate_backend_back")


def _without_password(url: str) -> str:
    # user:password@host -> user:***@host; the backend URL may carry a Redis or PostgreSQL password.
    return re.sub(r"//([^:@/]*):[^@/]*@", r"//\1:***@", url)
