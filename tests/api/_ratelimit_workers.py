"""Code run in child processes by the rate-limit tests (spawned: no state shared but the backend)."""

from __future__ import annotations

import time

from connector_core.api import Endpoint, RateLimitSettings, RatePolicy

CLIENT_ID = "shared-client-id"


def settings(backend: str, prefix: str, limit: int, window: float) -> RateLimitSettings:
    # The default guard (a few ms at a 2 s window): the tests note each call inside its slot,
    # between grant and release, as LHDN counts a call between its sending and its answer; so
    # no margin for the noting delay is needed, as none is for the network's in production.
    return RateLimitSettings(
        backend=backend,
        key_prefix=prefix,
        window_seconds=window,
        safety_factor=1.0,
        overrides={Endpoint.submit: limit},
    )


def call(policy: RatePolicy, endpoint: Endpoint = Endpoint.submit, client_id: str = CLIENT_ID) -> float:
    """One call through ``policy``: the moment it is "counted" (epoch seconds), noted inside its slot."""
    with policy.slot(client_id, endpoint):
        return time.time()


def ready(_: int) -> bool:
    return True


def hammer(backend: str, prefix: str, limit: int, window: float, calls: int, start_at: float) -> list[float]:
    """Make ``calls`` submit calls as fast as allowed; return when each was counted (epoch seconds)."""
    with RatePolicy(settings(backend, prefix, limit, window)) as policy:
        policy.blocked_until(CLIENT_ID, Endpoint.submit)  # open connections / tables before the start line
        time.sleep(max(0.0, start_at - time.time()))
        return [call(policy) for _ in range(calls)]


def slot_granted_at(backend: str, prefix: str, limit: int, window: float) -> float:
    """When one Get Submission call is counted in a fresh process (epoch seconds)."""
    with RatePolicy(settings(backend, prefix, limit, window)) as policy:
        return call(policy, Endpoint.get_submission)
