"""How much MyInvois load one simulator process on one core absorbs, over loopback HTTP.

The reference load is what one client id may legally put on production MyInvois:
100 submissions of 100 documents per minute plus 300 Get Submission calls per minute.
The script starts the simulator as its own process pinned to one CPU (rate limits off, so
the limiter never hides a slow server), pre-builds every submission body, then drives the
load open-loop (requests leave on schedule whether or not earlier ones were answered) at
1x, 2x, 4x ... the reference for a few seconds each, reading the server's CPU time from
/proc. It stops at the first multiple the server cannot keep up with, or at --max-multiple,
and prints CPU-seconds per minute of reference load and the highest sustained multiple.

    .venv/bin/python benchmarks/simulator_capacity.py                # about a minute
    .venv/bin/python benchmarks/simulator_capacity.py --fill-documents 100000   # memory check too

Bounded: every phase has a fixed length, requests time out, and the whole run is capped by
--max-seconds, after which it stops and reports what it measured.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import re
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

import httpx

from connector_core.simulator.demo import demo_invoice, submission_body

SUBMISSIONS_PER_MINUTE = 100
DOCUMENTS_PER_SUBMISSION = 100
GET_SUBMISSIONS_PER_MINUTE = 300
CLOCK_TICKS = os.sysconf("SC_CLK_TCK")
FORM = {"client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret", "grant_type": "client_credentials"}


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process, from /proc (Linux)."""
    with open(f"/proc/{pid}/stat") as handle:
        fields = handle.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def rss_mib(pid: int) -> float:
    with open(f"/proc/{pid}/status") as handle:
        for line in handle:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def start_simulator(cpu: int | None) -> tuple[subprocess.Popen, str]:
    command = [sys.executable, "-c", "from connector_core.cli import main; main()", "simulator", "--port", "0",
               "--rate-profile", "off", "--validation-delay", "1", "--per-document-delay", "0.01",
               "--log-level", "warning"]
    process = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "PYTHONUNBUFFERED": "1"})
    if cpu is not None:
        os.sched_setaffinity(process.pid, {cpu})
    line = process.stdout.readline()
    match = re.search(r"listening on (http://\S+)", line)
    if not match:
        process.kill()
        raise SystemExit(f"the simulator did not start: {line}{process.stdout.read()}")
    return process, match.group(1)


def build_bodies(count: int, prefix: str, lines: int) -> list[bytes]:
    """Distinct submissions (unique invoice numbers), so none is a duplicate of another."""
    issued = datetime.now(timezone.utc) - timedelta(seconds=5)
    bodies = []
    for s in range(count):
        documents = [(demo_invoice(f"{prefix}-{s}-{d}", issued_at=issued, lines=lines), f"{prefix}-{s}-{d}")
                     for d in range(DOCUMENTS_PER_SUBMISSION)]
        bodies.append(json.dumps(submission_body(documents), separators=(",", ":")).encode())
    return bodies


@dataclass
class PhaseResult:
    multiple: float
    seconds: float
    submits_sent: int = 0
    polls_sent: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    submit_latencies: list[float] = field(default_factory=list)
    poll_latencies: list[float] = field(default_factory=list)
    server_cpu: float = 0.0
    wall: float = 0.0
    errors: int = 0

    @property
    def cpu_share(self) -> float:
        return self.server_cpu / self.wall if self.wall else float("nan")

    def p95(self, values: list[float]) -> float:
        if len(values) < 2:
            return values[0] if values else float("nan")
        return statistics.quantiles(values, n=20)[18]

    def kept_up(self, max_p95: float) -> bool:
        answered_ok = self.statuses.get("202", 0) + self.statuses.get("200", 0)
        expected = self.submits_sent + self.polls_sent
        return (self.errors == 0 and answered_ok >= 0.99 * expected and self.cpu_share < 0.9
                and self.p95(self.submit_latencies) < max_p95)


async def run_phase(base_url: str, token: str, pid: int, bodies: list[bytes], multiple: float, seconds: float,
                    uids: list[str], timeout: float) -> PhaseResult:
    result = PhaseResult(multiple, seconds)
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    limits = httpx.Limits(max_connections=200, max_keepalive_connections=200)
    submit_interval = 60.0 / (SUBMISSIONS_PER_MINUTE * multiple)
    poll_interval = 60.0 / (GET_SUBMISSIONS_PER_MINUTE * multiple)
    async with httpx.AsyncClient(base_url=base_url, timeout=timeout, limits=limits) as client:

        async def call(kind: str, method: str, url: str, content: bytes | None = None) -> None:
            started = time.perf_counter()
            try:
                response = await client.request(method, url, content=content, headers=headers)
            except httpx.HTTPError:
                result.errors += 1
                return
            elapsed = time.perf_counter() - started
            result.statuses[str(response.status_code)] = result.statuses.get(str(response.status_code), 0) + 1
            if kind == "submit":
                result.submit_latencies.append(elapsed)
                if response.status_code == 202:
                    uids.append(response.json()["submissionUid"])
            else:
                result.poll_latencies.append(elapsed)

        tasks: list[asyncio.Task] = []
        cpu_before, wall_before = cpu_seconds(pid), time.perf_counter()
        next_submit = next_poll = wall_before
        end = wall_before + seconds
        while True:
            now = time.perf_counter()
            if now >= end:
                break
            if now >= next_submit and bodies:
                tasks.append(asyncio.create_task(call("submit", "POST", "/api/v1.0/documentsubmissions", bodies.pop())))
                result.submits_sent += 1
                next_submit += submit_interval
            if now >= next_poll and uids:
                uid = uids[result.polls_sent % len(uids)]
                tasks.append(asyncio.create_task(call("poll", "GET", f"/api/v1.0/documentsubmissions/{uid}")))
                result.polls_sent += 1
                next_poll += poll_interval
            elif now >= next_poll:
                next_poll += poll_interval  # nothing submitted yet to poll
            await asyncio.sleep(max(0.0, min(next_submit, next_poll) - time.perf_counter()))
        await asyncio.gather(*tasks)
        result.wall = time.perf_counter() - wall_before
        result.server_cpu = cpu_seconds(pid) - cpu_before
    return result


async def fill(base_url: str, token: str, documents: int, lines: int, deadline: float) -> int:
    """Submit ``documents`` valid documents as fast as the server takes them (memory check)."""
    headers = {"Authorization": f"Bearer {token}", "Content-Type": "application/json"}
    issued = datetime.now(timezone.utc) - timedelta(seconds=5)
    template = json.dumps(demo_invoice("FILL-TEMPLATE", issued_at=issued, lines=lines), separators=(",", ":"))
    sent = 0
    async with httpx.AsyncClient(base_url=base_url, timeout=60) as client:
        batch = 0
        while sent < documents and time.monotonic() < deadline:
            count = min(DOCUMENTS_PER_SUBMISSION, documents - sent)
            docs = [(template.replace("FILL-TEMPLATE", f"FILL-{batch}-{d}").encode(), f"FILL-{batch}-{d}")
                    for d in range(count)]
            response = await client.post("/api/v1.0/documentsubmissions",
                                         content=json.dumps(submission_body(docs)).encode(), headers=headers)
            response.raise_for_status()
            sent += len(response.json()["acceptedDocuments"])
            batch += 1
    return sent


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--phase-seconds", type=float, default=12.0, help="length of each load phase")
    parser.add_argument("--max-multiple", type=float, default=8.0, help="highest multiple of the reference load")
    parser.add_argument("--max-seconds", type=float, default=240.0, help="hard cap on the whole run")
    parser.add_argument("--lines", type=int, default=5, help="invoice lines per document (5 = about 5.6 KB)")
    parser.add_argument("--max-p95", type=float, default=2.0, help="submit p95 latency (s) still counted as keeping up")
    parser.add_argument("--fill-documents", type=int, default=0, help="afterwards, hold this many documents; report RSS")
    parser.add_argument("--server-cpu", type=int, default=0, help="CPU the server is pinned to (-1: no pinning)")
    args = parser.parse_args()
    run_deadline = time.monotonic() + args.max_seconds

    server_cpu = None if args.server_cpu < 0 else args.server_cpu
    others = sorted(os.sched_getaffinity(0) - ({server_cpu} if server_cpu is not None else set()))
    if server_cpu is not None and others:
        os.sched_setaffinity(0, set(others))  # keep the load generator off the server's core
    process, base_url = start_simulator(server_cpu)
    try:
        token = httpx.post(base_url + "/connect/token", data=FORM).json()["access_token"]
        print(f"simulator at {base_url}, pid {process.pid}, pinned to CPU {server_cpu}; load generator on {others}")
        print(f"reference load: {SUBMISSIONS_PER_MINUTE} submissions x {DOCUMENTS_PER_SUBMISSION} documents + "
              f"{GET_SUBMISSIONS_PER_MINUTE} Get Submission per minute; documents of {args.lines} lines")
        rss_start = rss_mib(process.pid)
        uids: list[str] = []
        results: list[PhaseResult] = []
        multiple = 1.0
        while multiple <= args.max_multiple and time.monotonic() < run_deadline - args.phase_seconds * 2:
            needed = int(SUBMISSIONS_PER_MINUTE * multiple * args.phase_seconds / 60) + 2
            bodies = build_bodies(needed, f"M{multiple:g}", args.lines)
            size = sum(map(len, bodies)) / len(bodies)
            result = asyncio.run(run_phase(base_url, token, process.pid, bodies, multiple, args.phase_seconds, uids,
                                           timeout=30))
            results.append(result)
            print(f"{multiple:>4g}x: {result.submits_sent} submissions ({size / 1e6:.2f} MB each), "
                  f"{result.polls_sent} polls in {result.wall:.1f} s; server CPU {result.server_cpu:.2f} s "
                  f"({100 * result.cpu_share:.0f}% of one core); submit p50/p95 "
                  f"{statistics.median(result.submit_latencies or [0]) * 1000:.0f}/"
                  f"{result.p95(result.submit_latencies) * 1000:.0f} ms, poll p95 "
                  f"{result.p95(result.poll_latencies) * 1000:.0f} ms; statuses {result.statuses}; "
                  f"transport errors {result.errors}")
            if not result.kept_up(args.max_p95):
                print(f"      -> {multiple:g}x is beyond what one core sustains")
                break
            multiple *= 2
        sustained = [r for r in results if r.kept_up(args.max_p95)]
        if results:
            base = results[0]
            per_minute = base.server_cpu / base.wall * 60 / base.multiple
            print(f"\nCPU-seconds per minute of reference load: {per_minute:.1f} "
                  f"(= {100 * per_minute / 60:.0f}% of one core)")
            print(f"theoretical ceiling on one core: {60 / per_minute:.1f}x the reference load")
            best = max((r.multiple for r in sustained), default=0)
            print(f"highest multiple measured as sustained: {best:g}x "
                  f"(stopped at {results[-1].multiple:g}x{'' if results[-1] in sustained else ', which fell behind'})")
        stats = httpx.get(base_url + "/_simulator/stats", timeout=60).json()
        held = sum(stats["documents_by_status"].values())
        print(f"documents held: {held}, RSS {rss_mib(process.pid):.0f} MiB (started at {rss_start:.0f} MiB)")
        if args.fill_documents > held:
            started = time.monotonic()
            added = asyncio.run(fill(base_url, token, args.fill_documents - held, args.lines, run_deadline))
            stats = httpx.get(base_url + "/_simulator/stats", timeout=120).json()
            held = sum(stats["documents_by_status"].values())
            rss = rss_mib(process.pid)
            print(f"filled {added} more documents in {time.monotonic() - started:.0f} s: {held} held, RSS {rss:.0f} MiB "
                  f"({(rss - rss_start) * 1024 / max(held, 1):.1f} KiB per document incl. the stored original)")
            timed = time.perf_counter()
            httpx.get(base_url + "/_simulator/stats", timeout=120)
            print(f"GET /_simulator/stats over {held} documents: {(time.perf_counter() - timed) * 1000:.0f} ms")
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()


if __name__ == "__main__":
    main()
