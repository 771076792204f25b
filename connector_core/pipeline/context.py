"""Everything a pipeline stage needs, gathered once by the runtime."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector_core.contract import Source
from connector_core.ledger import Ledger
from connector_core.pipeline.availability import Availability
from connector_core.pipeline.windows import LifecycleWindows
from connector_core.plugins import HookFailed, PluginHost
from connector_core.settings import ProfileSettings, Settings

log = logging.getLogger("connector_core.pipeline")


@dataclass
class PipelineContext:
    settings: Settings
    ledger: Ledger
    host: PluginHost
    sources: dict[str, Source]
    profiles: dict[str, ProfileSettings]
    clients: dict[str, Any]  # profile name -> MyInvoisClient
    portal_base_url: str
    #: Set on SIGTERM/SIGINT: stages finish the call in flight, record it, and start nothing new.
    stop: threading.Event = field(default_factory=threading.Event)
    #: Called with (event_name, fields) for metrics and Sentry; never with secrets.
    observers: list[Callable[[str, dict[str, Any]], None]] = field(default_factory=list)
    #: Set while the rate-limit backend is failing: one incident when it starts, a line when it ends.
    rate_backend_down: bool = False
    incident_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Whether each profile can reach MyInvois and log in: the back-off of an outage, told once.
    availability: Availability = field(init=False)
    #: Sources whose fetch or write-back failed since the runtime last took them (source ->
    #: the latest failure): per fetch cycle for /healthz, and over a whole ``run --once``.
    failed_in_cycle: dict[str, str] = field(default_factory=dict)
    failed_in_run: dict[str, str] = field(default_factory=dict)
    source_failure_lock: threading.Lock = field(default_factory=threading.Lock)
    #: Profile -> monotonic time before which reconciliation is not tried again: MyInvois could
    #: not be asked (login back-off, throttle) and every in-doubt submission would fail alike.
    reconcile_paused_until: dict[str, float] = field(default_factory=dict)
    #: How long after validation each document type may be cancelled: read from MyInvois
    #: once per process (and daily), for the watch after Valid.
    windows: LifecycleWindows = field(default_factory=LifecycleWindows)

    def __post_init__(self) -> None:
        self.availability = Availability(
            self.settings.retry,
            incident=lambda kind, message, subject: self.ledger.journal.add_incident(kind, message, subject=subject),
            emit=self.emit,
        )

    def emit(self, event: str, **fields: Any) -> None:
        for observer in self.observers:
            try:
                observer(event, fields)
            except Exception:
                log.exception("observer failed on %s", event)

    def report_hook_failure(self, failure: HookFailed) -> None:
        """A plugin hook raised: log it, keep it for `status`, tell the observers, go on."""
        # One readable line (source, plugin, hook, cause); the traceback only at DEBUG, as a
        # wrong key or a missing database is not a bug. Sentry gets the exception either way.
        log.error("%s", failure)
        log.debug("traceback of the failure in source %s", failure.source, exc_info=failure.error)
        self.ledger.journal.add_incident("plugin_error", str(failure), subject=failure.source)
        self.ledger.journal.increment("plugin_errors")
        self.emit("plugin_error", plugin=failure.plugin, hook=failure.hook, source=failure.source, error=failure.error)
        self.note_source_failure(failure)

    def note_source_failure(self, failure: HookFailed) -> None:
        """A source's plugin raised: the source could not be read or written back. Counted
        (``source_error``), and kept for the cycle's health verdict and the run's exit code."""
        if failure.source is None:
            return
        with self.source_failure_lock:
            self.failed_in_cycle[failure.source] = str(failure)
            self.failed_in_run[failure.source] = str(failure)
        self.emit("source_error", source=failure.source, plugin=failure.plugin, hook=failure.hook)

    def take_cycle_failures(self) -> dict[str, str]:
        """The sources that failed since the last call, and forget them."""
        with self.source_failure_lock:
            failed, self.failed_in_cycle = self.failed_in_cycle, {}
        return failed
