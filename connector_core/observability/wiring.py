"""Connecting the running connector to its monitoring: metrics, health, Sentry.

The pipeline and the API client only announce events (``PipelineContext.emit`` and API-call
listeners); this module is the one place that turns them into Prometheus series, health
verdicts and Sentry events, so monitoring never leaks into the invoice path.
"""

from __future__ import annotations

import logging
import time
from datetime import UTC, datetime, timedelta
from typing import Any

from connector_core import __version__
from connector_core.api import ApiCall
from connector_core.observability import sentry
from connector_core.observability.health import HealthMonitor
from connector_core.observability.metrics import ConnectorMetrics
from connector_core.observability.server import metrics_server_from_settings

log = logging.getLogger("connector_core.monitoring")

#: The documents gauge may take at most this share of the process's time. It is refreshed after
#: every poll cycle (every second or so), and its count reads every document final in the last
#: minutes (see Status._final_counts): refreshed each time, it cost 0.06 ms of CPU per document
#: at 100,000 invoices. After a count that took t seconds, the next waits 1/share × t: a small
#: ledger's gauge still follows every cycle, a large one's every few seconds (Prometheus
#: scrapes every 15 s or more).
DOCUMENT_COUNTS_SHARE = 0.01

#: Cycle names as the scheduler runs them and /healthz reports them.
FETCH_CYCLE = "fetch_submit"
POLL_CYCLE = "poll"


class Monitoring:
    """Metrics, health and Sentry for one connector process."""

    def __init__(self, settings, *, serve: bool = True) -> None:
        self.settings = settings
        obs = settings.observability
        self.health = HealthMonitor(
            healthy_cycle_multiplier=obs.healthy_cycle_multiplier,
            max_consecutive_login_failures=obs.max_consecutive_login_failures,
            max_consecutive_source_failures=obs.health_source_failures,
        )
        self.health.register_cycle(FETCH_CYCLE, settings.cycles.fetch_interval_seconds)
        self.health.register_cycle(POLL_CYCLE, settings.cycles.poll_interval_seconds)
        self.metrics = ConnectorMetrics(health=self.health)
        self.sentry_enabled = sentry.init_sentry(
            obs.sentry_dsn, environment=obs.sentry_environment, release=f"myinvois-connector@{__version__}"
        )
        self._documents_count_due = 0.0  # monotonic time of the next documents count
        self.server = None
        if serve:
            try:
                self.server = metrics_server_from_settings(obs, self.metrics, self.health)
                if self.server is not None:
                    self.server.start()
                    log.info("metrics on %s/metrics, health on %s/healthz", self.server.url, self.server.url)
            except OSError as exc:
                # Another connector (or anything) holds the port: monitoring is not worth failing for.
                log.warning(
                    "metrics server not started on %s:%s (%s); set observability.metrics_port to a free port, or 0 to turn it off",
                    obs.metrics_host,
                    obs.metrics_port,
                    exc.strerror or exc,
                )
                self.server = None
        self._stuck_reported: set[str] = set()

    # --- what the connector reports -------------------------------------------------------

    def api_listener(self, profile: str):
        """A listener for one profile's API client."""

        def listen(call: ApiCall) -> None:
            endpoint = call.endpoint.value
            self.metrics.api_call(endpoint, call.status, call.duration_s)
            if call.status == 429:
                self.metrics.rate_limited(endpoint)
            if endpoint == "login" and call.status is not None:
                ok = call.status == 200
                self.metrics.login(ok, profile=profile, error=None if ok else f"HTTP {call.status}")
                if ok:
                    self.metrics.set_token_issued_at(profile, time.time())
            sentry.add_api_breadcrumb(endpoint, call.method, call.status, call.duration_s)

        return listen

    def observe(self, event: str, fields: dict[str, Any]) -> None:
        """Receives ``PipelineContext.emit`` events."""
        if event == "submission_sending":
            self.metrics.submission_sent(fields["documents"])
            sentry.add_step_breadcrumb(
                "submit", f"sending a submission of {fields['documents']} document(s) for profile {fields.get('profile')}",
                profile=fields.get("profile"), documents=fields["documents"],
            )  # fmt: skip
        elif event == "document_final":
            self.metrics.document_final(fields["state"], fields.get("seconds_since_fetch") or 0.0)
        elif event == "cycle_finished":
            self.metrics.cycle_finished(fields["cycle"], fields["duration_s"], ok=fields.get("ok", True))
            sentry.add_cycle_breadcrumb(fields["cycle"], fields["duration_s"], fields.get("ok", True))
        elif event == "login_failed":
            sentry.capture_login_failure(fields["profile"], fields["error"])
        elif event == "submission_escalated":
            self.metrics.submission_escalated(fields["profile"])
            sentry.capture_escalation(fields["profile"], fields.get("submission", "?"))
        elif event == "writeback_refused":
            self.metrics.writeback_failed(fields["source"])
        elif event == "source_error":
            self.metrics.source_error(fields["source"])
        elif event == "source_cycle":
            self.metrics.source_cycle_finished(fields["source"], fields["ok"], error=fields.get("error"))
            sentry.add_step_breadcrumb(
                "fetch",
                f"source {fields['source']} {'read' if fields['ok'] else 'failed'}",
                ok=fields["ok"],
                source=fields["source"],
            )
        elif event == "claims_lost":
            self.metrics.claims_lost(fields["documents"])
        elif event == "myinvois_unreachable":
            self.health.myinvois_problem(
                fields["profile"],
                "unreachable",
                f"MyInvois unreachable for profile '{fields['profile']}' ({fields['endpoint']}: {fields['cause']})",
            )
        elif event == "myinvois_reachable":
            self.health.myinvois_problem(fields["profile"], "unreachable", None)
        elif event == "login_refused":
            self.health.myinvois_problem(
                fields["profile"],
                "login_refused",
                f"login of profile '{fields['profile']}' refused: {fields['reason']}",
            )
        elif event == "login_accepted":
            self.health.myinvois_problem(fields["profile"], "login_refused", None)
        elif event == "rate_backend_down":
            self.metrics.set_rate_backend_down(True)
        elif event == "rate_backend_back":
            self.metrics.set_rate_backend_down(False)
        elif event == "plugin_error":
            source = fields.get("source")
            configured = self.settings.sources.get(source) if source is not None else None
            sentry.capture_plugin_error(
                fields["plugin"],
                fields["hook"],
                source,
                fields["error"],
                profile=configured.profile if configured else None,
            )

    def cycle_failed(self, cycle: str, exc: BaseException) -> None:
        self.metrics.cycle_finished(cycle, 0.0, ok=False)
        if self.sentry_enabled:
            import sentry_sdk

            with sentry.sentry_scope(cycle=cycle, environment=self.settings.environment.value):
                sentry_sdk.capture_exception(exc)

    def refresh(self, ledger) -> None:
        """Gauges that come from the ledger, and submissions stuck in validation."""
        # Every version (one row each): the cheap count, run after every poll cycle; counting
        # by latest version costs a lookup per row on a ledger that only grows.
        started = time.monotonic()
        if started >= self._documents_count_due:
            self.metrics.set_document_counts(ledger.status.version_counts_by_state())
            took = time.monotonic() - started
            self._documents_count_due = started + took / DOCUMENT_COUNTS_SHARE
        self.metrics.set_open_submissions(ledger.status.submission_counts(open_only=True))
        oldest = ledger.status.oldest_pending_fetched_at()
        self.metrics.set_oldest_pending_age((datetime.now(UTC) - oldest).total_seconds() if oldest else None)
        limit = self.settings.observability.stuck_submission_seconds
        for profile, uids, age in ledger.status.stuck_submissions(datetime.now(UTC) - timedelta(seconds=limit)):
            new = [u for u in uids if u not in self._stuck_reported]
            if new:
                self._stuck_reported.update(new)
                log.error(
                    "%d submission(s) of profile %s still in validation after %.0f s: %s; check MyInvois status or contact LHDN",
                    len(new),
                    profile,
                    age,
                    ", ".join(new[:10]),
                )
                sentry.capture_stuck_submissions(profile, new, age)

    def close(self) -> None:
        if self.server is not None:
            self.server.stop()
        if self.sentry_enabled:
            sentry.close_sentry()
