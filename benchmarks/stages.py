"""CPU time of the connector per pipeline stage, and the costliest functions of a profile.

:class:`StageClock` wraps the entry points of each stage; a call's CPU time
(``time.thread_time`` of its thread) goes to its stage *less* the time of any wrapped call it
makes, so the stages add up without double counting:

* fetch  — ``pipeline.fetch.fetch_source``: the SQL plugin's reads and model building,
  pre-validation, the ledger copy's JSON, the plugin's ``mark_queued``;
* build  — ``pipeline.submit.prepare``: the invoice read back from the ledger's JSON,
  ``document.builder.build`` (build_document + serialize) and the size check;
* hash   — sha256 and Base64 of each document (``BuiltDocument.from_content``) and the
  fingerprint sha256 of each fetched invoice;
* ledger — every public method of the ledger's parts (SQLAlchemy and SQLite included);
* submit — ``pipeline.submit.submit_profile`` / ``send_batch``: packing and the API client's
  Submit Documents call (JSON body, HTTP, rate limiter);
* poll   — ``pipeline.poll.poll_profile`` / ``_poll_safely``: Get Submission calls and parsing;
* report — ``pipeline.report.report_source``: the plugin's write-back and one log line per batch.

Everything else (start-up and imports, settings, the rate limiter's leak thread, garbage
collection outside any stage) is "other": the process's CPU time less the stages.
"""

from __future__ import annotations

import functools
import pstats
import threading
import time
from collections import defaultdict
from collections.abc import Callable
from typing import Any

STAGES = ("fetch", "build", "hash", "ledger", "submit", "poll", "report")


class StageClock:
    def __init__(self) -> None:
        self._local = threading.local()
        self._lock = threading.Lock()
        self._seconds: dict[str, float] = defaultdict(float)
        self._calls: dict[str, int] = defaultdict(int)
        self._detail: dict[str, float] = defaultdict(float)

    def wrap(self, stage: str, fn: Callable[..., Any], detail: str | None = None) -> Callable[..., Any]:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            stack = getattr(self._local, "stack", None)
            if stack is None:
                stack = self._local.stack = []
            stack.append(0.0)  # CPU time of wrapped calls made by this one
            started = time.thread_time()
            try:
                return fn(*args, **kwargs)
            finally:
                elapsed = time.thread_time() - started
                inner = stack.pop()
                if stack:
                    stack[-1] += elapsed
                with self._lock:
                    self._seconds[stage] += elapsed - inner
                    self._calls[stage] += 1
                    if detail is not None:
                        self._detail[detail] += elapsed - inner

        return timed

    def install(self) -> None:
        """Patch the entry points where their callers look them up."""
        import hashlib
        import types

        from connector_core import runtime
        from connector_core.document import builder
        from connector_core.ledger.intake import Intake
        from connector_core.ledger.journal import Journal
        from connector_core.ledger.polls import Polls
        from connector_core.ledger.queries import Status
        from connector_core.ledger.sends import Sends
        from connector_core.ledger.writeback import WriteBack
        from connector_core.pipeline import fetch, poll, submit

        fetch.fetch_source = self.wrap("fetch", fetch.fetch_source)
        fetch.hashlib = types.SimpleNamespace(sha256=self.wrap("hash", hashlib.sha256))
        submit.prepare = self.wrap("build", submit.prepare)
        builder.BuiltDocument.from_content = classmethod(self.wrap("hash", builder.BuiltDocument.from_content.__func__))
        # The ledger's parts, each one writer's job (see connector_core/ledger/store.py).
        for part in (Intake, Sends, Polls, WriteBack, Status, Journal):
            for name, member in list(vars(part).items()):
                if callable(member) and not name.startswith("_") and not isinstance(member, (staticmethod, classmethod, type)):
                    setattr(part, name, self.wrap("ledger", member, detail=f"{part.__name__}.{name}"))
        runtime.submit_profile = self.wrap("submit", runtime.submit_profile)
        submit.send_batch = self.wrap("submit", submit.send_batch)
        runtime.poll_profile = self.wrap("poll", runtime.poll_profile)
        poll._poll_safely = self.wrap("poll", poll._poll_safely)  # noqa: SLF001
        runtime.report_source = self.wrap("report", runtime.report_source)

    def totals(self) -> dict[str, Any]:
        with self._lock:
            return {
                "seconds": {s: self._seconds.get(s, 0.0) for s in STAGES},
                "calls": {s: self._calls.get(s, 0) for s in STAGES},
                "detail": dict(sorted(self._detail.items(), key=lambda item: -item[1])),
            }


#: Where a thread waits rather than works; cProfile's wall clock counts them, they are no CPU.
WAITING = ("acquire' of '_thread", "'recv' of", "SimpleQueue", "time.sleep", "recv_into", "select", ".poll>", "'wait'", "_thread.lock", "epoll")


def top_functions(path: str, limit: int = 15) -> list[dict[str, object]]:
    """The functions with the most time of their own, waits left out."""
    raw = pstats.Stats(path).stats  # type: ignore[attr-defined]
    rows = [item for item in raw.items() if not any(w in item[0][2] for w in WAITING)]
    rows.sort(key=lambda item: item[1][2], reverse=True)
    out = []
    for (filename, line, name), (_cc, nc, tt, ct, _callers) in rows[:limit]:
        short = filename.split("site-packages/")[-1].split("/work/main/")[-1].split("lib/python3.11/")[-1]
        out.append({"function": f"{short}:{line}({name})", "calls": nc, "own_s": round(tt, 3), "cumulative_s": round(ct, 3)})
    return out
