"""*When* cycles run: the daemon, driven by APScheduler 3.x.

Two jobs: ``fetch_submit`` every ``cycles.fetch_interval_seconds`` and ``poll`` every
``cycles.poll_interval_seconds``. Each has an explicit id, ``max_instances=1`` (a slow cycle is
never overlapped by the next), ``coalesce=True`` (missed runs collapse into one) and a grace time.
APScheduler swallows job exceptions, so a listener reports them; the scheduler keeps going.

SIGTERM or SIGINT sets the connector's stop event: the cycle in flight finishes its current
HTTP call and records the answer, starts nothing new, and the process exits 0.
"""

from __future__ import annotations

import logging
import signal
import threading
from collections.abc import Callable

from apscheduler.events import EVENT_JOB_ERROR, EVENT_JOB_EXECUTED, JobExecutionEvent
from apscheduler.schedulers.background import BackgroundScheduler

from connector_core.runtime import Connector

log = logging.getLogger("connector_core.scheduler")

FETCH_JOB = "fetch_submit"  # the same names as the cycles in metrics and /healthz
POLL_JOB = "poll"


def build_scheduler(
    connector: Connector, on_job_error: Callable[[str, BaseException], None] | None = None
) -> BackgroundScheduler:
    cycles = connector.settings.cycles
    scheduler = BackgroundScheduler(timezone="UTC", job_defaults={"max_instances": 1, "coalesce": True})
    from datetime import UTC, datetime

    now = datetime.now(UTC)
    scheduler.add_job(
        connector.fetch_and_submit_cycle,
        "interval",
        seconds=cycles.fetch_interval_seconds,
        id=FETCH_JOB,
        next_run_time=now,
        misfire_grace_time=max(1, int(cycles.fetch_interval_seconds)),
    )
    scheduler.add_job(
        connector.poll_cycle,
        "interval",
        seconds=cycles.poll_interval_seconds,
        id=POLL_JOB,
        next_run_time=now,
        misfire_grace_time=max(1, int(cycles.poll_interval_seconds * 5)),
    )

    def listener(event: JobExecutionEvent) -> None:
        if event.exception is not None:
            log.error("cycle %s failed: %s: %s", event.job_id, type(event.exception).__name__, event.exception)
            connector.ledger.journal.add_incident(
                "cycle_error", f"{type(event.exception).__name__}: {event.exception}", subject=event.job_id
            )
            if on_job_error is not None:
                on_job_error(event.job_id, event.exception)

    scheduler.add_listener(listener, EVENT_JOB_ERROR | EVENT_JOB_EXECUTED)
    return scheduler


def run_daemon(connector: Connector, *, on_job_error: Callable[[str, BaseException], None] | None = None) -> None:
    """Run cycles until SIGTERM or SIGINT, then stop gracefully."""
    stopping = threading.Event()

    def request_stop(signum, _frame) -> None:
        log.info("received %s: finishing the call in flight, then stopping", signal.Signals(signum).name)
        connector.stop_event.set()
        stopping.set()

    previous = {sig: signal.signal(sig, request_stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    scheduler = build_scheduler(connector, on_job_error)
    scheduler.start()
    log.info(
        "daemon running: fetch and submit every %ss, poll every %ss; stop with SIGTERM or Ctrl-C",
        connector.settings.cycles.fetch_interval_seconds,
        connector.settings.cycles.poll_interval_seconds,
    )
    try:
        stopping.wait()
    finally:
        # wait=True: a running cycle finishes its HTTP call and records the answer first.
        scheduler.shutdown(wait=True)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        log.info("stopped")
