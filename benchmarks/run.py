"""Capacity benchmark of the connector against the simulator with LHDN's production limits.

    .venv/bin/python benchmarks/run.py [--quick] [--out benchmarks/results/latest.json]

The measurements, each with a fresh simulator process and a fresh connector process (so the
simulator's CPU is never counted as the connector's), all on loopback, each bounded in time:

1. throughput — a backlog of invoices in SQLite staging tables, drained by
   ``myinvois-connector --config <generated> run --once``; documents validated per minute as a
   ratio to MyInvois's ceiling (100 submissions x 100 documents per rate window);
2. cpu — CPU seconds of that connector process (``os.wait4``), plus a separate profiled run
   (``profile_driver.py``) whose CPU time is attributed to the pipeline's stages (``stages.py``);
3. memory — peak RSS (``ru_maxrss``) of a connector draining a 100,000-invoice backlog, and
   the ledger's size on disk per final document;
4. naive — LHDN's pseudo-code followed literally (``naive_client.py``), for comparison;
5. restart — the daemon (``run``) killed with SIGKILL while submitting, then ``run --once``
   picking up: seconds from each process's start to its first accepted submission (the
   first process's includes fetching the backlog, the second's reconciling the submissions
   the kill left in doubt), and the rate after the restart as a ratio to the ceiling. The crash tests assert only that a restarted process
   sends again, exactly once and within the limits; how soon and how fast is measured here;
6. multi — three client ids (three profiles, each with its own SQL source and backlog) in one
   connector process against one: the ratio to three ceilings, and the speed-up over one id
   (the full run takes the throughput run as the one-id figure; ``--only multi`` measures both);
7. scaling — memory runs at 100,000, 300,000 and 1,000,000 invoices (compressed: a tenth of the
   latencies and a short window), each with its peak RSS, CPU per document, ledger bytes per
   final document (and per table) and duration. Only with ``--only scaling``: the runs are CPU
   bound, and at 1.3 ms per document the 1,000,000 run alone took 35 minutes with the 2-core
   machine at load 4-5 (about 50 minutes for the three); ``--scaling-invoices`` picks the sizes.

Every connector run's JSON carries the machine's load averages (as ``uptime`` prints them) at
its start and end: the machine is shared, and a figure means little without them.

Time is compressed by shortening the rate window on both sides (``--window``; 60 s is LHDN's):
every latency, validation delay, poll interval and the token lifetime are scaled by
window / 60, so the ceiling per real minute grows by 60 / window and the *ratio* stays
comparable. CPU time per document cannot be compressed, so a short window makes the connector
relatively slower: the full run (60 s window) is the reference.

``--quick`` uses a 30 s window (twice LHDN's pace) and 25,000 invoices, 2.5 windows' worth:
long enough that the ratio measures the rate policy (a 15 s window measured spare CPU: the
connector and the simulator then need most of a core), and the last, part-used window weighs a
fifth of the run. The other runs are small (their figures are per document, and each costs a
few seconds of start-up and scaled delays whatever its size), and the ``safety_factor = 1.0``,
cProfile and multi-client-id runs are left out. It finishes in under 2 minutes.

``--only restart|multi|scaling`` runs that measurement alone and prints its section.
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
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
sys.path.insert(0, str(HERE))

from ledger_size import sqlite_after_retention  # noqa: E402
from stages import top_functions  # noqa: E402
from staging import BUYER, SUPPLIER, create_staging_db, status_counts  # noqa: E402

from connector_core.api.ratelimit import RateLimitSettings  # noqa: E402
from connector_core.settings import CycleSettings  # noqa: E402

#: The connector's own defaults, read rather than copied, so the results name what users get.
DEFAULT_SAFETY_FACTOR = RateLimitSettings().safety_factor
DEFAULT_ARRIVAL_MARGIN = RateLimitSettings().arrival_margin_seconds
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
    #: Backlog of the ``safety_factor = 1.0`` run; 0 leaves it out.
    unguarded_invoices: int
    #: Backlog per client id of the multi-client-id run; 0 leaves it out.
    multi_invoices: int
    multi_client_ids: int
    #: Backlogs of the scaling (memory) runs, made only with ``--only scaling``.
    scaling_invoices: tuple[int, ...]
    scaling_window_s: float


FULL = Plan("full", 60.0, 20_000, 10_000, 2_000, 100_000, 15.0, 0.1, 120.0, 3.0, 10_000, 20_000, 20_000, 3, (100_000, 300_000, 1_000_000), 10.0)
QUICK = Plan("quick", 30.0, 25_000, 600, 0, 2_000, 15.0, 0.1, 3.0, 3.0, 600, 0, 0, 3, (100_000, 300_000, 1_000_000), 10.0)


@dataclass(frozen=True)
class Account:
    """A taxpayer's ERP system registered with the simulator: one client id, one rate limit."""

    client_id: str
    client_secret: str
    tin: str
    brn: str
    name: str

    def taxpayer(self) -> dict[str, str]:
        """The simulator's ``TaxpayerAccount`` fields."""
        return self.__dict__.copy()

    def supplier(self) -> dict[str, str]:
        """The issuer of the staging invoices, as ``staging.create_staging_db`` takes it."""
        return {"name": self.name, "tin": self.tin, "brn": self.brn}


#: The first is the simulator's default demo taxpayer (the one-id runs' profile); the others
#: are added to the simulator for the multi-client-id run.
ACCOUNTS = (
    Account("demo-taxpayer", "demo-taxpayer-secret", SUPPLIER["tin"], SUPPLIER["brn"], SUPPLIER["name"]),
    Account("bench-taxpayer-2", "bench-taxpayer-2-secret", "C10000000010", "201901000001", "Kedai Contoh Enterprise"),
    Account("bench-taxpayer-3", "bench-taxpayer-3-secret", "C30000000030", "201701000003", "Gudang Ujian Sdn. Bhd."),
)

#: The restart run kills the daemon once this many submissions were accepted (fewer for a
#: tiny backlog): four are in flight at any moment, so some are in doubt when it dies.
RESTART_KILL_AFTER_SUBMISSIONS = 10


# --- the simulator ----------------------------------------------------------------------------


class Simulator:
    def __init__(
        self,
        workdir: Path,
        scale: float,
        latency: Latency,
        token_lifetime_s: int,
        *,
        keep_raw_documents: bool = False,
        accounts: tuple[Account, ...] = (),
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
        if accounts:
            # The demo buyer stays registered: every staging invoice is addressed to it.
            buyer = {"client_id": "demo-buyer", "client_secret": "demo-buyer-secret", "tin": BUYER["tin"], "brn": BUYER["brn"], "name": BUYER["name"]}
            config["taxpayers"] = [account.taxpayer() for account in accounts] + [buyer]
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
    workdir: Path,
    base_url: str,
    erp: Path,
    invoices: int,
    scale: float,
    timeout_s: float,
    safety_factor: float | None = None,
    *,
    erps: tuple[tuple[Account, Path], ...] = (),
) -> Path:
    """A production-like configuration; only times are scaled with the window, and fetch_limit
    is raised above its default only when the backlog is larger (the memory run), so that
    ``run --once`` (which fetches once) takes the whole backlog. No rate-limit backend is set.

    One profile ``bench`` with one source ``erp``; with ``erps``, a profile ``benchN`` and a
    source ``erpN`` for each (account, staging file) instead, ``invoices`` being the backlog of each."""
    s = lambda seconds: repr(round(seconds * scale, 4))  # noqa: E731
    fetch_limit = (
        f"fetch_limit = {invoices}" if invoices > DEFAULT_FETCH_LIMIT else f"# fetch_limit: the default ({DEFAULT_FETCH_LIMIT})"
    )
    # The guard stands for a request's way to MyInvois, here the simulator's event loop noting
    # the arrival, and that does not shrink with a compressed window: it stays the default 0.25 s
    # in real seconds (the default, given per 60 s of window, would be 0.04 s in a 10 s window,
    # less than a busy simulator takes to note an arrival, and a compressed run got 429s).
    arrival_margin = (
        f"arrival_margin_seconds = {round(DEFAULT_ARRIVAL_MARGIN / scale, 4)}"
        if scale < 1
        else f"# arrival_margin_seconds: the default ({DEFAULT_ARRIVAL_MARGIN})"
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
{arrival_margin}
# backend: not set, so the default (state_dir/rate-limits.sqlite)

[observability]
metrics_port = 0
log_format = "json"

"""
    if not erps:
        text += profile_and_source_toml("bench", "erp", ACCOUNTS[0], erp)
    for n, (account, path) in enumerate(erps, start=1):
        text += profile_and_source_toml(f"bench{n}", f"erp{n}", account, path)
    path = workdir / "connector.toml"
    path.write_text(text, "utf-8")
    return path


def profile_and_source_toml(profile: str, source: str, account: Account, erp: Path) -> str:
    return f"""
[profiles.{profile}]
tin = "{account.tin}"
client_id = "{account.client_id}"
client_secret = "{account.client_secret}"

[sources.{source}]
kind = "sql"
profile = "{profile}"

[sources.{source}.options]
url = "sqlite:///{erp}"
"""


def load_average() -> list[float]:
    """The 1, 5 and 15 minute load averages, as ``uptime`` prints them."""
    return [round(v, 2) for v in os.getloadavg()]


def run_child(argv: list[str], workdir: Path, timeout_s: float) -> dict[str, Any]:
    """Run a child to completion; its wall time, CPU time and peak RSS from ``os.wait4``."""
    out = (workdir / "connector.out").open("w")
    err = (workdir / "connector.log").open("w")
    load_at_start = load_average()
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
        "load_average_at_start": load_at_start,
        "load_average_at_end": load_average(),
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


def ledger_size(workdir: Path) -> dict[str, Any]:
    """The SQLite ledger's size on disk (its write-ahead log included, if one was left) per
    document that reached a final state."""
    state = workdir / "state"
    size = sum(path.stat().st_size for path in state.glob("ledger.sqlite*") if not path.name.endswith("-shm"))
    conn = sqlite3.connect(state / "ledger.sqlite")
    try:
        final = conn.execute("SELECT count(*) FROM documents WHERE final_at IS NOT NULL").fetchone()[0]
        # Where the bytes are, per table and index (SQLite's dbstat): what a retention setting
        # that drops some tables' rows would leave is then plain to see.
        by_table = dict(conn.execute("SELECT name, sum(pgsize) FROM dbstat GROUP BY name ORDER BY 2 DESC").fetchall())
    finally:
        conn.close()
    # Right after a run every body is still kept (ledger.keep_bodies_days has not passed): what
    # the ledger holds for good is measured on a copy with the retention applied.
    kept = sqlite_after_retention(state / "ledger.sqlite")
    return {
        "ledger_bytes": size,
        "final_documents": final,
        "ledger_bytes_per_final_document": round(size / final) if final else None,
        "ledger_bytes_by_table": by_table,
        "ledger_bytes_per_final_document_after_retention": kept.get("bytes_per_final_document"),
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
    client_ids: int = 1,
) -> dict[str, Any]:
    """One connector run; ``profile`` = None (plain CLI), "stages" or "cprofile" (profile_driver.py).

    With ``client_ids`` above 1, that many profiles in the one process, each with its own
    client id and its own source of ``invoices`` invoices; the ceiling is theirs together."""
    scale = window_s / LHDN_WINDOW_S
    workdir = fresh_dir(plan_dir / name)
    erp = workdir / "erp.sqlite"
    erps: tuple[tuple[Account, Path], ...] = ()
    if client_ids == 1:
        create_staging_db(erp, invoices)
        staging = [erp]
    else:
        erps = tuple((account, workdir / f"erp{n}.sqlite") for n, account in enumerate(ACCOUNTS[:client_ids], start=1))
        for n, (account, path) in enumerate(erps, start=1):
            create_staging_db(path, invoices, supplier=account.supplier(), prefix=f"BENCH{n}")
        staging = [path for _, path in erps]
    total = invoices * client_ids
    ceiling_per_s = SUBMISSIONS_PER_WINDOW * DOCUMENTS_PER_SUBMISSION / window_s * client_ids
    # Generous, but bounded: ten times the ideal drain time plus a fixed allowance for CPU work.
    timeout_s = total / ceiling_per_s * 10 + 120 + total * 0.01
    token_lifetime_s = 3600 * scale
    accounts = ACCOUNTS[:client_ids] if client_ids > 1 else ()
    with Simulator(workdir, scale, latency, int(token_lifetime_s), accounts=accounts) as sim:
        config = connector_toml(workdir, sim.base_url, erp, invoices, scale, timeout_s, safety_factor, erps=erps)
        if profile:
            argv = [PYTHON, str(HERE / "profile_driver.py"), profile, str(config), str(workdir / f"connector.{profile}")]
        else:
            argv = [CONNECTOR, "--config", str(config), "run", "--once", "--json"]
        child = run_child(argv, workdir, timeout_s + 60)
        stats = sim.stats()
    erp_states: dict[str, int] = {}
    for path in staging:
        for status, count in status_counts(path).items():
            erp_states[status] = erp_states.get(status, 0) + count
    valid = erp_states.get("valid", 0)
    result: dict[str, Any] = {
        "invoices": total,
        **({"client_ids": client_ids, "invoices_per_client_id": invoices} if client_ids > 1 else {}),
        "window_s": window_s,
        "safety_factor": safety_factor if safety_factor is not None else DEFAULT_SAFETY_FACTOR,
        "fetch_limit": max(invoices, DEFAULT_FETCH_LIMIT),
        "rate_limit_backend": RATE_LIMIT_BACKEND,
        "token_lifetime_s": round(token_lifetime_s, 1),
        "erp_states": erp_states,
        "valid": valid,
        **child,
        **ledger_timeline(workdir, child["started_at"]),
        **ledger_size(workdir),
        **api_figures(stats, total),
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
        result["submit_phase_ratio"] = round((total * (submitted - 1) / submitted) / span / ceiling_per_s, 4)
    token_lifetimes = max(1, -(-wall // token_lifetime_s))
    result["logins_per_token_lifetime"] = round(result["logins"] / token_lifetimes / client_ids, 2)
    result["cpu_ms_per_document"] = round(child["cpu_s"] / total * 1000, 3)
    result["cpu_s_per_10000_documents"] = round(child["cpu_s"] / total * 10_000, 2)
    if profile == "stages":
        stages = json.loads((workdir / "connector.stages").read_text("utf-8"))
        seconds = dict(stages["seconds"])
        seconds["other"] = max(0.0, child["cpu_s"] - sum(seconds.values()))
        result["stage_cpu_s"] = {k: round(v, 2) for k, v in seconds.items()}
        result["stage_share"] = {k: round(v / child["cpu_s"], 4) for k, v in seconds.items()}
        result["stage_ms_per_document"] = {k: round(v / total * 1000, 3) for k, v in seconds.items()}
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
        "load_average_at_start": child["load_average_at_start"],
        "load_average_at_end": child["load_average_at_end"],
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


def multi_figures(one: dict[str, Any], several: dict[str, Any]) -> dict[str, Any]:
    """Several client ids in one process against one: the ratio to their ceilings together,
    and how many times one id's throughput they reached."""
    speed_up = several["documents_per_minute"] / one["documents_per_minute"] if one["documents_per_minute"] else None
    keep = ("invoices", "window_s", "wall_s", "documents_per_minute", "ceiling_per_minute", "ratio", "submit_phase_ratio",
            "rate_limited_429", "cpu_s", "cpu_ms_per_document", "peak_rss_mb", "load_average_at_start", "load_average_at_end")
    return {
        "client_ids": several["client_ids"],
        "one_client_id": {k: one.get(k) for k in keep},
        "several_client_ids": several,
        "ratio": several["ratio"],
        "speed_up": round(speed_up, 3) if speed_up is not None else None,
        # What the speed-up would be if each id kept one id's ratio: the rest is lost to sharing one process.
        "speed_up_ideal": several["client_ids"],
    }


def multi_run(plan_dir: Path, plan: Plan, latency: Latency, one: dict[str, Any] | None = None) -> dict[str, Any]:
    """``plan.multi_client_ids`` client ids in one process; ``one`` is the one-id run to compare
    with (the same backlog per id and window), measured here if not given."""
    if one is None:
        one = connector_run("multi-one", plan_dir, plan.multi_invoices, plan.window_s, latency)
    several = connector_run(
        "multi", plan_dir, plan.multi_invoices, plan.window_s, latency, client_ids=plan.multi_client_ids
    )
    return multi_figures(one, several)


def scaling_runs(plan_dir: Path, plan: Plan, latency: Latency, step: Callable[[str], None]) -> list[dict[str, Any]]:
    """Memory runs of growing backlogs, compressed (a tenth of the latencies, a short window):
    the backlog held in the ledger and the process's working set do not depend on the pace."""
    factor = plan.memory_latency_factor
    fast = Latency(**{k: v * factor for k, v in latency.__dict__.items()})
    runs = []
    for invoices in plan.scaling_invoices:
        step(f"scaling: {invoices:,} invoices, window {plan.scaling_window_s:g} s, latency x{factor:g}")
        run = connector_run(f"scaling-{invoices}", plan_dir, invoices, plan.scaling_window_s, fast)
        keep = ("invoices", "window_s", "exit_code", "erp_states", "wall_s", "peak_rss_mb", "cpu_s", "cpu_ms_per_document",
                "ledger_bytes", "final_documents", "ledger_bytes_per_final_document", "ledger_bytes_by_table",
                "ledger_bytes_per_final_document_after_retention", "ratio", "submit_phase_ratio",
                "rate_limited_429", "load_average_at_start", "load_average_at_end")
        runs.append({**{k: run.get(k) for k in keep}, "latency_factor": factor})
    return runs


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


def targets(
    throughput: dict[str, Any], cpu: dict[str, Any], memory: dict[str, Any], multi: dict[str, Any] | None
) -> dict[str, dict[str, Any]]:
    def row(target: str, measured: Any, met: bool) -> dict[str, Any]:
        return {"target": target, "measured": measured, "met": met}

    runs = [throughput, cpu, memory]
    rows = {
        "throughput": row(">= 0.98 of the ceiling", throughput["ratio"], throughput["ratio"] >= 0.98),
        "no_429": row("0 (no fault injected)", sum(r["rate_limited_429"] for r in runs), all(r["rate_limited_429"] == 0 for r in runs)),
        "one_login_per_token_lifetime": row(
            "1 per token lifetime", max(r["logins_per_token_lifetime"] for r in runs), all(r["logins_per_token_lifetime"] <= 1 for r in runs)
        ),
        "get_submission_per_submission": row(
            "<= 3 on average", throughput["get_submission_per_submission"], (throughput["get_submission_per_submission"] or 0) <= 3
        ),
        "cpu_per_document": row(
            f"<= 0.5 ms with {memory['invoices']:,} invoices", memory["cpu_ms_per_document"], memory["cpu_ms_per_document"] <= 0.5
        ),
        "peak_rss": row(
            f"<= 200 MB with {memory['invoices']:,} invoices", round(memory["peak_rss_mb"], 1), memory["peak_rss_mb"] <= 200
        ),
        "ledger_per_final_document": row(
            "<= 3 KB per final document once the bodies' retention passed",
            memory["ledger_bytes_per_final_document_after_retention"],
            (memory["ledger_bytes_per_final_document_after_retention"] or 1e9) <= 3 * 1024,
        ),
    }
    if multi is not None:
        rows["several_client_ids"] = row(
            f">= 2.85 times one id's throughput with {multi['client_ids']} client ids", multi["speed_up"], (multi["speed_up"] or 0) >= 2.85
        )
    return rows


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="30 s window and smaller backlogs: under 2 minutes")
    parser.add_argument("--out", type=Path, help="write the JSON results here (default: print only)")
    parser.add_argument("--workdir", type=Path, default=ROOT / "var" / "benchmarks", help="scratch directory")
    parser.add_argument("--invoices", type=int, help="backlog of the throughput run")
    parser.add_argument("--unguarded-invoices", type=int, help="backlog of the safety_factor = 1.0 run (0: leave it out)")
    parser.add_argument("--profile-invoices", type=int, help="backlog of the profiled run")
    parser.add_argument("--cprofile-invoices", type=int, help="backlog of the cProfile run (top functions; 0: leave it out)")
    parser.add_argument("--memory-invoices", type=int, help="backlog of the memory run")
    parser.add_argument("--naive-seconds", type=float, help="time budget of the naive client")
    parser.add_argument("--restart-invoices", type=int, help="backlog of the restart run")
    parser.add_argument("--multi-invoices", type=int, help="backlog per client id of the multi-client-id run (0: leave it out)")
    parser.add_argument("--scaling-invoices", help="backlogs of the scaling runs, comma-separated (e.g. 100000,300000)")
    parser.add_argument("--window", type=float, help="rate window in seconds (LHDN: 60)")
    parser.add_argument("--only", choices=["restart", "multi", "scaling"], help="run this measurement alone and print its section")
    args = parser.parse_args(argv)

    plan = QUICK if args.quick else FULL
    overrides = {
        "invoices": args.invoices, "profile_invoices": args.profile_invoices,
        "cprofile_invoices": args.cprofile_invoices, "memory_invoices": args.memory_invoices,
        "naive_seconds": args.naive_seconds, "window_s": args.window, "restart_invoices": args.restart_invoices,
        "unguarded_invoices": args.unguarded_invoices, "multi_invoices": args.multi_invoices,
        "scaling_invoices": tuple(int(n) for n in args.scaling_invoices.split(",")) if args.scaling_invoices else None,
    }
    plan = Plan(**{**plan.__dict__, **{k: v for k, v in overrides.items() if v is not None}})
    latency = Latency()
    plan_dir = args.workdir / plan.mode
    started = time.monotonic()
    load_at_start = load_average()

    def step(label: str) -> None:
        print(f"[{time.monotonic() - started:6.1f}s] {label} (load {' '.join(map(str, load_average()))})", file=sys.stderr, flush=True)

    def restart() -> dict[str, Any]:
        step(f"restart: {plan.restart_invoices:,} invoices, SIGKILL while submitting, then run --once")
        return restart_run(plan_dir, plan.restart_invoices, plan.window_s, latency)

    def multi(one: dict[str, Any] | None = None) -> dict[str, Any]:
        step(f"multi: {plan.multi_client_ids} client ids x {plan.multi_invoices:,} invoices, window {plan.window_s:g} s")
        return multi_run(plan_dir, plan, latency, one)

    def header() -> dict[str, Any]:
        return {
            "mode": plan.mode, "measured_at": datetime.now(UTC).isoformat(timespec="seconds"), "machine": machine(),
            "source": source_version(), "plan": plan.__dict__, "latency_at_lhdn_scale": latency.__dict__,
            "load_average_at_start": load_at_start,
        }

    if args.only:
        section = {"restart": restart, "multi": multi, "scaling": lambda: scaling_runs(plan_dir, plan, latency, step)}[args.only]()
        results = {**header(), args.only: section, "load_average_at_end": load_average(), "runtime_s": round(time.monotonic() - started, 1)}
        return _report(results, args.out)

    step(f"throughput: {plan.invoices:,} invoices, window {plan.window_s:g} s")
    throughput = connector_run("throughput", plan_dir, plan.invoices, plan.window_s, latency)
    unguarded = None
    if plan.unguarded_invoices:
        step(f"throughput with safety_factor 1.0: {plan.unguarded_invoices:,} invoices")
        unguarded = connector_run("throughput-sf1", plan_dir, plan.unguarded_invoices, plan.window_s, latency, safety_factor=1.0)
    step(f"profile: {plan.profile_invoices:,} invoices")
    cpu = connector_run("profile", plan_dir, plan.profile_invoices, plan.window_s, latency, profile="stages")
    if plan.cprofile_invoices:
        step(f"cprofile: {plan.cprofile_invoices:,} invoices")
        hot = connector_run("cprofile", plan_dir, plan.cprofile_invoices, plan.window_s, latency, profile="cprofile")
        cpu["top_functions"] = {"invoices": plan.cprofile_invoices, "functions": hot["top_functions"]}
    memory_latency = Latency(**{k: v * plan.memory_latency_factor for k, v in latency.__dict__.items()})
    step(f"memory: {plan.memory_invoices:,} invoices, window {plan.memory_window_s:g} s, latency x{plan.memory_latency_factor:g}")
    memory = connector_run("memory", plan_dir, plan.memory_invoices, plan.memory_window_s, memory_latency)
    step(f"naive: {plan.naive_seconds:g} s")
    naive = naive_run(plan_dir, plan, latency)
    restarted = restart()
    several = None
    if plan.multi_invoices:
        # The throughput run is the one-id run when it has the same backlog per id.
        several = multi(throughput if plan.multi_invoices == plan.invoices else None)
    step("done")

    results = {
        **header(),
        "throughput": throughput,
        "throughput_safety_factor_1": unguarded,
        "cpu": cpu,
        "memory": {**memory, "latency_factor": plan.memory_latency_factor},
        "naive": naive,
        "restart": restarted,
        "multi": several,
        "connector_over_naive": round(throughput["documents_per_minute"] / naive["documents_per_minute"], 1)
        if naive["documents_per_minute"]
        else None,
        "targets": targets(throughput, cpu, memory, several),
        "load_average_at_end": load_average(),
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
