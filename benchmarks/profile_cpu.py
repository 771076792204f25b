"""The connector's CPU per document on one SQL-plugin run, and where it goes.

    python benchmarks/profile_cpu.py --invoices 20000 --window 6            # user+sys per document
    python benchmarks/profile_cpu.py --invoices 20000 --window 6 --stages   # plus stage shares
    python benchmarks/profile_cpu.py --invoices 20000 --window 6 --py-spy   # plus py-spy's hot frames

One ``run --once`` of a generated SQLite ERP against the simulator, with the same configuration
as ``benchmarks/run.py`` (its helpers are reused, not copied). A short window keeps the run CPU
bound, which is what this measures; the rate policy is measured by ``run.py``. ``--py-spy``
samples every thread (cProfile would watch only one) holding the GIL (``--gil``: work, not waits)
and sums the samples by connector module and by library. py-spy's own CPU is counted in
``cpu_s`` of such a run: take the CPU per document from a run without it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections import Counter
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))

import run as bench  # noqa: E402

#: Where a sample's time goes, twice over: by the connector module nearest the leaf (who asked
#: for the work), and by the library nearest the leaf (what did it).
_CONNECTOR_MODULES = (
    "document/builder",
    "pipeline/fetch",
    "pipeline/submit",
    "pipeline/sending",
    "pipeline/poll",
    "pipeline/report",
    "pipeline/",
    "connector_core/ledger",
    "connector_core/api",
    "myinvois_sql",
    "connector_core/",
)
_LIBRARIES = ("sqlalchemy", "pydantic", "logging", "orjson", "json/", "httpx", "httpcore", "sqlite3")


def _nearest(frames: list[str], needles: tuple[str, ...]) -> str:
    for frame in reversed(frames):
        for needle in needles:
            if needle in frame:
                return needle
    return "other"


def py_spy_shares(raw: Path, top: int = 25) -> dict[str, object]:
    modules: Counter[str] = Counter()
    libraries: Counter[str] = Counter()
    leaves: Counter[str] = Counter()
    total = 0
    for line in raw.read_text("utf-8").splitlines():
        stack, _, count = line.rpartition(" ")
        if not stack:
            continue
        n = int(count)
        frames = stack.split(";")
        total += n
        modules[_nearest(frames, _CONNECTOR_MODULES)] += n
        libraries[_nearest(frames, _LIBRARIES)] += n
        leaves[frames[-1]] += n

    def shares(counter: Counter[str]) -> dict[str, float]:
        return {k: round(v / total, 4) for k, v in counter.most_common(top)}

    return {
        "samples": total,
        "by_connector_module": shares(modules),
        "by_library": shares(libraries),
        "top_leaves": shares(leaves),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=20_000)
    parser.add_argument("--window", type=float, default=6.0, help="rate window in seconds (LHDN: 60)")
    parser.add_argument("--workdir", type=Path, default=bench.ROOT / "var" / "profile-cpu")
    how = parser.add_mutually_exclusive_group()
    how.add_argument("--stages", action="store_true", help="stage shares from benchmarks/stages.py")
    how.add_argument("--py-spy", action="store_true", help="sample every thread with py-spy")
    args = parser.parse_args()

    latency = bench.Latency()
    load = os.getloadavg()
    if args.stages:
        result = bench.connector_run("stages", args.workdir, args.invoices, args.window, latency, profile="stages")
        keep = ("stage_share", "stage_ms_per_document", "ledger_cpu_s_by_method")
    else:
        result = _run(args, latency)
        keep = ("py_spy",)
    summary = {
        "invoices": args.invoices,
        "valid": result["valid"],
        "exit_code": result["exit_code"],
        "wall_s": round(result["wall_s"], 1),
        "cpu_s": round(result["cpu_s"], 2),
        "cpu_ms_per_document": result["cpu_ms_per_document"],
        "peak_rss_mb": round(result["peak_rss_mb"], 1),
        "load_before": [round(x, 2) for x in load],
        "load_after": [round(x, 2) for x in os.getloadavg()],
        **{k: result[k] for k in keep if k in result},
    }
    print(json.dumps(summary, indent=2))


def _run(args: argparse.Namespace, latency: bench.Latency) -> dict:
    """``connector_run`` without a profile, optionally under ``py-spy record``."""
    scale = args.window / bench.LHDN_WINDOW_S
    workdir = bench.fresh_dir(args.workdir / "run")
    erp = workdir / "erp.sqlite"
    bench.create_staging_db(erp, args.invoices)
    ceiling_per_s = bench.SUBMISSIONS_PER_WINDOW * bench.DOCUMENTS_PER_SUBMISSION / args.window
    timeout_s = args.invoices / ceiling_per_s * 10 + 120 + args.invoices * 0.01
    with bench.Simulator(workdir, scale, latency, int(3600 * scale)) as sim:
        config = bench.connector_toml(workdir, sim.base_url, erp, args.invoices, scale, timeout_s)
        argv = [bench.CONNECTOR, "--config", str(config), "run", "--once", "--json"]
        raw = workdir / "py-spy.txt"
        if args.py_spy:
            spy = str(Path(sys.executable).parent / "py-spy")
            argv = [spy, "record", "--format", "raw", "--rate", "250", "--gil", "--output", str(raw), "--", *argv]
        result = bench.run_child(argv, workdir, timeout_s + 60)
    result["valid"] = bench.status_counts(erp).get("valid", 0)
    result["cpu_ms_per_document"] = round(result["cpu_s"] / args.invoices * 1000, 3)
    if args.py_spy:
        result["py_spy"] = py_spy_shares(raw)
    return result


if __name__ == "__main__":
    main()
