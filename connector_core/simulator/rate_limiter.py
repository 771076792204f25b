"""Per-client, per-endpoint sliding-window limits, and the peak load each client produced.

Two separate windows per (client, endpoint): one holds the requests that were *admitted*
(that is what the limit counts, so a client hammering with 429s does not lock itself out
forever), the other holds *every* arrival, so the statistics show the highest load a client
really put on an endpoint within any window.
"""

from __future__ import annotations

import bisect
import math
from collections import deque
from dataclasses import dataclass


@dataclass(slots=True, frozen=True)
class Decision:
    allowed: bool
    limit: int | None
    remaining: int | None
    retry_after: int = 0  # whole seconds until a slot frees, when refused
    resets_at: float | None = None  # when the oldest admitted request leaves the window


class SlidingWindowLimiter:
    def __init__(self, limits: dict[str, int | None], window_seconds: float) -> None:
        self.limits = dict(limits)
        self.window = window_seconds
        self._admitted: dict[tuple[str, str], deque[float]] = {}
        self._arrivals: dict[tuple[str, str], deque[float]] = {}
        self.peaks: dict[str, dict[str, int]] = {}

    def reset(self) -> None:
        self._admitted.clear()
        self._arrivals.clear()
        self.peaks.clear()

    @staticmethod
    def _insert(times: deque[float], now: float) -> None:
        """Keep the window sorted: calls are stamped at arrival, but a clock step back or a
        caller that took its time before asking can hand in a stamp earlier than the last."""
        if times and now < times[-1]:
            times.insert(bisect.bisect_right(times, now), now)
        else:
            times.append(now)

    def _trim(self, times: deque[float], now: float) -> None:
        cutoff = now - self.window
        while times and times[0] <= cutoff:
            times.popleft()

    def record_arrival(self, client: str, endpoint: str, now: float) -> None:
        times = self._arrivals.setdefault((client, endpoint), deque())
        self._trim(times, now)
        self._insert(times, now)
        per_client = self.peaks.setdefault(client, {})
        if len(times) > per_client.get(endpoint, 0):
            per_client[endpoint] = len(times)

    def check(self, client: str, endpoint: str, now: float) -> Decision:
        """Admit and count the request, or refuse it with the wait until a slot frees."""
        limit = self.limits.get(endpoint)
        if limit is None:
            return Decision(True, None, None)
        times = self._admitted.setdefault((client, endpoint), deque())
        self._trim(times, now)
        if len(times) >= limit:
            frees_at = times[0] + self.window
            wait = max(1, math.ceil(frees_at - now))
            return Decision(False, limit, 0, wait, frees_at)
        self._insert(times, now)
        return Decision(True, limit, limit - len(times))

    def remaining(self, client: str, endpoint: str, now: float) -> Decision:
        """The headers' view without counting a request (used for a refused-by-fault call)."""
        limit = self.limits.get(endpoint)
        if limit is None:
            return Decision(True, None, None)
        times = self._admitted.get((client, endpoint), deque())
        self._trim(times, now)
        return Decision(True, limit, max(0, limit - len(times)))
