"""Run ``myinvois-connector --config FILE run --once --json`` with its CPU time measured per stage.

    python benchmarks/profile_driver.py stages CONFIG.toml OUT.json
    python benchmarks/profile_driver.py cprofile CONFIG.toml OUT.prof

``stages``: the pipeline's entry points are wrapped (see :mod:`stages`) and each call's CPU
time, ``time.thread_time`` of the calling thread, goes to its stage, less the time of stages it
calls: exclusive CPU seconds per stage, written as JSON. Cheap (one clock read per call of an
entry point, a few per document), so the figures are those of an ordinary run.

``cprofile``: every thread under cProfile (which by itself only watches the thread that
enabled it; the connector submits and polls from worker threads), with cProfile's default
clock, merged into one pstats file, for the list of the functions that cost most. cProfile
makes small, frequent calls look dearer than they are: the stage shares come from ``stages``.
"""

from __future__ import annotations

import cProfile
import json
import pstats
import sys
import threading

_profiles: list[tuple[threading.Thread, cProfile.Profile]] = []
_lock = threading.Lock()
_original_run = threading.Thread.run


def _profiled_run(self: threading.Thread) -> None:
    profile = cProfile.Profile()
    with _lock:
        _profiles.append((self, profile))
    profile.enable()
    try:
        _original_run(self)
    finally:
        profile.disable()


def _run_cli(config: str) -> int:
    from connector_core.cli import main as cli

    try:
        cli(["--config", config, "run", "--once", "--json"], standalone_mode=False)
    except SystemExit as exc:  # the CLI exits non-zero when the run did not finish
        return int(exc.code or 0)
    return 0


def main() -> None:
    mode, config, out = sys.argv[1], sys.argv[2], sys.argv[3]
    if mode == "stages":
        from stages import StageClock

        clock = StageClock()
        clock.install()
        code = _run_cli(config)
        with open(out, "w", encoding="utf-8") as fh:
            json.dump(clock.totals(), fh)
        sys.exit(code)

    threading.Thread.run = _profiled_run  # type: ignore[method-assign]
    main_profile = cProfile.Profile()
    main_profile.enable()
    try:
        code = _run_cli(config)
    finally:
        main_profile.disable()
    stats = pstats.Stats(main_profile)
    with _lock:
        finished = [p for t, p in _profiles if not t.is_alive()]
    for profile in finished:
        try:
            stats.add(profile)
        except TypeError:  # a thread that never ran Python code
            pass
    stats.dump_stats(out)
    sys.exit(code)


if __name__ == "__main__":
    main()
