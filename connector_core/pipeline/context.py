"""Everything a pipeline stage needs, gathered once by the runtime."""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from connector_core.contract import Source
from connector_core.ledger import Ledger
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

    def emit(self, event: str, **fields: Any) -> None:
        for observer in self.observers:
            try:
                observer(event, fields)
            except Exception:  # noqa: BLE001 - monitoring must never break the pipeline
                log.exception("observer failed on %s", event)

    def report_hook_failure(self, failure: HookFailed) -> None:
        """A plugin hook raised: log it, keep it for `status`, tell the observers, go on."""
        log.error("%s", failure, exc_info=failure.error)
        self.ledger.journal.add_incident("plugin_error", str(failure), subject=failure.source)
        self.ledger.journal.increment("plugin_errors")
        self.emit("plugin_error", plugin=failure.plugin, hook=failure.hook, source=failure.source, error=failure.error)
