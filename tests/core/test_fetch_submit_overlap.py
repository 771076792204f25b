"""Submitting starts on the first recorded page, while the fetch of a large backlog goes on.

A slow ERP (here a plugin that pauses in the middle of its backlog) must not keep the rate
window idle, and the overlap must not cost submissions: while the fetch may still add
invoices, only full submissions go out, since each one spends a slot of the 100-per-minute limit.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel, ConfigDict

from connector_core import hookimpl
from connector_core.plugins import PluginHost
from connector_core.runtime import Connector
from connector_core.settings import Settings
from tests.document.factories import DEMO_TIN, make_counterparty, make_invoice

BACKLOG = 1_250
PAUSE_AFTER = 1_000  # two ledger pages recorded, then the ERP "stalls"
# Every other invoice of the first page lacks the buyer's phone, so the first page leaves 250
# to send: two full submissions and 50 that must wait for more rather than go part-filled.
INVALID = {f"erp-{n}" for n in range(1, 500, 2)}


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class StallingErp:
    """Yields a backlog and, part-way, waits until MyInvois has accepted a submission."""

    __name__ = "stalling-erp"

    def __init__(self, first_acceptance: threading.Event) -> None:
        self.first_acceptance = first_acceptance
        self.accepted_before_fetch_ended = False
        self.outcomes: dict[str, str] = {}

    @hookimpl
    def register_source_kinds(self, register):
        register("stalling", _Options, description="test ERP that stalls mid-backlog")

    @hookimpl
    def fetch_pending_invoices(self, source, limit):
        return self._invoices()

    def _invoices(self):
        for n in range(BACKLOG):
            if n == PAUSE_AFTER:
                self.accepted_before_fetch_ended = self.first_acceptance.wait(60)
            key = f"erp-{n}"
            buyer = make_counterparty(phone="", msic_code=None, business_activity=None) if key in INVALID else None
            yield make_invoice(source_key=key, number=f"OVL-{n:05d}", **({"buyer": buyer} if buyer else {}))

    @hookimpl
    def on_submission_result(self, source, outcomes):
        for outcome in outcomes:
            self.outcomes[outcome.source_key] = outcome.state.value


def test_submissions_start_while_the_fetch_goes_on_and_are_all_full(tmp_path):
    first_acceptance = threading.Event()
    erp = StallingErp(first_acceptance)

    def observe(event: str, fields: dict) -> None:
        if event == "submission_accepted":
            first_acceptance.set()

    settings = Settings(
        environment="simulator",
        state_dir=tmp_path,
        simulator={"validation": {"delay_seconds": 0.2, "per_document_seconds": 0.0}},
        cycles={"first_poll_delay_seconds": 0.5, "poll_min_interval_seconds": 0.5, "poll_max_interval_seconds": 1.0},
        profiles={"demo": {"tin": DEMO_TIN, "client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret"}},
        sources={"erp": {"kind": "stalling", "profile": "demo"}},
    )
    host = PluginHost(load_entry_points=False, extra_plugins=(erp,))
    with Connector(settings, host=host, observers=(observe,)) as connector:
        summary = connector.run_once()

    # The ERP stalled after 1,000 invoices until a submission was accepted: without the overlap
    # nothing is sent before the whole backlog is read, and the wait times out.
    assert erp.accepted_before_fetch_ended
    assert summary.fetched == BACKLOG and summary.finished
    assert summary.counts.get("valid") == BACKLOG - len(INVALID)
    assert summary.counts.get("locally_invalid") == len(INVALID)
    # 1,000 to send in 10 full submissions: none part-filled while the fetch was still running.
    assert summary.submissions == 10
    assert len(erp.outcomes) == BACKLOG
    assert {k for k, state in erp.outcomes.items() if state != "valid"} == INVALID
