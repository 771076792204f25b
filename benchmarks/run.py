"""Capacity benchmark of the connector against the simulator with LHDN's production limits.

    .venv/bin/python benchmarks/run.py [--quick] [--out benchmarks/results/latest.json]

Four measurements, each with a fresh simulator process and a fresh connector process (so the
simulator's CPU is never counted as the connector's), all on loopback, each bounded in time:

1. throughput — a backlog of invoices in SQLite staging tables, drained by
   ``myinvois-connector --config <generated> run --once``; documents validated per minute as a
   ratio to MyInvois's ceiling (100 submissions x 100 documents per rate window);
2. cpu — CPU seconds of that connector process (``os.wait4``), plus a separate profiled run
   (``profile_driver.py``) whose CPU time is attributed to the pipeline's stages (``stages.py``);
3. memory — peak RSS (``ru_maxrss``) of a connector draining a 100,000-invoice backlog;
4. naive — LHDN's pseudo-code followed literally (``naive_client.py``), for comparison;
5. restart — the daemon (``run``) killed with SIGKILL while submitting, then ``run --once``
   picking up: seconds from each process's start to its first accepted submission (the
   first process's includes fetching the backlog, the second's reconciling the submissions
   the kill left in doubt), and the rate after the restart as a ratio to the ceiling. The crash tests assert only that a restarted process
   sends again, exactly once and within the limits; how soon and how fast is measured here.

Time is compressed by shortening the rate window on both sides (``--window``; 60 s is LHDN's):
every latency, validation delay, poll interval and the token lifetime are scaled by
window / 60, so the ceiling per real minute grows by 60 / window and the *ratio* stays
comparable. CPU time per document cannot be compressed, so a short window makes the connector
relatively slower: the full run (60 s window) is the reference.

``--quick`` uses a 15 s window (four times LHDN's pace) and 12,000 invoices: 1.2 windows'
worth, so the run still meets the submission limit (the full run's 20,000 are 2 windows'
worth); the memory run takes 10,000 invoices instead of 100,000. It finishes in under 2 minutes.

``--only restart`` runs the restart measurement alone and prints its section.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from stages import top_functions  # noqa: E402
from staging import SUPPLIER, create_staging_db, status_counts  # noqa: E402

from connector_core.api.ratelimit import RateLimitSettings  # noqa: E402
from connector_core.settings import CycleSettings  # noqa: E402

#: The connector's own defaults, read rather than copied, so the results name what users get.
DEFAULT_SAFETY_FACTOR = RateLimitSettings().safety_factor
CYCLES = CycleSettings()
DEFAULT_FETCH_LIMIT = CYCLES.fetch_limit
#: No ``rate_limits.backend`` in the generated configs: the connector then keeps its rate
#: windows in ``state_dir/rate-limits.sqlite`` (a fresh state_dir per run, so no run inherits
#: another's windows). That is what a user who sets nothing gets, so that is what is measured.
RATE_LIMIT_BACKEND = "default: sqlite in state_dir (rate-limits.sqlite)"

PYTHON = sys.executable
CONNECTOR = str(Path(sys.executable).parent / "myinvois-connector")

#: MyInvois: 100 Submit Documents calls per client id per window, of at most 100 documents.
SUBMISSIONS_PER_WINDOW = 100
DOCUMENTS_PER_SUBMISSION = 100
LHDN_WINDOW_S = 60.0


@dataclass(frozen=True)
class Latency:
    """The simulator's timing at LHDN's scale (60 s window); scaled with the window."""

    login_s: float = 0.3
    submit_s: float = 1.0
    submit_s_per_mb: float = 0.5
    get_submission_s: float = 0.2
    validation_s: float = 2.0
    validation_per_document_s: float = 0.010


@dataclass(frozen=True)
class Plan:
    mode: str
    window_s: float
    invoices: int
    profile_invoices: int
    cprofile_invoices: int
    memory_invoices: int
    memory_window_s: float
    memory_latency_factor: float
    naive_seconds: float
    naive_poll_sleep_s: float
    restart_invoices: int


FULL = Plan("full", 60.0, 20_000, 10_000, 2_000, 100_000, 15.0, 0.1, 120.0, 3.0, 10_000)
QUICK = Plan("quick", 15.0, 12_000, 3_000, 300, 10_000, 15.0, 0.1, 15.0, 3.0, 3_000)

#: The restart run kills the daemon once this many submissions were accepted (fewer for a
#: tiny backlog): four are in flight at any moment, so some are in doubt when it dies.
RESTART_KILL_AFTER_SUBMISSIONS = 10


# --- the simulator ----------------------------------------------------------------------------


class Simulator:
    def __init__(
        self, workdir: Path, scale: float, latency: Latency, token_lifetime_s: int, *, keep_raw_documents: bool = False
    ) -> None:
        ms = lambda seconds: {"fixed_ms": round(seconds * scale * 1000, 3)}  # noqa: E731
        config = {
            "token_lifetime_seconds": max(1, int(token_lifetime_s)),
            "rate_limits": {"profile": "production", "window_seconds": LHDN_WINDOW_S * scale},
            "faults": {
                "latency_by_endpoint": {
                    "login": ms(latency.login_s),
                    "submit": ms(latency.submit_s),
                    "get_submission": ms(latency.get_submission_s),
                }
            },
            "validation": {
                "delay_seconds": latency.validation_s * scale,
                "per_document_seconds": latency.validation_per_document_s * scale,
            },
            # Only reconciliation reads documents back (Get Document: are the bytes MyInvois holds
            # ours?), and only the restart run reconciles; keeping 100,000 of them elsewhere is
            # not the benchmark's point.
            "keep_raw_documents": keep_raw_documents,
        }
        workdir.mkdir(parents=True, exist_ok=True)
        path = workdir / "simulator.json"
        path.write_text(json.dumps(config, indent=2), "utf-8")
        self.config = config
        self.log = (workdir / "simulator.log").open("w")
        self.proc = subprocess.Popen(
            [PYTHON, str(HERE / "sim_server.py"), "--config", str(path), "--submit-seconds-per-mb", str(latency.submit_s_per_mb * scale)],
            stdout=subprocess.PIPE,
            stderr=self.log,
            text=True,
            cwd=ROOT,
        )
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        if not line.startswith("PORT "):
            self.stop()
            raise RuntimeError(f"the simulator did not start (see {workdir / 'simulator.log'})")
        self.base_url = f"http://127.0.0.1:{int(line.split()[1])}"
        deadline = time.monotonic() + 20
        while True:
            try:
                httpx.get(f"{self.base_url}/_simulator/stats", timeout=2).raise_for_status()
                break
            except httpx.HTTPError:
                if time.monotonic() > deadline:
                    self.stop()
                    raise
                time.sleep(0.05)

    def stats(self) -> dict[str, Any]:
        return httpx.get(f"{self.base_url}/_simulator/stats", timeout=10).json()

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()

    def __enter__(self) -> Simulator:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


# --- the connector ----------------------------------------------------------------------------


def fresh_dir(path: Path) -> Path:
    """An empty scratch directory: a ledger or token cache left by an earlier run would skew
    every figure (documents already final, no login needed)."""
    if path.exists():
        shutil.rmtree(path)
    path.mkdir(parents=True)
    return path


def connector_toml(
    workdir: Path, base_url: str, erp: Path, invoices: int, scale: float, timeout_s: float, safety_factor: float | None = None
) -> Path:
    """A production-like configuration; only times are scaled with the window, and fetch_limit
    is raised above its default only when the backlog is larger (the memory run), so that
    ``run --once`` (which fetches once) takes the whole backlog. No rate-limit backend is set."""
    s = lambda seconds: repr(round(seconds * scale, 4))  # noqa: E731
    fetch_limit = (
        f"fetch_limit = {invoices}" if invoices > DEFAULT_FETCH_LIMIT else f"# fetch_limit: the default ({DEFAULT_FETCH_LIMIT})"
    )
    text = f"""# Generated by benchmarks/run.py
environment = "simulator"
api_base_url = "{base_url}"
identity_base_url = "{base_url}"
portal_base_url = "{base_url}"
state_dir = "{workdir / 'state'}"

[cycles]
{fetch_limit}
poll_interval_seconds = {s(CYCLES.poll_interval_seconds)}
first_poll_delay_seconds = {s(CYCLES.first_poll_delay_seconds)}
first_poll_delay_per_document_seconds = {s(CYCLES.first_poll_delay_per_document_seconds)}
poll_min_interval_seconds = {s(CYCLES.poll_min_interval_seconds)}
poll_max_interval_seconds = {s(CYCLES.poll_max_interval_seconds)}
slow_poll_after_seconds = {s(CYCLES.slow_poll_after_seconds)}
slow_poll_interval_seconds = {s(CYCLES.slow_poll_interval_seconds)}
reconcile_after_seconds = {s(CYCLES.reconcile_after_seconds)}
once_timeout_seconds = {timeout_s}

[rate_limits]
profile = "production"
window_seconds = {LHDN_WINDOW_S * scale}
{f"safety_factor = {safety_factor}" if safety_factor is not None else f"# safety_factor: the default ({DEFAULT_SAFETY_FACTOR})"}
# backend: not set, so the default (state_dir/rate-limits.sqlite)

[observability]
metrics_port = 0
log_format = "json"

[profiles.bench]
tin = "{SUPPLIER['tin']}"
client_id = "demo-taxpayer"
client_secret = "demo-taxpayer-secret"

[sources.erp]
kind = "sql"
profile = "bench"

[sources.erp.options]
url = "sqlite:///{erp}"
"""
    path = workdir / "connector.toml"
    path.write_text(text, "utf-8")
    return path


def run_child(argv: list[str], workdir: Path, timeout_s: float) -> dict[str, Any]:
    """Run a child to completion; its wall time, CPU time and peak RSS from ``os.wait4``."""
    out = (workdir / "connector.out").open("w")
    err = (workdir / "connector.log").open("w")
    started_wall = time.time()
    started = time.monotonic()
    proc = subprocess.Popen(argv, stdout=out, stderr=err, cwd=ROOT)
    killer = threading.Timer(timeout_s, proc.kill)
    killer.start()
    try:
        _pid, status, usage = os.wait4(proc.pid, 0)
    finally:
        killer.cancel()
        out.close()
        err.close()
    proc.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    return {
        "exit_code": proc.returncode,
        "started_at": started_wall,
        "wall_s": wall,
        "cpu_user_s": usage.ru_utime,
        "cpu_system_s": usage.ru_stime,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        "peak_rss_mb": usage.ru_maxrss / 1024,  # Linux reports KiB
    }


def _when(value: Any) -> float | None:
    if value is None:
        return None
    moment = datetime.fromisoformat(str(value))
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.timestamp()


def ledger_timeline(workdir: Path, started_at: float) -> dict[str, Any]:
    """When the first and last submissions were sent and the last document became final,
    in seconds since the connector process started (from the ledger's own timestamps)."""
    conn = sqlite3.connect(workdir / "state" / "ledger.sqlite")
    try:
        first_sent, last_sent, subs, polls = conn.execute(
            "SELECT min(accepted_at), max(accepted_at), count(*), sum(poll_count) FROM submissions"
        ).fetchone()
        last_final = conn.execute("SELECT max(final_at) FROM documents").fetchone()[0]
        states = dict(conn.execute("SELECT state, count(*) FROM documents GROUP BY state").fetchall())
    finally:
        conn.close()
    rel = lambda v: None if _when(v) is None else round(_when(v) - started_at, 2)  # noqa: E731
    return {
        "first_accepted_s": rel(first_sent),
        "last_accepted_s": rel(last_sent),
        "last_final_s": rel(last_final),
        "ledger_submissions": subs,
        "ledger_polls": polls or 0,
        "ledger_states": states,
    }


def api_figures(stats: dict[str, Any], documents: int) -> dict[str, Any]:
    requests = stats.get("requests", {})
    per_endpoint = {name: sum(codes.values()) for name, codes in requests.items()}
    rate_limited = {name: codes.get("429", 0) for name, codes in requests.items() if codes.get("429")}
    submissions = sum(codes.get("202", 0) for name, codes in requests.items() if name == "submit")
    calls = sum(per_endpoint.values())
    return {
        "api_calls": per_endpoint,
        "rate_limited_429": sum(rate_limited.values()),
        "rate_limited_429_by_endpoint": rate_limited,
        "logins": sum(stats.get("logins", {}).values()),
        "submissions_accepted": submissions,
        "get_submission_per_submission": round(per_endpoint.get("get_submission", 0) / submissions, 3) if submissions else None,
        "api_calls_per_1000_documents": round(calls / documents * 1000, 2) if documents else None,
    }


def connector_run(
    name: str,
    plan_dir: Path,
    invoices: int,
    window_s: float,
    latency: Latency,
    *,
    profile: str | None = None,
    safety_factor: float | None = None,
) -> dict[str, Any]:
    """One connector run; ``profile`` = None (plain CLI), "stages" or "cprofile" (profile_driver.py)."""
    scale = window_s / LHDN_WINDOW_S
    workdir = fresh_dir(plan_dir / name)
    erp = workdir / "erp.sqlite"
    create_staging_db(erp, invoices)
    ceiling_per_s = SUBMISSIONS_PER_WINDOW * DOCUMENTS_PER_SUBMISSION / window_s
    # Generous, but bounded: ten times the ideal drain time plus a fixed allowance for CPU work.
    timeout_s = invoices / ceiling_per_s * 10 + 120 + invoices * 0.01
    token_lifetime_s = 3600 * scale
    with Simulator(workdir, scale, latency, int(token_lifetime_s)) as sim:
        config = connector_toml(workdir, sim.base_url, erp, invoices, scale, timeout_s, safety_factor)
        if profile:
            argv = [PYTHON, str(HERE / "profile_driver.py"), profile, str(config), str(workdir / f"connector.{profile}")]
        else:
            argv = [CONNECTOR, "--config", str(config), "run", "--once", "--json"]
        child = run_child(argv, workdir, timeout_s + 60)
        stats = sim.stats()
    erp_states = status_counts(erp)
    valid = erp_states.get("valid", 0)
    result: dict[str, Any] = {
        "invoices": invoices,
        "window_s": window_s,
        "safety_factor": safety_factor if safety_factor is not None else DEFAULT_SAFETY_FACTOR,
        "fetch_limit": max(invoices, DEFAULT_FETCH_LIMIT),
        "rate_limit_backend": RATE_LIMIT_BACKEND,
        "token_lifetime_s": round(token_lifetime_s, 1),
        "erp_states": erp_states,
        "valid": valid,
        **child,
        **ledger_timeline(workdir, child["started_at"]),
        **api_figures(stats, invoices),
    }
    wall = child["wall_s"]
    result["documents_per_minute"] = round(valid / wall * 60, 1) if wall else 0.0
    result["ceiling_per_minute"] = round(ceiling_per_s * 60, 1)
    result["ratio"] = round(result["documents_per_minute"] / result["ceiling_per_minute"], 4)
    result["ideal_drain_s"] = round(invoices / ceiling_per_s, 2)
    # The submitting phase alone (first to last accepted submission), without start-up, the
    # fetch, and the last polls and write-back: what the rate policy lets through.
    span = (result["last_accepted_s"] or 0) - (result["first_accepted_s"] or 0)
    submitted = result["submissions_accepted"]
    if span > 0 and submitted > 1:
        result["submit_phase_ratio"] = round((invoices * (submitted - 1) / submitted) / span / ceiling_per_s, 4)
    token_lifetimes = max(1, -(-wall // token_lifetime_s))
    result["logins_per_token_lifetime"] = round(result["logins"] / token_lifetimes, 2)
    result["cpu_ms_per_document"] = round(child["cpu_s"] / invoices * 1000, 3)
    result["cpu_s_per_10000_documents"] = round(child["cpu_s"] / invoices * 10_000, 2)
    if profile == "stages":
        stages = json.loads((workdir / "connector.stages").read_text("utf-8"))
        seconds = dict(stages["seconds"])
        seconds["other"] = max(0.0, child["cpu_s"] - sum(seconds.values()))
        result["stage_cpu_s"] = {k: round(v, 2) for k, v in seconds.items()}
        result["stage_share"] = {k: round(v / child["cpu_s"], 4) for k, v in seconds.items()}
        result["stage_ms_per_document"] = {k: round(v / invoices * 1000, 3) for k, v in seconds.items()}
        result["stage_calls"] = stages["calls"]
        result["ledger_cpu_s_by_method"] = {k: round(v, 3) for k, v in list(stages["detail"].items())[:10]}
    elif profile == "cprofile":
        result["top_functions"] = top_functions(str(workdir / "connector.cprofile"))
    return result


def naive_run(plan_dir: Path, plan: Plan, latency: Latency) -> dict[str, Any]:
    scale = plan.window_s / LHDN_WINDOW_S
    workdir = fresh_dir(plan_dir / "naive")
    erp = workdir / "erp.sqlite"
    # One document takes a few (scaled) seconds: a small backlog is plenty for the time budget.
    budget_docs = int(plan.naive_seconds / (scale * 1.0)) + 10
    create_staging_db(erp, budget_docs)
    with Simulator(workdir, scale, latency, int(3600 * scale)) as sim:
        argv = [
            PYTHON, str(HERE / "naive_client.py"), "--base-url", sim.base_url, "--erp", str(erp),
            "--poll-sleep", str(plan.naive_poll_sleep_s * scale), "--max-seconds", str(plan.naive_seconds),
            "--max-documents", str(budget_docs),
        ]
        child = run_child(argv, workdir, plan.naive_seconds + 120)
        stats = sim.stats()
    answer = json.loads((workdir / "connector.out").read_text("utf-8").strip().splitlines()[-1])
    ceiling = SUBMISSIONS_PER_WINDOW * DOCUMENTS_PER_SUBMISSION / plan.window_s * 60
    return {
        **answer,
        "poll_sleep_s": round(plan.naive_poll_sleep_s * scale, 4),
        "poll_sleep_s_at_lhdn_scale": plan.naive_poll_sleep_s,
        "ceiling_per_minute": ceiling,
        "ratio": round(answer["documents_per_minute"] / ceiling, 6),
        "cpu_s": round(child["cpu_s"], 2),
        **{k: v for k, v in api_figures(stats, answer["documents"] or 1).items() if k != "api_calls_per_1000_documents"},
    }


def _submissions_accepted(stats: dict[str, Any]) -> int:
    return stats.get("requests", {}).get("submit", {}).get("202", 0)


def _documents_accepted(stats: dict[str, Any]) -> int:
    return sum(stats.get("accepted_by_invoice", {}).values())


class FirstSubmissionWatch:
    """Watches the simulator from a thread: when the first submission above ``after`` was
    accepted, in seconds since ``start()`` (to the watch's 50 ms resolution)."""

    def __init__(self, sim: Simulator, after: int) -> None:
        self.sim = sim
        self.after = after
        self.seconds: float | None = None
        self._started = 0.0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)

    def start(self) -> FirstSubmissionWatch:
        self._started = time.monotonic()
        self._thread.start()
        return self

    def _watch(self) -> None:
        while not self._stop.is_set():
            try:
                if _submissions_accepted(self.sim.stats()) > self.after:
                    self.seconds = round(time.monotonic() - self._started, 2)
                    return
            except httpx.HTTPError:
                pass
            self._stop.wait(0.05)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=15)


def connector_status(config: Path) -> dict[str, Any]:
    result = subprocess.run([CONNECTOR, "--config", str(config), "status", "--json"], capture_output=True, text=True, cwd=ROOT, timeout=120)
    return json.loads(result.stdout) if result.returncode == 0 else {"error": result.stderr[-2000:]}


def restart_run(plan_dir: Path, invoices: int, window_s: float, latency: Latency) -> dict[str, Any]:
    """The daemon killed with SIGKILL while submitting, then ``run --once`` finishing the work."""
    scale = window_s / LHDN_WINDOW_S
    workdir = fresh_dir(plan_dir / "restart")
    erp = workdir / "erp.sqlite"
    create_staging_db(erp, invoices)
    ceiling_per_s = SUBMISSIONS_PER_WINDOW * DOCUMENTS_PER_SUBMISSION / window_s
    timeout_s = invoices / ceiling_per_s * 10 + 120 + invoices * 0.01
    kill_after = max(1, min(RESTART_KILL_AFTER_SUBMISSIONS, invoices // DOCUMENTS_PER_SUBMISSION // 3))
    # The submissions the kill leaves in doubt are found only if MyInvois can show their bytes.
    with Simulator(workdir, scale, latency, int(3600 * scale), keep_raw_documents=True) as sim:
        config = connector_toml(workdir, sim.base_url, erp, invoices, scale, timeout_s)
        # 1. The daemon, killed once kill_after submissions were accepted.
        with (workdir / "daemon.log").open("w") as log:
            daemon = subprocess.Popen([CONNECTOR, "--config", str(config), "run"], stdout=log, stderr=log, cwd=ROOT)
            watch = FirstSubmissionWatch(sim, 0).start()
            deadline = time.monotonic() + timeout_s
            try:
                while _submissions_accepted(sim.stats()) < kill_after:
                    if daemon.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the daemon sent fewer than {kill_after} submissions (see {workdir / 'daemon.log'})")
                    time.sleep(0.05)
            finally:
                daemon.send_signal(signal.SIGKILL)
                daemon.wait()
                watch.stop()
        first_fresh = watch.seconds
        at_kill = sim.stats()
        # 2. The restart: reconcile what was in doubt, then drain the rest.
        watch = FirstSubmissionWatch(sim, _submissions_accepted(at_kill)).start()
        child = run_child([CONNECTOR, "--config", str(config), "run", "--once", "--json"], workdir, timeout_s + 60)
        watch.stop()
        stats = sim.stats()
    counters = connector_status(config).get("counters", {})
    erp_states = status_counts(erp)
    documents_after = _documents_accepted(stats) - _documents_accepted(at_kill)
    result: dict[str, Any] = {
        "invoices": invoices,
        "window_s": window_s,
        "killed_after_submissions": _submissions_accepted(at_kill),
        "first_accepted_fresh_s": first_fresh,
        "first_accepted_after_restart_s": watch.seconds,
        "reconcile_after_s": round(CYCLES.reconcile_after_seconds * scale, 3),
        "reconciled_found": counters.get("reconciled_found", 0),
        "reconciled_resent": counters.get("reconciled_resent", 0),
        "documents_accepted_after_restart": documents_after,
        "duplicate_documents": stats.get("duplicate_documents"),
        "erp_states": erp_states,
        "valid": erp_states.get("valid", 0),
        **child,
        **api_figures(stats, invoices),
    }
    # The rate after the restart, start-up and reconciliation included, as a ratio to the ceiling.
    if child["wall_s"]:
        result["ratio_after_restart"] = round(documents_after / child["wall_s"] / ceiling_per_s, 4)
    return result


# --- report -----------------------------------------------------------------------------------


def machine() -> dict[str, Any]:
    cpu = "unknown"
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            cpu = line.split(":", 1)[1].strip()
            break
    mem_kib = next(int(l.split()[1]) for l in Path("/proc/meminfo").read_text().splitlines() if l.startswith("MemTotal"))
    return {
        "cpu_model": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(mem_kib / 1024 / 1024, 1),
        "python": platform.python_version(),
        "platform": platform.platform(),
    }


def source_version() -> dict[str, Any]:
    """Which connector code was measured: the checkout's commit and whether connector_core or
    the plugins had uncommitted changes; for a run from an exported tree (``git archive``, no
    .git), the commit named by BENCHMARK_SOURCE_COMMIT."""
    try:
        commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--", "connector_core", "plugins"], cwd=ROOT, capture_output=True, text=True, check=True
        ).stdout.strip()
        return {"commit": commit, "uncommitted_connector_changes": bool(dirty)}
    except (OSError, subprocess.CalledProcessError):
        return {"commit": os.environ.get("BENCHMARK_SOURCE_COMMIT", "unknown"), "uncommitted_connector_changes": None}


def targets(throughput: dict[str, Any], cpu: dict[str, Any], memory: dict[str, Any]) -> dict[str, dict[str, Any]]:
    def row(target: str, measured: Any, met: bool) -> dict[str, Any]:
        return {"target": target, "measured": measured, "met": met}

    runs = [throughput, cpu, memory]
    return {
        "throughput": row(">= 0.95 of the ceiling", throughput["ratio"], throughput["ratio"] >= 0.95),
        "no_429": row("0 (no fault injected)", sum(r["rate_limited_429"] for r in runs), all(r["rate_limited_429"] == 0 for r in runs)),
        "one_login_per_token_lifetime": row(
            "1 per token lifetime", max(r["logins_per_token_lifetime"] for r in runs), all(r["logins_per_token_lifetime"] <= 1 for r in runs)
        ),
        "get_submission_per_submission": row(
            "<= 3 on average", throughput["get_submission_per_submission"], (throughput["get_submission_per_submission"] or 0) <= 3
        ),
        "cpu_per_document": row("<= 1 ms", throughput["cpu_ms_per_document"], throughput["cpu_ms_per_document"] <= 1.0),
        "peak_rss": row(
            f"<= 250 MB with {memory['invoices']:,} invoices", round(memory["peak_rss_mb"], 1), memory["peak_rss_mb"] <= 250
        ),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="15 s window and smaller backlogs: under 2 minutes")
    parser.add_argument("--out", type=Path, help="write the JSON results here (default: print only)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "benchmarks", help="scratch directory")
    parser.add_argument("--invoices", type=int, help="backlog of the throughput run")
    parser.add_argument("--profile-invoices", type=int, help="backlog of the profiled run")
    parser.add_argument("--cprofile-invoices", type=int, help="backlog of the cProfile run (top functions)")
    parser.add_argument("--memory-invoices", type=int, help="backlog of the memory run")
    parser.add_argument("--naive-seconds", type=float, help="time budget of the naive client")
    parser.add_argument("--restart-invoices", type=int, help="backlog of the restart run")
    parser.add_argument("--window", type=float, help="rate window in seconds (LHDN: 60)")
    parser.add_argument("--only", choices=["restart"], help="run this measurement alone and print its section")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    overrides = {
        "invoices": args.invoices, "profile_invoices": args.profile_invoices,
        "cprofile_invoices": args.cprofile_invoices, "memory_invoices": args.memory_invoices,
        "naive_seconds": args.naive_seconds, "window_s": args.window, "restart_invoices": args.restart_invoices,
    }
    plan = Plan(**{**plan.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    latency = Latency()
    plan_dir = args.workdir / plan.mode
    started = time.monotonic()

    def step(label: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {label}", file=sys.stderr, flush=True)

    def restart() -> dict[str, Any]:
        step(f"restart: {plan.restart_invoices:,} invoices, SIGKILL while submitting, then run --once")
        return restart_run(plan_dir, plan.restart_invoices, plan.window_s, latency)

    if args.only:
        results = {
            "mode": plan.mode, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "source": source_version(), "plan": plan.__dict__, "latency_at_lhdn_scale": latency.__dict__,
            args.only: restart(), "runtime_s": round(time.monotonic() - started, 1),
        }
        return _report(results, args.out)

    step(f"throughput: {plan.invoices:,} invoices, window {plan.window_s:g} s")
    throughput = connector_run("throughput", plan_dir, plan.invoices, plan.window_s, latency)
    step(f"throughput with safety_factor 1.0: {plan.invoices:,} invoices")
    unguarded = connector_run("throughput-sf1", plan_dir, plan.invoices, plan.window_s, latency, safety_factor=1.0)
    step(f"profile: {plan.profile_invoices:,} invoices")
    cpu = connector_run("profile", plan_dir, plan.profile_invoices, plan.window_s, latency, profile="stages")
    step(f"cprofile: {plan.cprofile_invoices:,} invoices")
    hot = connector_run("cprofile", plan_dir, plan.cprofile_invoices, plan.window_s, latency, profile="cprofile")
    cpu["top_functions"] = {"invoices": plan.cprofile_invoices, "functions": hot["top_functions"]}
    memory_latency = Latency(**{k: v * plan.memory_latency_factor for k, v in latency.__dict__.items()})
    step(f"memory: {plan.memory_invoices:,} invoices, window {plan.memory_window_s:g} s, latency x{plan.memory_latency_factor:g}")
    memory = connector_run("memory", plan_dir, plan.memory_invoices, plan.memory_window_s, memory_latency)
    step(f"naive: {plan.naive_seconds:g} s")
    naive = naive_run(plan_dir, plan, latency)
    restarted = restart()
    step("done")

    results = {
        "mode": plan.mode,
        "measured_at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "source": source_version(),
        "plan": plan.__dict__,
        "latency_at_lhdn_scale": latency.__dict__,
        "throughput": throughput,
        "throughput_safety_factor_1": unguarded,
        "cpu": cpu,
        "memory": {**memory, "latency_factor": plan.memory_latency_factor},
        "naive": naive,
        "restart": restarted,
        "connector_over_naive": round(throughput["documents_per_minute"] / naive["documents_per_minute"], 1)
        if naive["documents_per_minute"]
        else None,
        "targets": targets(throughput, cpu, memory),
        "runtime_s": round(time.monotonic() - started, 1),
    }
    return _report(results, args.out)


def _report(results: dict[str, Any], out: Path | None) -> dict[str, Any]:
    text = json.dumps(results, indent=2, default=str)
    if out:
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text(text + "\n", "utf-8")
    print(text)
    return results


if __name__ == "__main__":
    main()
