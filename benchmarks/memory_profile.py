"""The memory run's configuration (benchmarks/run.py: 100,000 invoices, 15 s window, a tenth of
the latencies) with the CPU time attributed to stages, as the throughput profile is.

    .venv/bin/python benchmarks/memory_profile.py [--invoices 100000] [--out benchmarks/results/memory-stages.json]

run.py profiles a 10,000-invoice backlog; costs that grow with the size of the ledger (a query
that reads the whole documents table on every cycle) only show at 100,000. About 3 minutes.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

import run  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--invoices", type=int, default=run.FULL.memory_invoices)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--workdir", type=Path, default=run.ROOT / "var" / "benchmarks" / "full")
    args = parser.parse_args()
    factor = run.FULL.memory_latency_factor
    latency = run.Latency(**{k: v * factor for k, v in run.Latency().__dict__.items()})
    result = run.connector_run("memory-stages", args.workdir, args.invoices, run.FULL.memory_window_s, latency, profile="stages")
    result = {"source": run.source_version(), "latency_factor": factor, **result}
    text = json.dumps(result, indent=2, default=str)
    if args.out:
        args.out.write_text(text + "\n", "utf-8")
    print(text)


if __name__ == "__main__":
    main()
