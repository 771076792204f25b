"""Prometheus metrics of one connector process, named for the events that change them.

:class:`ConnectorMetrics` owns its own ``CollectorRegistry`` instead of the process-global one,
so two instances (tests, or a process serving two configurations) never collide on metric names.
Label values are bounded sets chosen by the core: endpoint *names* (``submit``,
``get_submission``), never URLs with ids in them, or each document would create a new series.
"""

from __future__ import annotations

import time
from collections.abc import Mapping

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, Info, generate_latest

from connector_core import __version__
from connector_core.contract import DocumentState
from connector_core.observability.health import HealthMonitor

__all__ = ["ConnectorMetrics", "HealthMonitor"]

# MyInvois answers most calls in well under a second; login and large submissions can take
# tens of seconds, and the client gives up at its timeout.
API_LATENCY_BUCKETS = (0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 120.0)
CYCLE_DURATION_BUCKETS = (0.1, 0.5, 1.0, 5.0, 15.0, 30.0, 60.0, 120.0, 300.0, 900.0, 1800.0, 3600.0)
# From fetch to a final state: seconds when all goes well, hours or days when a document waits
# for a fix or MyInvois is slow.
FETCH_TO_FINAL_BUCKETS = (10.0, 30.0, 60.0, 120.0, 300.0, 600.0, 1800.0, 3600.0, 7200.0, 21600.0, 86400.0, 259200.0)


class ConnectorMetrics:
    """All metrics of the connector, in a registry of their own (:attr:`registry`).

    If a :class:`HealthMonitor` is given, :meth:`login` and :meth:`cycle_finished` feed it too,
    so the core reports each event once.
    """

    def __init__(self, health: HealthMonitor | None = None, *, namespace: str = "myinvois") -> None:
        self.health = health
        self.registry = CollectorRegistry()
        r, ns = self.registry, namespace

        self._info = Info("connector", "Version of the running connector.", namespace=ns, registry=r)
        self._info.info({"version": __version__})

        self._documents = Gauge("documents", "Documents in the ledger by state.", ["state"], namespace=ns, registry=r)
        self._submissions = Counter("submissions", "Submissions sent to MyInvois.", namespace=ns, registry=r)
        self._submitted_documents = Counter(
            "submitted_documents", "Documents sent to MyInvois, over all submissions.", namespace=ns, registry=r
        )
        self._api_calls = Counter(
            "api_calls",
            "MyInvois API calls by endpoint and HTTP status ('error' when no answer came).",
            ["endpoint", "status"],
            namespace=ns,
            registry=r,
        )
        self._api_latency = Histogram(
            "api_call_duration_seconds",
            "Duration of MyInvois API calls.",
            ["endpoint"],
            buckets=API_LATENCY_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self._rate_limited = Counter(
            "rate_limited", "429 Too Many Requests answers by endpoint.", ["endpoint"], namespace=ns, registry=r
        )
        self._logins = Counter(
            "logins",
            "Logins to MyInvois by profile and outcome (success|failure).",
            ["profile", "outcome"],
            namespace=ns,
            registry=r,
        )
        self._token_age = Gauge(
            "token_age_seconds", "Age of the access token in use, by profile.", ["profile"], namespace=ns, registry=r
        )
        self._cycle_duration = Histogram(
            "cycle_duration_seconds",
            "Duration of scheduler cycles by name and outcome (ok|failed).",
            ["cycle", "outcome"],
            buckets=CYCLE_DURATION_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self._cycle_last_success = Gauge(
            "cycle_last_success_timestamp_seconds",
            "Unix time a cycle last finished successfully.",
            ["cycle"],
            namespace=ns,
            registry=r,
        )
        self._oldest_pending_age = Gauge(
            "oldest_pending_document_age_seconds",
            "Age of the oldest document not yet in a final state (0 when there is none).",
            namespace=ns,
            registry=r,
        )
        self._fetch_to_final = Histogram(
            "document_fetch_to_final_seconds",
            "Time from fetching an invoice to its final state, by final state.",
            ["state"],
            buckets=FETCH_TO_FINAL_BUCKETS,
            namespace=ns,
            registry=r,
        )
        self._open_submissions = Gauge(
            "open_submissions",
            "Submissions not yet done, by state (in_doubt, reconciling, escalated ...).",
            ["state"],
            namespace=ns,
            registry=r,
        )
        self._escalated = Counter(
            "submissions_escalated",
            "In-doubt submissions handed to an operator (no more Search calls).",
            ["profile"],
            namespace=ns,
            registry=r,
        )
        self._writeback_failures = Counter(
            "writeback_failures",
            "Outcomes the ERP refused to take (each retried on its own with back-off).",
            ["source"],
            namespace=ns,
            registry=r,
        )
        self._source_errors = Counter(
            "source_errors",
            "Failed calls of a source's plugin (fetch, recorded or write-back hook raised), by source.",
            ["source"],
            namespace=ns,
            registry=r,
        )
        self._lost_claims = Counter(
            "lost_claims",
            "Documents another writer claimed or changed first (a race lost safely, nothing sent).",
            namespace=ns,
            registry=r,
        )
        self._rate_backend_down = Gauge(
            "rate_backend_down",
            "1 while the rate-limit backend fails and sending is paused.",
            namespace=ns,
            registry=r,
        )
        # Every state exists from the start at 0, so dashboards and alerts see the series
        # before the first document ever reaches it.
        for state in DocumentState:
            self._documents.labels(state=state.value).set(0)

    # --- ledger ---------------------------------------------------------------------------

    def set_document_counts(self, counts: Mapping[DocumentState | str, int]) -> None:
        """Set the number of documents per state from the ledger; states not listed are 0."""
        values = {state.value: 0 for state in DocumentState}
        for state, count in counts.items():
            # DocumentState() rejects a misspelt state instead of creating a stray series.
            values[DocumentState(state).value] = count
        for state, count in values.items():
            self._documents.labels(state=state).set(count)

    def set_open_submissions(self, counts: Mapping[str, int]) -> None:
        """Submissions by state, for the states that are not the end of a submission's life."""
        from connector_core.ledger.states import SubmissionState

        for state in SubmissionState:
            if not state.is_final:
                self._open_submissions.labels(state=state.value).set(counts.get(state.value, 0))

    def submission_escalated(self, profile: str) -> None:
        self._escalated.labels(profile=profile).inc()

    def writeback_failed(self, source: str) -> None:
        self._writeback_failures.labels(source=source).inc()

    def source_error(self, source: str) -> None:
        """A hook of ``source``'s plugin raised: it could not be read or written back."""
        self._source_errors.labels(source=source).inc()

    def source_cycle_finished(self, source: str, ok: bool, *, error: str | None = None) -> None:
        """A fetch cycle ended in which ``source`` worked or failed; feeds /healthz."""
        if self.health is not None:
            self.health.source_cycle(source, ok, error=error)

    def claims_lost(self, documents: int) -> None:
        self._lost_claims.inc(documents)

    def set_rate_backend_down(self, down: bool) -> None:
        self._rate_backend_down.set(1 if down else 0)

    def set_oldest_pending_age(self, seconds: float | None) -> None:
        """Age of the oldest document not yet final; ``None`` or 0 when there is none."""
        self._oldest_pending_age.set(seconds or 0)

    def document_final(self, state: DocumentState | str, seconds_since_fetch: float) -> None:
        """A document reached a final state this long after it was fetched."""
        final = DocumentState(state)
        if not final.is_final:
            raise ValueError(f"document_final() needs a final state, not {final.value!r}")
        self._fetch_to_final.labels(state=final.value).observe(max(0.0, seconds_since_fetch))

    # --- API ------------------------------------------------------------------------------

    def submission_sent(self, documents: int) -> None:
        """One submission with ``documents`` documents was sent."""
        self._submissions.inc()
        self._submitted_documents.inc(documents)

    def api_call(self, endpoint: str, status: int | None, duration_s: float) -> None:
        """One API call ended with HTTP ``status`` (``None``: no answer) after ``duration_s``.
        A 429 is counted here as a call, and once more by :meth:`rate_limited`."""
        self._api_calls.labels(endpoint=endpoint, status="error" if status is None else str(status)).inc()
        self._api_latency.labels(endpoint=endpoint).observe(max(0.0, duration_s))

    def rate_limited(self, endpoint: str) -> None:
        """MyInvois answered 429 Too Many Requests on ``endpoint``."""
        self._rate_limited.labels(endpoint=endpoint).inc()

    def login(self, ok: bool, *, profile: str = "default", error: str | None = None) -> None:
        """A login attempt succeeded or failed (``error``: what went wrong, for /healthz)."""
        self._logins.labels(profile=profile, outcome="success" if ok else "failure").inc()
        if self.health is not None:
            self.health.login(ok, profile=profile, error=error)

    def set_token_issued_at(self, profile: str, ts: float) -> None:
        """The token of ``profile`` in use was issued at Unix time ``ts``; its age is computed at
        each scrape, so it keeps growing if renewal stops."""
        self._token_age.labels(profile=profile).set_function(lambda: max(0.0, time.time() - ts))

    # --- scheduler ------------------------------------------------------------------------

    def cycle_finished(self, name: str, duration_s: float, ok: bool) -> None:
        """A run of cycle ``name`` ended after ``duration_s``, successfully or not."""
        self._cycle_duration.labels(cycle=name, outcome="ok" if ok else "failed").observe(max(0.0, duration_s))
        if ok:
            self._cycle_last_success.labels(cycle=name).set_to_current_time()
        if self.health is not None:
            self.health.cycle_finished(name, ok)

    # --- exposition -----------------------------------------------------------------------

    def render(self) -> bytes:
        """The registry in Prometheus text format."""
        return generate_latest(self.registry)
