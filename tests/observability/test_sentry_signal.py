"""Sentry events with signal, through the real SDK and a capturing transport (sentry-python's
own test pattern): a plugin failure in a real connector run arrives titled by what failed and
tagged with plugin, source and profile; no event is titled ``[Filtered]``; breadcrumbs are API
calls, cycle steps and the connector's own lines, never SQL statements or library chatter."""

from __future__ import annotations

import json
import logging
import threading
from typing import Any

import pytest
import sentry_sdk
from pydantic import BaseModel, ConfigDict
from sentry_sdk.envelope import Envelope
from sentry_sdk.transport import Transport

from connector_core import hookimpl
from connector_core.observability import sentry
from connector_core.observability.logs import THIRD_PARTY_LOGGERS, configure_logging
from connector_core.observability.wiring import Monitoring
from connector_core.plugins import PluginHost
from connector_core.runtime import Connector
from connector_core.settings import Settings
from tests.document.factories import DEMO_TIN
from tests.exactly_once.erp import MemoryErp

RELEASE = "myinvois-connector@test"


class CapturingTransport(Transport):
    """Keeps every envelope the SDK would send, as it would send it (serialised and parsed back)."""

    def __init__(self, options: dict[str, Any] | None = None) -> None:
        super().__init__(options)
        self.lock = threading.Lock()
        self.payloads: list[dict[str, Any]] = []

    def capture_envelope(self, envelope: Envelope) -> None:
        for item in envelope.items:
            if item.type in ("event", "transaction"):
                with self.lock:
                    self.payloads.append(json.loads(item.payload.get_bytes()))

    def events(self) -> list[dict[str, Any]]:
        with self.lock:
            return [p for p in self.payloads if p.get("type") in (None, "event")]


@pytest.fixture
def transport():
    captured = CapturingTransport()
    yield captured
    sentry.close_sentry(timeout=2)


def _title(event: dict[str, Any]) -> str:
    """The title Sentry shows: the exception's type and value, else the message."""
    if event.get("exception"):
        last = event["exception"]["values"][-1]
        return f"{last['type']}: {last.get('value', '')}"
    return (event.get("logentry") or {}).get("formatted") or event.get("message") or ""


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BrokenErp:
    """A source whose ERP cannot be read: what an unreachable database looks like to the core."""

    __name__ = "broken-erp"

    @hookimpl
    def register_source_kinds(self, register):
        register("broken", _Options, description="an ERP that cannot be read")

    @hookimpl
    def fetch_pending_invoices(self, source, limit):
        raise ConnectionError("ERP database at erp.internal:5432 refused the connection")


def test_a_plugin_failure_in_a_real_run_is_one_titled_tagged_event_and_breadcrumbs_carry_no_sql(tmp_path, transport, caplog):
    erp = MemoryErp()
    erp.add("k1")
    settings = Settings(
        environment="simulator",
        state_dir=tmp_path / "state",
        simulator={"validation": {"delay_seconds": 0.0, "per_document_seconds": 0.0}},
        cycles={"first_poll_delay_seconds": 0.0, "first_poll_delay_per_document_seconds": 0.0,
                "poll_min_interval_seconds": 0.1, "poll_max_interval_seconds": 0.2},
        observability={"sentry_dsn": "https://publickey@sentry.invalid/1", "metrics_port": 0},
        profiles={"main": {"tin": DEMO_TIN, "client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret"}},
        sources={"shop": {"kind": "memory", "profile": "main"}, "backoffice": {"kind": "broken", "profile": "main"}},
    )  # fmt: skip
    monitoring = Monitoring(settings, serve=False)
    assert monitoring.sentry_enabled
    # The same client options, with the envelopes kept here instead of posted.
    assert sentry.init_sentry("https://publickey@sentry.invalid/1", environment="test", release=RELEASE, transport=transport)
    host = PluginHost(load_entry_points=False, extra_plugins=(erp, BrokenErp()))
    with Connector(settings, host=host, monitoring=monitoring, observers=(monitoring.observe,)) as connector:
        summary = connector.run_once()
        # On this thread too (the run's calls were made on its worker threads, whose breadcrumbs
        # stay there): a ledger query, an API call with httpx logging at INFO, then an event.
        caplog.set_level(logging.INFO)  # the root level; restored after the test
        caplog.set_level(logging.INFO, logger="httpx")
        (submission,) = connector.ledger.status.find_submissions(profile="main")
        connector.clients["main"].get_submission_all(submission["submission_uid"])
        logging.getLogger("connector_core.pipeline").info("a per-invoice line of the connector's own")
        logging.getLogger("connector_core.pipeline").warning("a warning of the connector's own")
        sentry_sdk.capture_message("end of the run")
    assert summary.counts == {"valid": 1}
    sentry.flush_sentry(timeout=5)

    events = transport.events()
    titles = [_title(e) for e in events]
    assert all("[Filtered]" not in t and t.strip() for t in titles), titles
    (failure,) = [e for e in events if (e.get("tags") or {}).get("failure") == "plugin"]
    assert _title(failure) == "ConnectionError: ERP database at erp.internal:5432 refused the connection"
    assert {k: failure["tags"][k] for k in ("plugin", "source", "profile", "hook")} == {
        "plugin": "broken-erp", "source": "backoffice", "profile": "main", "hook": "fetch_pending_invoices",
    }  # fmt: skip
    # The ERROR line the pipeline logged for it is not a second, untitled event.
    assert len([e for e in events if "refused the connection" in json.dumps(e)]) == 1

    crumbs = [c for e in events for c in (e.get("breadcrumbs") or {}).get("values", [])]
    categories = {c.get("category") for c in crumbs}
    assert {"myinvois.api", "connector.cycle", "connector_core.pipeline"} <= categories, categories
    assert categories <= {"myinvois.api", "connector.cycle"} | {c for c in categories if str(c).startswith("connector_core.")}
    assert not [c for c in crumbs if c.get("type") == "query" or "SELECT " in str(c) or "INSERT " in str(c)]
    assert {c.get("level") for c in crumbs if c.get("category") == "connector_core.pipeline"} == {"warning"}
    steps = {c["message"] for c in crumbs if c.get("category") == "connector.cycle"}
    assert {"source shop read", "source backoffice failed"} <= steps, steps  # (submissions go on worker threads)


def test_third_party_loggers_are_quiet_below_warning_unless_asked_for(restore_root_logger):
    import io

    out = io.StringIO()
    configure_logging("DEBUG", "text", stream=out)
    for name in ("filelock", "httpx", "httpcore.connection", "sqlalchemy.engine.Engine", "alembic.runtime.migration"):
        logging.getLogger(name).info("chatter from %s", name)
        logging.getLogger(name).warning("warning from %s", name)
    logging.getLogger("connector_core.pipeline").debug("our own debug line")
    text = out.getvalue()
    assert "chatter from" not in text and text.count("warning from") == 5
    assert "our own debug line" in text

    out = io.StringIO()
    configure_logging("INFO", "text", stream=out, debug_loggers=["httpx", "sqlalchemy.engine"])
    logging.getLogger("httpx").debug("httpx debug")
    logging.getLogger("sqlalchemy.engine.Engine").debug("SELECT 1")
    logging.getLogger("filelock").debug("lock chatter")
    text = out.getvalue()
    assert "httpx debug" in text and "SELECT 1" in text and "lock chatter" not in text
    configure_logging("INFO", "text", stream=io.StringIO())  # back to quiet for later tests
    assert all(logging.getLogger(n).level == logging.WARNING for n in THIRD_PARTY_LOGGERS)
    # Asked for no more, a child logger raised before is quiet again with its parent.
    assert not logging.getLogger("sqlalchemy.engine").isEnabledFor(logging.INFO)
