"""Fetch stage: ask each source's plugin for pending invoices, pre-validate them, record them.

Sources are fetched side by side (:func:`fetch_sources`): one ERP that is slow to answer, or
down, must not hold back another's invoices, nor its profile's submissions. Nothing is sent
from here. An invoice that MyInvois would certainly refuse is recorded as
*locally invalid* with every problem named, and is written back to the ERP without an API
call; so is a record the plugin could not read. The other invoices go on.
"""

from __future__ import annotations

import hashlib
import logging
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor, wait
from dataclasses import dataclass, field

from connector_core.contract import Source
from connector_core.document import describe_problems, prevalidate
from connector_core.ledger import FetchedItem
from connector_core.model import Invoice, RejectedRecord
from connector_core.pipeline.context import PipelineContext
from connector_core.plugins import HookFailed

log = logging.getLogger("connector_core.pipeline.fetch")

#: Invoices recorded per ledger transaction: a crash loses at most one page of work, which the
#: next fetch returns again (and the ledger de-duplicates).
PAGE_SIZE = 500


class FetchFeed:
    """What the submit stage, running beside a fetch, needs to know of it.

    Submitting starts on the first recorded page instead of after the whole backlog: a 100,000-
    invoice backlog takes seconds to read, and every second before the first submission is a
    second of the rate window spent idle.
    """

    def __init__(self) -> None:
        self._changed = threading.Condition()
        self._open = True
        self._pages = 0

    @property
    def open(self) -> bool:
        """True while the fetch may still record invoices."""
        with self._changed:
            return self._open

    @property
    def pages(self) -> int:
        with self._changed:
            return self._pages

    def page_recorded(self) -> None:
        with self._changed:
            self._pages += 1
            self._changed.notify_all()

    def close(self) -> None:
        with self._changed:
            self._open = False
            self._changed.notify_all()

    def wait_for_more(self, seen_pages: int, timeout: float) -> None:
        """Return once a page after the ``seen_pages``-th is recorded, the fetch ends, or ``timeout`` passes."""
        with self._changed:
            self._changed.wait_for(lambda: not self._open or self._pages != seen_pages, timeout)


@dataclass
class FetchReport:
    source: str
    fetched: int = 0
    recorded: int = 0
    unchanged: int = 0
    #: Unchanged, already final and written back, fetched again: its outcome goes back again.
    reported_again: int = 0
    locally_invalid: int = 0
    changed_after_submit: list[str] = field(default_factory=list)
    failed: bool = False


def fetch_sources(
    ctx: PipelineContext, sources: Sequence[Source], feeds: Mapping[str, FetchFeed], *, workers: int
) -> list[FetchReport]:
    """Fetch ``sources`` concurrently, at most ``workers`` at a time; the reports in the order of
    ``sources`` (a source not started because the connector is stopping has none).

    Each profile's feed (``feeds[profile]``) closes as soon as the last of that profile's
    sources is done, so its submitter sends its last part-filled submission then, not when
    the slowest source of another profile finishes. Threads, not processes: the time goes in
    waiting for the ERP and the ledger, and the ledger serialises its writers itself (one
    recorder per profile at a time; SQLite one writer at a time).

    A source whose plugin fails is reported by :func:`fetch_source` and the others go on. Any
    other error (the ledger failing) is raised once every source is done, so it still fails
    the cycle but cuts no other source's fetch short."""
    left = Counter(source.profile for source in sources)
    left_lock = threading.Lock()

    def fetch_one(source: Source) -> FetchReport | None:
        try:
            if ctx.stop.is_set():
                return None
            return fetch_source(ctx, source, feeds[source.profile])
        finally:
            with left_lock:
                left[source.profile] -= 1
                last = left[source.profile] == 0
            if last:
                feeds[source.profile].close()

    with ThreadPoolExecutor(max_workers=max(1, min(workers, len(sources))), thread_name_prefix="fetch") as pool:
        futures = [pool.submit(fetch_one, source) for source in sources]
        wait(futures)
    reports: list[FetchReport] = []
    errors: list[BaseException] = []
    for source, future in zip(sources, futures, strict=True):
        error = future.exception()
        if error is not None:
            log.error("source %s: the fetch failed: %s: %s", source.name, type(error).__name__, error)
            errors.append(error)
            continue
        report = future.result()
        if report is not None:
            reports.append(report)
    if errors:
        raise errors[0]
    return reports


def fetch_source(ctx: PipelineContext, source: Source, feed: FetchFeed | None = None) -> FetchReport:
    """Fetch, pre-validate and record one source's pending invoices, page by page; ``feed``
    hears of each recorded page."""
    report = FetchReport(source=source.name)
    profile = ctx.profiles[source.profile]
    limit = ctx.settings.cycles.fetch_limit
    page: list[FetchedItem] = []
    try:
        for item in ctx.host.fetch_pending_invoices(source, limit):
            page.append(to_fetched_item(item, profile_tin=profile.tin, profile_name=source.profile))
            report.fetched += 1
            if len(page) >= PAGE_SIZE:
                _record_page(ctx, source, page, report, feed)
                page = []
            if report.fetched >= limit or ctx.stop.is_set():
                break
    except HookFailed as failure:
        report.failed = True
        ctx.report_hook_failure(failure)
    # What was read before a failure is still recorded: it is good data.
    if page:
        _record_page(ctx, source, page, report, feed)
    if report.fetched:
        log.info(
            "source %s: fetched %d, recorded %d, unchanged %d, locally invalid %d",
            source.name,
            report.fetched,
            report.recorded,
            report.unchanged,
            report.locally_invalid,
        )
    return report


def _record_page(
    ctx: PipelineContext, source: Source, page: list[FetchedItem], report: FetchReport, feed: FetchFeed | None
) -> None:
    summary = ctx.ledger.intake.record_fetched(source=source.name, profile=source.profile, items=page)
    if feed is not None:
        feed.page_recorded()
    report.recorded += summary.recorded
    report.unchanged += summary.unchanged
    report.reported_again += summary.reported_again
    report.locally_invalid += summary.locally_invalid
    for key in summary.changed_after_submit:
        log.warning(
            "invoice %s of source %s changed in the ERP while MyInvois has its previous version; the change waits for "
            "that version's outcome: sent if it ends invalid, reported as changed after validation if it ends valid",
            key,
            source.name,
        )
        report.changed_after_submit.append(key)
    for key in summary.changed_after_valid:
        log.warning(
            "invoice %s of source %s changed in the ERP after MyInvois validated it; the validated document stands: "
            "cancel it within 72 hours of validation, or issue a credit or debit note",
            key,
            source.name,
        )
    if summary.changed_after_valid:
        ctx.ledger.journal.add_incident(
            "changed_after_valid", "; ".join(summary.changed_after_valid[:20]), subject=source.name
        )
    if summary.number_taken:
        ctx.ledger.journal.add_incident(
            "duplicate_number",
            "invoice number already used by another row: " + "; ".join(summary.number_taken[:20]),
            subject=source.name,
        )
    ctx.emit("fetched", source=source.name, recorded=summary.recorded, locally_invalid=summary.locally_invalid)
    try:
        ctx.host.on_invoices_recorded(source, [item.source_key for item in page])
    except HookFailed as failure:
        ctx.report_hook_failure(failure)


def to_fetched_item(item: Invoice | RejectedRecord, *, profile_tin: str, profile_name: str) -> FetchedItem:
    """Pre-validate an invoice (or take a plugin's rejection) into what the ledger records."""
    if isinstance(item, RejectedRecord):
        problems = [f"{item.location}: {error}" for error in item.errors]
        fingerprint = hashlib.sha256("\n".join(problems).encode()).hexdigest()
        return FetchedItem(
            source_key=item.source_key,
            number=item.number or item.source_key,
            fingerprint=fingerprint,
            invoice_json=None,
            problems=problems,
        )
    # One serialisation serves both the ledger copy and the fingerprint.
    invoice_json = item.model_dump_json(exclude_computed_fields=True)
    problems = describe_problems(prevalidate(item))
    if item.issuer.tin != profile_tin:
        role = "buyer" if item.document_type.is_self_billed else "supplier"
        problems.append(
            f"{role}.tin: the issuer TIN {item.issuer.tin} is not the TIN of profile {profile_name!r} ({profile_tin}); "
            f"MyInvois refuses documents of another taxpayer: correct the {role} TIN in the ERP, "
            "or bind this source to the profile of that taxpayer"
        )
    return FetchedItem(
        source_key=item.source_key,
        number=item.number,
        fingerprint=hashlib.sha256(invoice_json.encode()).hexdigest(),
        invoice_json=invoice_json,
        document_type=item.document_type.value,
        issuer_tin=item.issuer.tin,
        problems=[f"invoice {item.number}: {p}" for p in problems],
    )
