"""The two reconciliation paths an instant search never reaches, end to end over loopback HTTP.

A submit whose answer is lost is reconciled by Search Documents; real MyInvois indexes
asynchronously, so the search can miss documents it already holds (the simulator's
``search_lag_seconds``). Then the connector re-sends the identical bytes and:

(a) within MyInvois's duplicate-submission window the re-send gets ``422 DuplicateSubmission``:
    the submission stays in doubt until a later search finds it;
(b) after that window the re-send is accepted, its documents end Invalid with ``DS302`` naming
    the earlier uuid, and the poll stage adopts the earlier (valid) document.

The simulator's duplicate-submission window is shortened for (b) instead of waiting ten
minutes. Either way every invoice must end valid exactly once, with the ERP holding the uuid
of the one Valid document. The connector runs as its own process (``run --once``).
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import httpx
import pytest

from connector_core.simulator import SimulatorConfig, run_in_thread
from tests.faults import harness as h

pytestmark = pytest.mark.slow

INVOICES = 10
MAX_DOCUMENTS = 5  # two submissions
SUBMISSIONS = INVOICES // MAX_DOCUMENTS
RECONCILE_AFTER = 0.5


def _simulator(*, search_lag: float, duplicate_window: float):
    config = SimulatorConfig(
        seed=7,
        # Every submit answer is lost until each batch has been sent once (see _lose_first_answers).
        faults={"lost_response_rate": {"submit": 1.0}, "search_lag_seconds": search_lag},
        rate_limits={"profile": "production", "window_seconds": h.WINDOW_SECONDS},
        validation={"delay_seconds": 0.3, "per_document_seconds": 0.002},
        duplicate_submission_window_seconds=duplicate_window,
    )
    return run_in_thread(config)


def _lose_first_answers(sim, search_lag: float) -> threading.Thread:
    """Once every batch has been received once (its answer lost), stop losing answers, so the
    identical re-sends are answered: 422, or 202 with the DS302 documents."""

    def watch() -> None:
        if h.wait_until(lambda: h.stats(sim.base_url)["submissions"] >= SUBMISSIONS, timeout=30, interval=0.05):
            httpx.post(f"{sim.base_url}/_simulator/faults", json={"search_lag_seconds": search_lag}, timeout=10)

    thread = threading.Thread(target=watch, daemon=True)
    thread.start()
    return thread


def _connector(tmp_path: Path, sim, erp: h.Erp) -> Path:
    config = h.write_config(tmp_path, api_url=sim.base_url, erp=erp, rate_backend=None,
                            max_documents=MAX_DOCUMENTS, once_timeout=40)
    text = config.read_text("utf-8")
    assert "reconcile_after_seconds = 1.0" in text
    config.write_text(text.replace("reconcile_after_seconds = 1.0", f"reconcile_after_seconds = {RECONCILE_AFTER}"), "utf-8")
    return config


def test_lost_submit_with_search_lag_gets_422_duplicate_submission_and_stays_exactly_once(tmp_path: Path):
    lag = 3.0
    with _simulator(search_lag=lag, duplicate_window=600) as sim:
        erp = h.Erp(tmp_path / "erp.db", first=1, count=INVOICES)
        config = _connector(tmp_path, sim, erp)
        watcher = _lose_first_answers(sim, lag)

        summary = h.run_once(config, log=tmp_path / "connector.log", timeout=60)
        watcher.join(timeout=1)

        assert summary["finished"] is True and summary["problem"] is None, summary
        sim_stats = h.stats(sim.base_url)
        assert sim_stats["faults_injected"].get("lost_response", 0) >= SUBMISSIONS, sim_stats["faults_injected"]
        assert sim_stats["faults_injected"].get("search_lag", 0) > 0, sim_stats["faults_injected"]
        # The identical re-sends met MyInvois's duplicate-submission rule, and nothing else was accepted.
        assert sim_stats["requests"]["submit"].get("422", 0) > 0, sim_stats["requests"]["submit"]
        assert sim_stats["submissions"] == SUBMISSIONS
        counters = h.status(config)["counters"]
        assert counters.get("duplicate_submission_answers", 0) > 0, counters
        assert counters.get("reconciled_found", 0) >= SUBMISSIONS, counters
        assert counters.get("duplicates_adopted", 0) == 0, counters

        figures = h.assert_exactly_once(sim, [erp])
        assert figures["valid"] == INVOICES and figures["duplicates"] == 0, figures
        assert figures["accepted_twice_then_ds302"] == 0, figures
        erp.close()


def test_resend_after_the_duplicate_window_is_ds302_and_the_earlier_document_is_adopted(tmp_path: Path):
    lag = 6.0
    with _simulator(search_lag=lag, duplicate_window=0.2) as sim:
        erp = h.Erp(tmp_path / "erp.db", first=1, count=INVOICES)
        config = _connector(tmp_path, sim, erp)
        watcher = _lose_first_answers(sim, lag)

        summary = h.run_once(config, log=tmp_path / "connector.log", timeout=60)
        watcher.join(timeout=1)

        assert summary["finished"] is True and summary["problem"] is None, summary
        sim_stats = h.stats(sim.base_url)
        assert sim_stats["faults_injected"].get("search_lag", 0) > 0, sim_stats["faults_injected"]
        # The originals and the identical re-sends were both accepted (202): no 422 this time.
        assert sim_stats["requests"]["submit"].get("422", 0) == 0, sim_stats["requests"]["submit"]
        assert sim_stats["submissions"] == 2 * SUBMISSIONS
        counters = h.status(config)["counters"]
        assert counters.get("duplicates_adopted", 0) == INVOICES, counters

        # Each invoice exists twice at MyInvois: the original Valid and the re-send Invalid with DS302.
        documents = list(sim.simulator.store.documents.values())
        originals = {d.uuid: d for d in documents if d.valid}
        resent = [d for d in documents if not d.valid]
        assert len(originals) == len(resent) == INVOICES
        assert all([p.code for p in d.problems] == ["DS302"] for d in resent)
        # The ERP holds the EARLIER, valid uuid of every invoice (not the DS302 re-send's).
        rows = erp.rows()
        for number, row in rows.items():
            assert row["myinvois_status"] == "valid", row
            original = originals.get(row["myinvois_uuid"])
            assert original is not None and original.internal_id == number, row
            assert any(original.uuid in p.message for d in resent if d.internal_id == number for p in d.problems)

        figures = h.assert_exactly_once(sim, [erp])
        assert set(sim_stats["valid_by_invoice"].values()) == {1} and len(sim_stats["valid_by_invoice"]) == INVOICES
        assert figures["valid"] == INVOICES and figures["duplicates"] == 0, figures
        assert figures["accepted_twice_then_ds302"] == INVOICES, figures
        erp.close()
