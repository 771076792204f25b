"""Connector processes for the multi-process client test (spawned: they share only files and the simulator)."""

from __future__ import annotations

import time

from connector_core.api import Credentials, Endpoint, MyInvoisClient, RateLimitSettings, RatePolicy, TokenCache


def validate_tins(
    base_url: str, backend: str, prefix: str, token_file: str, limit: int, window: float, calls: int, start_at: float
) -> list[int]:
    """Call Validate TIN ``calls`` times as one connector process would; return the statuses seen."""
    statuses: list[int] = []
    policy = RatePolicy(
        RateLimitSettings(
            backend=backend,
            key_prefix=prefix,
            window_seconds=window,
            overrides={Endpoint.validate_tin: limit},
            safety_factor=0.8,
        )
    )
    client = MyInvoisClient(
        base_url,
        base_url,
        Credentials(client_id="demo-taxpayer", client_secret="demo-taxpayer-secret"),
        rate_policy=policy,
        token_cache=TokenCache(token_file),
        listeners=[lambda e: statuses.append(e.status) if e.endpoint is Endpoint.validate_tin else None],
    )
    try:
        policy.blocked_until("demo-taxpayer", Endpoint.validate_tin)  # open the backend before the race
        time.sleep(max(0.0, start_at - time.time()))
        for _ in range(calls):
            client.validate_tin("C25845632020", "BRN", "202001234567")
    finally:
        client.close()
        policy.close()
    return statuses


def ready(_: int) -> bool:
    return True


def submit_documents(
    base_url: str, settings: RateLimitSettings, token_file: str, entries: list[dict], start_at: float
) -> list[int]:
    """Submit each entry as its own submission, as fast as the rate policy allows; return the statuses seen."""
    statuses: list[int] = []
    policy = RatePolicy(settings)
    client = MyInvoisClient(
        base_url,
        base_url,
        Credentials(client_id="demo-taxpayer", client_secret="demo-taxpayer-secret"),
        rate_policy=policy,
        token_cache=TokenCache(token_file),
        listeners=[lambda e: statuses.append(e.status) if e.endpoint is Endpoint.submit else None],
    )
    try:
        client.login()  # the token (shared through the file) and the backend are ready before the race
        time.sleep(max(0.0, start_at - time.time()))
        for entry in entries:
            client.submit([entry])
    finally:
        client.close()
        policy.close()
    return statuses
