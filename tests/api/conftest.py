"""A simulator on loopback for the client tests, reset before each test."""

from __future__ import annotations

import httpx
import pytest

from connector_core.api import Credentials, MyInvoisClient, RateLimitSettings, RatePolicy, RetrySettings, TokenCache
from connector_core.simulator import SimulatorConfig, ValidationConfig, run_in_thread

TAXPAYER = Credentials(client_id="demo-taxpayer", client_secret="demo-taxpayer-secret")
#: Fast retries: the tests check what is retried and how often, not how long we wait.
FAST_RETRIES = RetrySettings(base_delay_s=0.01, max_delay_s=0.05)


@pytest.fixture(scope="module")
def simulator():
    config = SimulatorConfig(validation=ValidationConfig(delay_seconds=0.2, per_document_seconds=0.0))
    with run_in_thread(config) as sim:
        yield sim


@pytest.fixture()
def sim(simulator):
    """The module's simulator with counters, documents and rate windows cleared, faults off."""
    httpx.post(f"{simulator.base_url}/_simulator/reset").raise_for_status()
    set_faults(simulator.base_url)
    return simulator


def set_faults(base_url: str, **faults) -> None:
    httpx.post(f"{base_url}/_simulator/faults", json=faults).raise_for_status()


def stats(base_url: str) -> dict:
    return httpx.get(f"{base_url}/_simulator/stats").json()


def requests_of(base_url: str, endpoint: str) -> dict[str, int]:
    return stats(base_url)["requests"].get(endpoint, {})


@pytest.fixture()
def make_client(sim, tmp_path):
    """Build clients against the simulator; all are closed after the test."""
    made: list[MyInvoisClient] = []

    def make(credentials: Credentials = TAXPAYER, **kwargs) -> MyInvoisClient:
        kwargs.setdefault("retry_settings", FAST_RETRIES)
        kwargs.setdefault("rate_policy", RatePolicy(RateLimitSettings(profile="off")))
        client = MyInvoisClient(sim.base_url, sim.base_url, credentials, **kwargs)
        made.append(client)
        return client

    yield make
    for client in made:
        client.close()
        client.rate_policy.close()


@pytest.fixture()
def token_cache_path(tmp_path):
    return tmp_path / "state" / "tokens.json"


__all__ = ["FAST_RETRIES", "TAXPAYER", "TokenCache", "requests_of", "set_faults", "stats"]
