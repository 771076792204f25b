"""A failing rate-limit backend happens before anything is sent: not sent, never in doubt.

Section 3 of the issue "Exactly once for every invoice…": one Redis restart used to send 123
submissions to reconciliation. Here the connector's limiter runs on a Redis of the test's own,
stopped and started again while the connector works against the simulator."""

from __future__ import annotations

import pytest

from connector_core.pipeline.sending import BatchOutcome
from tests.exactly_once.conftest import make_connector
from tests.exactly_once.erp import MemoryErp
from tests.exactly_once.test_scenarios import fetch, poll_and_report, submission_states, submit

pytestmark = pytest.mark.slow


def test_a_rate_backend_outage_is_not_sent_pauses_with_one_incident_and_resumes(tmp_path, ledger_url, simulator, throwaway_redis):
    erp = MemoryErp()
    for n in range(3):
        erp.add(f"k{n}")
    events: list[str] = []
    observe = lambda event, fields: events.append(event)  # noqa: E731
    with make_connector(
        tmp_path, ledger_url, simulator, {"erp": erp}, rate_backend=throwaway_redis.url, observers=(observe,)
    ) as c:
        fetch(c)
        throwaway_redis.stop()
        first = submit(c)
        second = submit(c)
        assert first.outcomes == [BatchOutcome.BACKEND_DOWN] and second.outcomes == [BatchOutcome.BACKEND_DOWN]
        # Certainly not sent: nothing in doubt, nothing claimed, nothing reached MyInvois.
        assert set(submission_states(c)) == {"not_sent"}
        assert len(c.ledger.sends.pending_documents("main", 10)) == 3
        assert list(simulator.simulator.store.documents.values()) == []
        incidents = [i for i in c.ledger.journal.recent_incidents(20) if i["kind"] == "rate_backend_down"]
        assert len(incidents) == 1 and "rate_limits.backend" in incidents[0]["message"]
        assert events.count("rate_backend_down") == 1

        throwaway_redis.start()  # back, and empty: it forgot every window
        third = submit(c)
        assert third.outcomes == [BatchOutcome.ACCEPTED] and "rate_backend_back" in events
        poll_and_report(c)
        assert {r.status for r in erp.rows.values()} == {"valid"}
