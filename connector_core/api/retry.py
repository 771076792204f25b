"""Every retry, back-off and timeout number of the API client, in one place.

Nothing else in ``connector_core.api`` holds a literal delay or attempt count: change the policy
here (or through :class:`RetrySettings` in the configuration) and the whole client follows.

Why these defaults:

* reads (``GET``) are idempotent, so a timeout, a dropped connection or a 5xx is retried a few
  times with exponential back-off and *full jitter* (a random delay between 0 and the exponential
  bound), so that many connectors recovering from the same LHDN outage do not retry in step;
* a server's ``Retry-After`` is honoured as given, but only up to ``max_retry_after_s``: a longer
  wait is handed back to the caller (as ``RateLimited``) instead of parking a worker thread;
* failed logins back off exponentially from ``login_backoff_base_s``; the base is never below
  60 s / 12, the login limit per minute, so even a tight loop of failures stays under LHDN's
  throttle for ``/connect/token``;
* while MyInvois cannot be reached at all (connection refused, timeouts, 5xx), sending and
  polling of a profile back off as a whole from ``outage_initial_delay_s`` up to
  ``outage_max_delay_s`` (:func:`outage_delay`): an outage of hours then costs a few attempts
  an hour and a few log lines, not one per cycle beat.
"""

from __future__ import annotations

import email.utils
import math
import random
import time
from collections.abc import Callable

import httpx
from pydantic import BaseModel, ConfigDict, Field, model_validator

#: LHDN allows 12 logins per minute per client id: never try logging in faster than this.
MIN_LOGIN_INTERVAL_S = 60.0 / 12


class RetrySettings(BaseModel):
    """Timeouts, attempts and back-off of the MyInvois client. All durations in seconds."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    connect_timeout_s: float = Field(10.0, gt=0, description="Time allowed to open a TCP/TLS connection.")
    # A 5 MB submission over a slow line, or LHDN under load, can take a while to answer.
    read_timeout_s: float = Field(60.0, gt=0, description="Time allowed between bytes of the response.")
    write_timeout_s: float = Field(60.0, gt=0, description="Time allowed to send the request body.")
    pool_timeout_s: float = Field(10.0, gt=0, description="Time allowed to wait for a free connection.")

    read_max_attempts: int = Field(4, ge=1, description="Attempts for an idempotent request (first try included).")
    base_delay_s: float = Field(0.5, gt=0, description="Back-off bound of the first retry; doubles each time.")
    max_delay_s: float = Field(30.0, gt=0, description="Upper bound of one back-off delay.")
    jitter: bool = Field(True, description="Full jitter: sleep a random time between 0 and the bound.")

    max_retry_after_s: float = Field(
        120.0, ge=0, description="Longest Retry-After the client waits for by itself; longer ones go to the caller."
    )
    rate_limited_max_retries: int = Field(
        3, ge=0, description="How many 429 answers one call absorbs (waiting as told) before raising RateLimited."
    )
    default_retry_after_s: float = Field(
        5.0, gt=0, description="Wait after a 429 that carries no usable Retry-After header."
    )

    stale_token_max_repeats: int = Field(
        2,
        ge=0,
        description="401s one call absorbs when its token had already been replaced by another thread's login "
        "(besides the one repeat after its own fresh login).",
    )

    login_backoff_base_s: float = Field(MIN_LOGIN_INTERVAL_S, gt=0, description="Wait after the first failed login.")
    login_backoff_cap_s: float = Field(600.0, gt=0, description="Longest wait between failed logins.")

    outage_initial_delay_s: float = Field(
        5.0,
        gt=0,
        description="While MyInvois cannot be reached: wait after the first failed attempt; doubles with each further one.",
    )
    outage_max_delay_s: float = Field(
        300.0, gt=0, description="While MyInvois cannot be reached: longest wait between two attempts."
    )
    outage_summary_interval_s: float = Field(
        300.0, gt=0, description="While MyInvois cannot be reached: how often one 'still unreachable' line is logged."
    )

    @model_validator(mode="after")
    def _login_backoff_within_limit(self) -> RetrySettings:
        if self.login_backoff_base_s < MIN_LOGIN_INTERVAL_S:
            raise ValueError(
                f"login_backoff_base_s must be at least {MIN_LOGIN_INTERVAL_S:g} s: "
                "LHDN allows 12 logins per minute per client id"
            )
        return self

    def timeout(self) -> httpx.Timeout:
        return httpx.Timeout(
            connect=self.connect_timeout_s,
            read=self.read_timeout_s,
            write=self.write_timeout_s,
            pool=self.pool_timeout_s,
        )


def backoff_delay(attempt: int, settings: RetrySettings, rng: Callable[[], float] = random.random) -> float:
    """Delay before retry number ``attempt`` (1 = the first retry): capped exponential, full jitter."""
    bound = min(settings.max_delay_s, settings.base_delay_s * (2 ** max(0, attempt - 1)))
    return bound * rng() if settings.jitter else bound


def parse_retry_after(value: str | None, now: Callable[[], float] = time.time) -> float | None:
    """Seconds to wait from a ``Retry-After`` header (delta-seconds or an HTTP date); None if absent or unreadable."""
    if value is None:
        return None
    value = value.strip()
    if not value:
        return None
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when is None:
            return None
        seconds = when.timestamp() - now()
    if math.isnan(seconds) or math.isinf(seconds):
        return None
    return max(0.0, seconds)


def rate_limited_delay(retry_after: float | None, settings: RetrySettings) -> float:
    """How long to stay away after a 429: the server's word, or our default when it gave none."""
    return settings.default_retry_after_s if retry_after is None else retry_after


def should_wait_for(retry_after: float, settings: RetrySettings) -> bool:
    """Whether a call may sleep through this Retry-After itself rather than hand it to the caller."""
    return retry_after <= settings.max_retry_after_s


def outage_delay(consecutive_failures: int, settings: RetrySettings, rng: Callable[[], float] = random.random) -> float:
    """Wait before the next attempt to reach MyInvois after ``consecutive_failures`` failed ones:
    capped exponential; with ``jitter`` a random time between half the bound and the bound (never
    near 0: a floor keeps an outage from being hammered, the spread keeps connectors out of step)."""
    if consecutive_failures <= 0:
        return 0.0
    bound = min(settings.outage_max_delay_s, settings.outage_initial_delay_s * (2 ** min(consecutive_failures - 1, 60)))
    return bound * (0.5 + 0.5 * rng()) if settings.jitter else bound


def login_backoff(consecutive_failures: int, settings: RetrySettings) -> float:
    """Minimum time between the last failed login and the next attempt (no jitter: it is a floor)."""
    if consecutive_failures <= 0:
        return 0.0
    delay = settings.login_backoff_base_s * (2 ** (consecutive_failures - 1))
    return max(MIN_LOGIN_INTERVAL_S, min(settings.login_backoff_cap_s, delay))
