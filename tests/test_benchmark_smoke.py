"""The benchmark harness runs end to end and produces sane figures.

``benchmarks/run.py --quick`` with a tiny backlog: a simulator process, connector processes,
the naive client, the multi-client-id run, and ``--only scaling`` with two tiny backlogs. This
checks that every figure is produced and plausible (ratios within (0, 1.05], no 429 without an
injected fault, at least one login, load averages and ledger sizes present); it never checks
speed, which depends on the machine: the measured figures live in docs/performance.md.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="session")
def results(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("benchmark")
    out = work / "results.json"
    completed = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick",
            "--invoices", "200", "--unguarded-invoices", "200", "--profile-invoices", "100", "--cprofile-invoices", "100",
            "--memory-invoices", "300", "--naive-seconds", "2",
            # Twenty submissions: the daemon is killed after six, usually with more still to send.
            "--restart-invoices", "2000",
            # Three client ids of 200 each against the throughput run's one id of 200.
            "--multi-invoices", "200",
            # The quick run's 30 s window only lengthens every scaled delay of these tiny runs.
            "--window", "15",
            "--workdir", str(work / "scratch"), "--out", str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(out.read_text("utf-8"))


@pytest.fixture(scope="session")
def scaling(tmp_path_factory: pytest.TempPathFactory) -> dict:
    work = tmp_path_factory.mktemp("scaling")
    out = work / "results.json"
    completed = subprocess.run(
        [
            sys.executable, str(ROOT / "benchmarks" / "run.py"), "--quick", "--only", "scaling", "--scaling-invoices", "200,400",
            "--workdir", str(work / "scratch"), "--out", str(out),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert completed.returncode == 0, completed.stderr[-3000:]
    return json.loads(out.read_text("utf-8"))


CONNECTOR_RUNS = ("throughput", "throughput_safety_factor_1", "cpu", "memory")


def test_every_section_and_target_is_reported(results):
    for section in ("machine", "plan", *CONNECTOR_RUNS, "naive", "restart", "multi", "targets"):
        assert section in results, section
    assert set(results["targets"]) == {
        "throughput", "no_429", "one_login_per_token_lifetime", "get_submission_per_submission", "cpu_per_document", "peak_rss",
        "ledger_per_final_document", "several_client_ids",
    }
    for key in ("documents_per_minute", "ceiling_per_minute", "ratio", "rate_limited_429", "logins",
                "get_submission_per_submission", "api_calls_per_1000_documents", "cpu_s_per_10000_documents", "peak_rss_mb"):
        assert key in results["throughput"], key


def _plausible_load(load) -> bool:
    return isinstance(load, list) and len(load) == 3 and all(isinstance(v, float | int) and v >= 0 for v in load)


def test_the_load_is_reported_beside_every_run(results):
    assert _plausible_load(results["load_average_at_start"]) and _plausible_load(results["load_average_at_end"])
    for run in (*CONNECTOR_RUNS, "naive", "restart"):
        assert _plausible_load(results[run]["load_average_at_start"]), run
        assert _plausible_load(results[run]["load_average_at_end"]), run


def test_every_invoice_is_validated_and_written_back(results):
    for run in CONNECTOR_RUNS:
        assert results[run]["exit_code"] == 0
        assert results[run]["erp_states"] == {"valid": results[run]["invoices"]}


def test_ratios_are_plausible(results):
    for run in (*CONNECTOR_RUNS, "naive"):
        assert 0 < results[run]["ratio"] <= 1.05, run
    assert results["connector_over_naive"] > 0


def test_the_ledger_size_is_measured_per_final_document(results):
    for run in CONNECTOR_RUNS:
        figures = results[run]
        # Every invoice ended valid, so every document is final; the file holds at least its rows.
        assert figures["final_documents"] == figures["invoices"], run
        assert figures["ledger_bytes"] >= sum(figures["ledger_bytes_by_table"].values()) > 0, run
        assert figures["ledger_bytes_per_final_document"] == round(figures["ledger_bytes"] / figures["final_documents"])
        assert "documents" in figures["ledger_bytes_by_table"]
        # Once the bodies' retention has passed, the rows an audit needs stay, and take less room.
        kept = figures["ledger_bytes_per_final_document_after_retention"]
        assert 0 < kept < figures["ledger_bytes_per_final_document"], run


def test_several_client_ids_are_measured_against_one(results):
    multi = results["multi"]
    several = multi["several_client_ids"]
    assert multi["client_ids"] == several["client_ids"] == 3
    # Each client id drained its own backlog through its own profile, all validated, none refused.
    assert several["invoices"] == 3 * several["invoices_per_client_id"] == 600
    assert several["exit_code"] == 0 and several["erp_states"] == {"valid": 600}
    assert several["rate_limited_429"] == 0 and several["logins"] >= 3
    # Three ceilings: the ratio is to all of them together.
    assert several["ceiling_per_minute"] == pytest.approx(3 * results["throughput"]["ceiling_per_minute"])
    assert 0 < multi["ratio"] <= 1.05
    # The one-id figure is the throughput run's (same backlog per id, same window).
    assert multi["one_client_id"]["documents_per_minute"] == results["throughput"]["documents_per_minute"]
    assert multi["speed_up"] == pytest.approx(several["documents_per_minute"] / results["throughput"]["documents_per_minute"], abs=1e-3)
    assert 0 < multi["speed_up"] <= 3 * 1.05


def test_the_scaling_runs_report_memory_cpu_ledger_and_duration(scaling):
    runs = scaling["scaling"]
    assert [run["invoices"] for run in runs] == [200, 400]
    for run in runs:
        assert run["exit_code"] == 0 and run["erp_states"] == {"valid": run["invoices"]}
        assert run["peak_rss_mb"] > 0 and run["cpu_ms_per_document"] > 0 and run["wall_s"] > 0
        assert run["final_documents"] == run["invoices"] and run["ledger_bytes_per_final_document"] > 0
        assert "documents" in run["ledger_bytes_by_table"]
        assert run["rate_limited_429"] == 0
        assert _plausible_load(run["load_average_at_start"]) and _plausible_load(run["load_average_at_end"])


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
