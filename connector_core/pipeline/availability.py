"""Can a profile reach MyInvois, and does MyInvois accept its login? Told once per episode.

Without this, every cycle beat (the daemon's poll every 2 s, ``run --once``'s loop) tried
MyInvois again while it was down, and each try wrote a warning and a ledger row: an outage of
ten minutes left hundreds of each and hid its own start. Here, per profile:

* **unreachable** (connection refused or timed out, a login that got no usable answer, polls
  that still failed after the client's retries, or 5xx on submit twice in a row): one
  WARNING and one incident when it starts, naming the profile, the endpoint and the cause; a
  WARNING every ``retry.outage_summary_interval_s`` while it lasts ("still unreachable for N
  min, M attempts"); one INFO line when MyInvois answers again. Meanwhile the stages ask
  :meth:`Availability.may_try` before calling MyInvois, and the answer is "no" until a delay
  that doubles from ``retry.outage_initial_delay_s`` to ``retry.outage_max_delay_s`` has passed
  (:func:`connector_core.api.retry.outage_delay`);
* **login refused** (400/401 from ``/connect/token``: the credentials): one ERROR and one
  incident naming the profile (never the secret), and one INFO line once a login works again.
  How often a refused login is retried is the token provider's login back-off, not this.

Observers hear ``myinvois_unreachable`` / ``myinvois_reachable`` and ``login_refused`` /
``login_accepted`` with the profile, for /healthz and metrics.
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from connector_core.api.retry import RetrySettings, outage_delay

log = logging.getLogger("connector_core.pipeline.availability")


@dataclass
class _Outage:
    started: float
    endpoint: str
    cause: str
    attempts: int = 1
    next_try: float = 0.0
    last_said: float = 0.0


class Availability:
    """Per profile: is MyInvois unreachable (since when, how often tried), is its login refused.

    ``incident(kind, message, subject)`` records an incident (the ledger's journal);
    ``emit(event, **fields)`` tells the observers; ``clock`` is a monotonic clock, injectable so
    that a test can live through a long outage in no time. Thread-safe: the submitters and the
    poller of one connector share it."""

    def __init__(
        self,
        settings: RetrySettings,
        *,
        incident: Callable[[str, str, str | None], None],
        emit: Callable[..., None],
        clock: Callable[[], float] = time.monotonic,
        rng: Callable[[], float] = random.random,
    ) -> None:
        self.settings = settings
        self.clock = clock
        self._incident = incident
        self._emit = emit
        self._rng = rng
        self._lock = threading.Lock()
        self._outages: dict[str, _Outage] = {}
        self._refused: dict[str, str] = {}
        self._server_failures: dict[str, int] = {}

    # --- questions ------------------------------------------------------------------------

    def may_try(self, profile: str) -> bool:
        """Whether a stage may call MyInvois for ``profile`` now (not inside an outage's back-off)."""
        with self._lock:
            outage = self._outages.get(profile)
            return outage is None or self.clock() >= outage.next_try

    def seconds_until_try(self, profile: str) -> float:
        with self._lock:
            outage = self._outages.get(profile)
            return 0.0 if outage is None else max(0.0, outage.next_try - self.clock())

    def unreachable_for(self, profile: str) -> float | None:
        """Seconds since MyInvois stopped answering ``profile``; None when it answers."""
        with self._lock:
            outage = self._outages.get(profile)
            return None if outage is None else self.clock() - outage.started

    def describe_outage(self, profile: str) -> str | None:
        with self._lock:
            outage = self._outages.get(profile)
            if outage is None:
                return None
            return f"{outage.endpoint}: {outage.cause}; {outage.attempts} attempt(s) in {self.clock() - outage.started:.0f} s"

    def login_refused_reason(self, profile: str) -> str | None:
        with self._lock:
            return self._refused.get(profile)

    # --- what happened --------------------------------------------------------------------

    def unreachable(self, profile: str, endpoint: str, cause: str) -> None:
        """An attempt to reach MyInvois for ``profile`` failed without an answer that counts."""
        now = self.clock()
        with self._lock:
            known = self._outages.get(profile)
            starting = known is None
            if known is None:
                outage = self._outages[profile] = _Outage(started=now, endpoint=endpoint, cause=cause, last_said=now)
            elif now < known.next_try:
                # A call that was already in flight when the back-off started (four submitters
                # and a poller fail together): the same failed round, not a new attempt. Counting
                # each one doubled the delay per concurrent caller, so a burst of faults parked a
                # profile for minutes.
                outage = known
                outage.endpoint, outage.cause = endpoint, cause
            else:
                outage = known
                outage.attempts += 1
                outage.endpoint, outage.cause = endpoint, cause
            if starting or now >= outage.next_try:
                outage.next_try = now + outage_delay(outage.attempts, self.settings, self._rng)
            summary_due = not starting and now - outage.last_said >= self.settings.outage_summary_interval_s
            if summary_due:
                outage.last_said = now
            attempts, down_for, wait = outage.attempts, now - outage.started, outage.next_try - now
        if starting:
            message = (
                f"MyInvois cannot be reached for profile {profile!r} ({endpoint}: {cause}); nothing is lost: invoices wait, "
                f"and sending and polling try again after {wait:.3g} s, backing off up to {self.settings.outage_max_delay_s:g} s"
            )
            log.warning("%s", message)
            self._incident("myinvois_unreachable", message, profile)
            self._emit("myinvois_unreachable", profile=profile, endpoint=endpoint, cause=cause)
        elif summary_due:
            log.warning(
                "MyInvois still unreachable for profile %r for %.0f min, %d attempts (last: %s: %s); next try in %.3g s",
                profile,
                down_for / 60,
                attempts,
                endpoint,
                cause,
                wait,
            )

    def server_failed(self, profile: str, endpoint: str, cause: str) -> None:
        """A 5xx on a submit: the call may have arrived (it is in doubt), and MyInvois is
        failing. One alone is not an outage (LHDN has the odd failure); a second in a row, with
        no good answer between, is, and so is any during an outage."""
        with self._lock:
            count = self._server_failures[profile] = self._server_failures.get(profile, 0) + 1
            ongoing = profile in self._outages
        if ongoing or count >= 2:
            self.unreachable(profile, endpoint, cause)

    def reached(self, profile: str) -> None:
        """MyInvois answered ``profile`` (any answer that shows it is up, refusals included)."""
        with self._lock:
            self._server_failures.pop(profile, None)
            outage = self._outages.pop(profile, None)
            now = self.clock()
        if outage is not None:
            log.info(
                "MyInvois reachable again for profile %r after %.0f s unreachable (%d failed attempts); sending goes on",
                profile,
                now - outage.started,
                outage.attempts,
            )
            self._emit("myinvois_reachable", profile=profile, seconds=now - outage.started, attempts=outage.attempts)

    def login_refused(self, profile: str, reason: str) -> bool:
        """MyInvois refused the login of ``profile`` (credentials). ``reason`` holds no secret.
        True when this starts a refusal (the caller's alerts go out once, too)."""
        with self._lock:
            first = profile not in self._refused
            self._refused[profile] = reason
        if first:
            message = (
                f"login of profile {profile!r} refused: {reason}; its invoices wait (nothing was sent) "
                f"until [profiles.{profile}] client_id, client_secret and on_behalf_of are fixed"
            )
            log.error("%s", message)
            self._incident("login_failed", message, profile)
            self._emit("login_refused", profile=profile, reason=reason)
        else:
            log.debug("login of profile %r still refused: %s", profile, reason)
        return first

    def login_accepted(self, profile: str) -> None:
        with self._lock:
            was = self._refused.pop(profile, None)
        if was is not None:
            log.info("MyInvois accepts the login of profile %r again", profile)
            self._emit("login_accepted", profile=profile)

    def snapshot(self) -> dict[str, Any]:
        """What /healthz and ``run --once`` tell about each troubled profile."""
        now = self.clock()
        with self._lock:
            return {
                "unreachable": {
                    p: {
                        "since_s": round(now - o.started, 3),
                        "attempts": o.attempts,
                        "endpoint": o.endpoint,
                        "cause": o.cause,
                    }
                    for p, o in self._outages.items()
                },
                "login_refused": dict(self._refused),
            }
