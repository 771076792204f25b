"""Is the connector doing its job? The answer ``/healthz`` gives to a container runtime or a
monitoring probe.

Two questions decide it, because they are what an unattended connector fails at silently:

* Has every scheduled cycle succeeded recently? A cycle is late when its last success (or,
  before the first one, the moment it was registered) is more than ``multiplier`` times its
  interval ago. One failed run is not unhealthy; a cycle that keeps failing or stops running is.
* Can it still log in? ``max_consecutive_login_failures`` refused logins in a row for one
  profile, with no success in between, make it unhealthy until a login of that profile works.

And one question that degrades it without making it unhealthy: can each profile reach MyInvois,
and does MyInvois accept its login? An LHDN outage is not cured by restarting the connector, so
it does not fail the probe (still 200); ``/healthz`` says ``"degraded"`` and names the profile
and the cause (``details.degraded``) until MyInvois answers, or the login works, again.

A failing ERP source degrades it too (200, ``"degraded"``, named in ``details.degraded``): a
cycle succeeds even when one source's plugin fails (the other sources go on), so each source
has its own count, and ``max_consecutive_source_failures`` fetch cycles in a row in which its
fetch or write-back failed degrade the connector until a cycle in which the source worked. A
wrong password or a missing database is not cured by restarting the connector either.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any


@dataclass
class _Cycle:
    interval_s: float
    registered_at: float
    last_success: float | None = None
    last_finished: float | None = None
    last_ok: bool | None = None
    consecutive_failures: int = 0


@dataclass
class _Logins:
    consecutive_failures: int = 0
    last_success: float | None = None
    last_failure: float | None = None
    last_error: str | None = field(default=None)


@dataclass
class _SourceRecord:
    consecutive_failures: int = 0
    last_error: str | None = None


class HealthMonitor:
    """Healthy / unhealthy, with the reasons in words an operator can act on.

    Feed it through :class:`~connector_core.observability.metrics.ConnectorMetrics` (which
    forwards ``cycle_finished`` and ``login``) or directly. Thread-safe.
    """

    def __init__(
        self,
        *,
        healthy_cycle_multiplier: float = 3.0,
        max_consecutive_login_failures: int = 3,
        max_consecutive_source_failures: int = 3,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if healthy_cycle_multiplier <= 1:
            raise ValueError(
                "healthy_cycle_multiplier must be greater than 1, or every slightly slow cycle is an outage"
            )
        if max_consecutive_login_failures < 1:
            raise ValueError("max_consecutive_login_failures must be at least 1")
        if max_consecutive_source_failures < 1:
            raise ValueError("max_consecutive_source_failures must be at least 1")
        self.multiplier = healthy_cycle_multiplier
        self.max_login_failures = max_consecutive_login_failures
        self.max_source_failures = max_consecutive_source_failures
        self._clock = clock
        self._lock = threading.Lock()
        self._cycles: dict[str, _Cycle] = {}
        self._logins: dict[str, _Logins] = {}
        self._sources: dict[str, _SourceRecord] = {}
        self._myinvois: dict[tuple[str, str], str] = {}

    def register_cycle(self, name: str, interval_s: float) -> None:
        """Expect cycle ``name`` to succeed about every ``interval_s`` seconds from now on."""
        if interval_s <= 0:
            raise ValueError(f"cycle {name!r}: interval must be positive, not {interval_s}")
        with self._lock:
            existing = self._cycles.get(name)
            if existing is not None:
                existing.interval_s = interval_s
            else:
                self._cycles[name] = _Cycle(interval_s=interval_s, registered_at=self._clock())

    def cycle_finished(self, name: str, ok: bool, *, at: float | None = None) -> None:
        """A run of cycle ``name`` ended, successfully or not. Unregistered cycles are recorded
        in the details but never make the connector unhealthy."""
        now = self._clock() if at is None else at
        with self._lock:
            cycle = self._cycles.get(name)
            if cycle is None:
                cycle = self._cycles[name] = _Cycle(interval_s=0.0, registered_at=now)
            cycle.last_finished = now
            cycle.last_ok = ok
            if ok:
                cycle.last_success = now
                cycle.consecutive_failures = 0
            else:
                cycle.consecutive_failures += 1

    def login(self, ok: bool, *, profile: str = "default", error: str | None = None) -> None:
        """A login attempt of ``profile`` succeeded or failed."""
        now = self._clock()
        with self._lock:
            state = self._logins.setdefault(profile, _Logins())
            if ok:
                state.consecutive_failures = 0
                state.last_success = now
                state.last_error = None
            else:
                state.consecutive_failures += 1
                state.last_failure = now
                state.last_error = error

    def source_cycle(self, source: str, ok: bool, *, error: str | None = None) -> None:
        """A fetch cycle ended in which ``source`` worked (``ok``) or in which its fetch or
        write-back failed (``error``: the last failure, for /healthz)."""
        with self._lock:
            record = self._sources.setdefault(source, _SourceRecord())
            if ok:
                record.consecutive_failures = 0
                record.last_error = None
            else:
                record.consecutive_failures += 1
                record.last_error = error

    def myinvois_problem(self, profile: str, kind: str, problem: str | None) -> None:
        """``kind`` (``unreachable``, ``login_refused``) of ``profile`` began (``problem``: in
        words, no secret) or ended (None). Degrades /healthz while it lasts."""
        with self._lock:
            if problem is None:
                self._myinvois.pop((profile, kind), None)
            else:
                self._myinvois[(profile, kind)] = problem

    def status(self) -> tuple[bool, list[str], dict[str, Any]]:
        """``(ok, reasons, details)``: ``reasons`` says what is wrong (empty when healthy);
        ``details`` holds every cycle's and profile's figures for the health endpoint."""
        now = self._clock()
        reasons: list[str] = []
        cycles: dict[str, Any] = {}
        logins: dict[str, Any] = {}
        sources: dict[str, Any] = {}
        failing_sources: list[str] = []
        with self._lock:
            for name, cycle in sorted(self._cycles.items()):
                since = cycle.last_success if cycle.last_success is not None else cycle.registered_at
                allowed = cycle.interval_s * self.multiplier
                late = cycle.interval_s > 0 and now - since > allowed
                if late:
                    what = "has not succeeded" if cycle.last_success is not None else "has not succeeded once"
                    reasons.append(
                        f"cycle '{name}' {what} for {now - since:.0f} s (runs every {cycle.interval_s:g} s; "
                        f"unhealthy after {allowed:g} s; {cycle.consecutive_failures} failed run(s) in a row)"
                    )
                cycles[name] = {
                    "interval_s": cycle.interval_s,
                    "last_success_age_s": None if cycle.last_success is None else round(now - cycle.last_success, 3),
                    "last_ok": cycle.last_ok,
                    "consecutive_failures": cycle.consecutive_failures,
                    "late": late,
                }
            for profile, state in sorted(self._logins.items()):
                failing = state.consecutive_failures >= self.max_login_failures
                if failing:
                    reasons.append(
                        f"login of profile '{profile}' failed {state.consecutive_failures} times in a row"
                        + (f" (last error: {state.last_error})" if state.last_error else "")
                        + "; check its client id and secret"
                    )
                logins[profile] = {
                    "consecutive_failures": state.consecutive_failures,
                    "last_success_age_s": None if state.last_success is None else round(now - state.last_success, 3),
                    "failing": failing,
                }
            for name, record in sorted(self._sources.items()):
                failing = record.consecutive_failures >= self.max_source_failures
                if failing:
                    failing_sources.append(
                        f"source '{name}' failed in {record.consecutive_failures} fetch cycles in a row"
                        + (f" (last error: {record.last_error})" if record.last_error else "")
                        + "; run 'myinvois-connector doctor' to check its connection and rights"
                    )
                sources[name] = {"consecutive_failed_cycles": record.consecutive_failures, "failing": failing}
            degraded = [problem for _key, problem in sorted(self._myinvois.items())] + failing_sources
        return (not reasons, reasons, {"cycles": cycles, "logins": logins, "sources": sources, "degraded": degraded})
