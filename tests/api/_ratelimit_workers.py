"""Code run in child processes by the rate-limit tests (spawned: no state shared but the backend)."""

from __future__ import annotations

import time

from connector_core.api import Endpoint, RateLimitSettings, RatePolicy

CLIENT_ID = "shared-client-id"

#: Our window is longer than LHDN's by this, per 60 s: 0.5 s at the tests' 2 s window. It absorbs
#: the delay between a grant and the moment a test notes it, as in production it absorbs the
#: delay between a grant and the call's arrival at LHDN, so tests count grants in LHDN's window.
MARGIN_PER_MINUTE = 15.0


def settings(backend: str, prefix: str, limit: int, window: float) -> RateLimitSettings:
    return RateLimitSettings(
        backend=backend,
        key_prefix=prefix,
        window_seconds=window,
        arrival_margin_seconds=MARGIN_PER_MINUTE,
        safety_factor=1.0,
        overrides={Endpoint.submit: limit},
    )


def ready(_: int) -> bool:
    return True


def hammer(backend: str, prefix: str, limit: int, window: float, calls: int, start_at: float) -> list[float]:
    """Take ``calls`` submit slots as fast as allowed; return when each was granted (epoch seconds)."""
    with RatePolicy(settings(backend, prefix, limit, window)) as policy:
        policy.blocked_until(CLIENT_ID, Endpoint.submit)  # open connections / tables before the start line
        time.sleep(max(0.0, start_at - time.time()))
        granted = []
        for _ in range(calls):
            policy.acquire(CLIENT_ID, Endpoint.submit)
            granted.append(time.time())
        return granted


def slot_granted_at(backend: str, prefix: str, limit: int, window: float) -> float:
    """When one acquire() of Get Submission returns in a fresh process (epoch seconds)."""
    with RatePolicy(settings(backend, prefix, limit, window)) as policy:
        policy.acquire(CLIENT_ID, Endpoint.get_submission)
        return time.time()
