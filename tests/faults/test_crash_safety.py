"""Crash safety (issue 4): the daemon killed with SIGKILL at random moments, restarted each time.

``myinvois-connector run`` (the daemon) works through a few thousand invoices from SQL staging
tables against a simulator started apart from it (with every fault on), and is killed with
SIGKILL at seeded random moments: mid-claim, mid-submit, mid-poll, mid-write-back, wherever the
moment falls. After the last kill, ``run --once`` finishes the work. MyInvois must then hold no
duplicate, every invoice must be accepted exactly once or reported invalid, and the ERP's
staging table must agree with MyInvois's documents (uuid and status).
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from tests.faults import harness as h

pytestmark = pytest.mark.slow

INVOICES = 2000
INVALID = 10
KILLS = 8
SEED = 20261124


def test_sigkill_at_random_moments_loses_and_duplicates_nothing(tmp_path: Path):
    rng = random.Random(SEED)
    started = time.monotonic()
    log = tmp_path / "connector.log"
    # Every fault on, but fewer lost submit answers than in the fault test: the kills make
    # plenty of in-doubt submissions themselves, and each costs Search Documents calls
    # (12 per window) before the daemon gets on with new work.
    faults = {**h.ALL_FAULTS, "lost_response_rate": {**h.ALL_FAULTS["lost_response_rate"], "submit": 0.03}}
    with h.start_simulator(faults, seed=7) as sim:
        erp = h.Erp(tmp_path / "erp.db", first=1, count=INVOICES + INVALID, invalid=INVALID)
        config = h.write_config(tmp_path, api_url=sim.base_url, erp=erp, rate_backend=f"sqlite:///{tmp_path}/rate.db")

        kills = 0
        submissions_at_kill = []
        for _ in range(KILLS):
            daemon = h.start_connector(config, log=log)
            # Start-up (imports, migrations) takes about a second; the kill falls anywhere after.
            time.sleep(rng.uniform(1.5, 6.0))
            assert daemon.poll() is None, f"the daemon exited by itself with {daemon.returncode}; see {log}"
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=10)
            kills += 1
            submissions_at_kill.append(h.stats(sim.base_url)["submissions"])
        # The kills fell while work was going on, at different stages of it, not after it
        # was all done.
        assert submissions_at_kill[0] > 0
        assert len(set(submissions_at_kill)) >= 3, submissions_at_kill
        assert h.stats(sim.base_url)["submissions"] > submissions_at_kill[0]

        summary = h.run_once(config, log=log, timeout=180)
        assert summary["finished"] is True and summary["problem"] is None, summary

        sim_stats = h.stats(sim.base_url)
        figures = h.assert_exactly_once(sim, [erp])
        peaks = h.assert_within_limits(sim_stats)
        counters = h.status(config)["counters"]
        # Some kill fell between claiming a batch and recording MyInvois's answer.
        assert counters.get("reconciled_found", 0) + counters.get("reconciled_resent", 0) > 0, counters
        erp.close()

    print(f"\n== crash safety: {kills} SIGKILLs ({time.monotonic() - started:.0f} s)")
    print(f"   invoices {INVOICES + INVALID}: " + ", ".join(f"{k} {v}" for k, v in sorted(figures.items())))
    print(f"   submissions at MyInvois at each kill: {submissions_at_kill}")
    print("   faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(sim_stats["faults_injected"].items())))
    print("   highest requests per window / limit: " + ", ".join(f"{e} {p}/{lim}" for e, (p, lim) in peaks.items()))
    print("   ledger counters: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))


def test_a_daemon_restarted_again_and_again_keeps_the_rate_window(tmp_path: Path):
    """A crash-looping daemon (systemd restarts it at once) with the rate-limit backend left
    at its default: each new process must know what the previous ones sent in the current
    window, or every restart brings a fresh burst and LHDN throttles the client id."""
    with h.start_simulator(seed=8) as sim:
        erp = h.Erp(tmp_path / "erp.db", first=1, count=1500)
        # Two documents per submission: far more submissions than one window allows.
        config = h.write_config(tmp_path, api_url=sim.base_url, erp=erp, rate_backend=None, max_documents=2)
        for _ in range(5):
            daemon = h.start_connector(config, log=tmp_path / "connector.log")
            time.sleep(2.2)
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=10)
        sim_stats = h.stats(sim.base_url)
        # The submit limit did bind: together the restarts sent more than one window allows.
        assert sim_stats["requests"]["submit"]["202"] > 2 * sim_stats["limits"]["submit"]
        peaks = h.assert_within_limits(sim_stats)
        assert "429" not in sim_stats["requests"]["submit"], sim_stats["requests"]["submit"]
        erp.close()
    print(f"\n== restarted 5 times, default rate backend: highest per window {peaks}")
