"""Crash safety (issue 4): the daemon killed with SIGKILL at random moments, restarted each time.

``myinvois-connector run`` (the daemon) works through a few thousand invoices from SQL staging
tables against a simulator started apart from it (with every fault on), and is killed with
SIGKILL at seeded random moments: mid-claim, mid-submit, mid-poll, mid-write-back, wherever the
moment falls. After the last kill, ``run --once`` finishes the work. MyInvois must then hold no
duplicate, every invoice must be accepted exactly once or reported invalid, and the ERP's
staging table must agree with MyInvois's documents (uuid and status).

Nothing here depends on the machine's speed: the tests wait for what a process did (it got to
sending, it sent so much), with deadlines only a broken connector reaches, never for a number
of submissions within a number of seconds. How fast the connector gets back to sending after a
crash is measured by ``benchmarks/run.py`` (the ``restart`` run), not asserted here.
"""

from __future__ import annotations

import random
import signal
import time
from pathlib import Path

import pytest

from connector_core.simulator import SimulatorConfig, run_in_thread
from tests.faults import harness as h

pytestmark = pytest.mark.slow

INVOICES = 2000
INVALID = 10
KILLS = 8
SEED = 20261124
#: How long a process may take to get to a point the test waits for (start-up, reconciling what
#: the previous process left in doubt, waiting for the rate window). Only a broken connector
#: takes that long; a busy machine takes seconds.
PROGRESS_DEADLINE_SECONDS = 120


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

        submissions = lambda: h.stats(sim.base_url)["submissions"]  # noqa: E731
        kills = 0
        submissions_at_kill = []
        for life in range(KILLS):
            daemon = h.start_connector(config, log=log)
            if life == 0:
                # The first kill falls while the first submissions are going out, however long
                # the start-up takes on this machine.
                assert h.wait_until(
                    lambda: submissions() > 0 or daemon.poll() is not None, PROGRESS_DEADLINE_SECONDS, 0.05
                ), f"nothing was submitted within {PROGRESS_DEADLINE_SECONDS} s; see {log}"
                time.sleep(rng.uniform(0.0, 2.0))
            else:
                # Anywhere: start-up, migrations, reconciling, sending, polling, write-back.
                time.sleep(rng.uniform(1.5, 6.0))
            assert daemon.poll() is None, f"the daemon exited by itself with {daemon.returncode}; see {log}"
            daemon.send_signal(signal.SIGKILL)
            daemon.wait(timeout=10)
            kills += 1
            submissions_at_kill.append(submissions())
        # The first kill fell while work was going on, not after it was all done. (How many
        # later kills fell during start-up rather than while sending depends on the machine's
        # speed, so it is printed below, not asserted.)
        assert submissions_at_kill[0] > 0

        summary = h.run_once(config, log=log, timeout=180)
        assert summary["finished"] is True and summary["problem"] is None, summary
        # Work was left after the first kill, and later processes took it up.
        assert submissions() > submissions_at_kill[0]

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


#: The crash loop's rate window, longer than the harness's 3 s: a restarted process spends a few
#: seconds starting (more on a busy machine) before it may send, and it must come back while
#: the previous process's submissions still count, or a process that forgot them would pass.
RESTART_WINDOW_SECONDS = 8.0
RESTARTS = 5


def test_a_daemon_restarted_again_and_again_keeps_the_rate_window(tmp_path: Path):
    """A crash-looping daemon (systemd restarts it at once) with the rate-limit backend left
    at its default: each new process must know what the previous ones sent in the current
    window, or every restart brings a fresh burst and LHDN throttles the client id.

    Each process is killed once it has sent more than half a window's worth, so two processes
    in a row send more than one window allows: a process that started from an empty window
    would push the peak over the limit. The kills follow what each process did, not the clock,
    so a slow machine only makes the test longer."""
    simulator = SimulatorConfig(
        seed=8,
        rate_limits={"profile": "production", "window_seconds": RESTART_WINDOW_SECONDS},
        validation={"delay_seconds": 0.3, "per_document_seconds": 0.002},
    )
    log = tmp_path / "connector.log"
    with run_in_thread(simulator) as sim:
        erp = h.Erp(tmp_path / "erp.db", first=1, count=1500)
        # Two documents per submission: far more submissions than one window allows.
        config = h.write_config(tmp_path, api_url=sim.base_url, erp=erp, rate_backend=None, max_documents=2)
        text = config.read_text("utf-8")
        assert f"window_seconds = {h.WINDOW_SECONDS}\n" in text
        config.write_text(text.replace(f"window_seconds = {h.WINDOW_SECONDS}\n", f"window_seconds = {RESTART_WINDOW_SECONDS}\n"), "utf-8")

        limit = h.stats(sim.base_url)["limits"]["submit"]
        quota = limit // 2 + 1
        accepted = lambda: h.stats(sim.base_url)["requests"].get("submit", {}).get("202", 0)  # noqa: E731
        sent_per_process = []
        for n in range(RESTARTS):
            before = accepted()
            daemon = h.start_connector(config, log=log)
            try:
                # The process gets back to sending (after start-up, and after reconciling what
                # its predecessor left in doubt) and sends its share, waiting for the window
                # to slide where its predecessors filled it.
                done = h.wait_until(
                    lambda: accepted() - before >= quota or daemon.poll() is not None, PROGRESS_DEADLINE_SECONDS, 0.05
                )
                assert daemon.poll() is None, f"process {n + 1} exited by itself with {daemon.returncode}; see {log}"
                assert done, f"process {n + 1} sent {accepted() - before} submissions in {PROGRESS_DEADLINE_SECONDS} s; see {log}"
            finally:
                if daemon.poll() is None:
                    daemon.send_signal(signal.SIGKILL)
                daemon.wait(timeout=10)
            sent_per_process.append(accepted() - before)

        sim_stats = h.stats(sim.base_url)
        # Every restarted process sent again, and no window held more than the limit.
        peaks = h.assert_within_limits(sim_stats)
        assert "429" not in sim_stats["requests"]["submit"], sim_stats["requests"]["submit"]
        erp.close()
    print(f"\n== restarted {RESTARTS - 1} times, default rate backend, window {RESTART_WINDOW_SECONDS:g} s")
    print(f"   submissions accepted per process: {sent_per_process} (killed after {quota}; limit {limit} per window)")
    print("   highest requests per window / limit: " + ", ".join(f"{e} {p}/{lim}" for e, (p, lim) in peaks.items()))
