"""The benchmark harness runs end to end and produces sane figures.

``benchmarks/run.py --quick`` with a tiny backlog: a simulator process, connector processes,
the naive client. This checks that every figure is produced and plausible (ratios within
(0, 1.05], no 429 without an injected fault, at least one login); it never checks speed, which
depends on the machine: the measured figures live in docs/performance.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("benchmark")
    out = work / "results.json"
    completed = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick",
            "--invoices", "200", "--profile-invoices", "100", "--cprofile-invoices", "100", "--memory-invoices", "300", "--naive-seconds", "2",
            # Twenty submissions: the daemon is killed after six, usually with more still to send.
            "--restart-invoices", "2000",
            "--workdir", str(work / "scratch"), "--out", str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(out.read_text("utf-8"))


def test_every_section_and_target_is_reported(results):
    for section in ("machine", "plan", "throughput", "throughput_safety_factor_1", "cpu", "memory", "naive", "restart", "targets"):
        assert section in results, section
    assert set(results["targets"]) == {
        "throughput", "no_429", "one_login_per_token_lifetime", "get_submission_per_submission", "cpu_per_document", "peak_rss",
    }
    for key in ("documents_per_minute", "ceiling_per_minute", "ratio", "rate_limited_429", "logins",
                "get_submission_per_submission", "api_calls_per_1000_documents", "cpu_s_per_10000_documents", "peak_rss_mb"):
        assert key in results["throughput"], key


def test_every_invoice_is_validated_and_written_back(results):
    for run in ("throughput", "throughput_safety_factor_1", "cpu", "memory"):
        assert results[run]["exit_code"] == 0
        assert results[run]["erp_states"] == {"valid": results[run]["invoices"]}


def test_ratios_are_plausible(results):
    for run in ("throughput", "throughput_safety_factor_1", "cpu", "memory", "naive"):
        assert 0 < results[run]["ratio"] <= 1.05, run
    assert results["connector_over_naive"] > 0


def test_no_429_and_a_login(results):
    for run in ("throughput", "cpu", "memory", "naive"):
        assert results[run]["rate_limited_429"] == 0, run
        assert results[run]["logins"] >= 1, run
    assert results["throughput"]["get_submission_per_submission"] >= 1


def test_cpu_memory_and_stages_are_measured(results):
    assert results["throughput"]["cpu_s"] > 0
    assert results["memory"]["peak_rss_mb"] > 0
    shares = results["cpu"]["stage_share"]
    assert set(shares) == {"fetch", "build", "hash", "ledger", "submit", "poll", "report", "other"}
    assert sum(shares.values()) == pytest.approx(1.0, abs=0.01)


def test_the_restart_is_measured_and_loses_or_duplicates_nothing(results):
    restart = results["restart"]
    assert restart["exit_code"] == 0
    assert restart["erp_states"] == {"valid": restart["invoices"]}
    assert restart["duplicate_documents"] == 0 and restart["rate_limited_429"] == 0
    assert restart["killed_after_submissions"] > 0 and restart["first_accepted_fresh_s"] > 0
    for key in ("first_accepted_after_restart_s", "reconciled_found", "reconciled_resent", "documents_accepted_after_restart",
                "ratio_after_restart", "cpu_s"):
        assert key in restart, key
    # Whether the first process got everything out before the kill depends on how fast the
    # machine watched it; when work was left, the restarted process sent it.
    if restart["killed_after_submissions"] < restart["submissions_accepted"]:
        assert restart["documents_accepted_after_restart"] > 0
        assert restart["first_accepted_after_restart_s"] > 0
        assert 0 < restart["ratio_after_restart"] <= 1.05
