"""The client hands its rate slot back when the answer (or the failure) is here, in a real backend.

A slot is stamped a window ahead while its call is in flight; the client's release moves it to
the answer's time (plus the guard). Read back from the SQLite file the limits live in.
"""

from __future__ import annotations

import sqlite3
import time

import pytest

from connector_core.api import ApiError, MyInvoisClient, RateLimitSettings, RatePolicy, RetriableError, RetrySettings

from . import _documents as docs
from ._throwaway_redis import free_port
from .conftest import FAST_RETRIES, TAXPAYER, set_faults

WINDOW = 6.0


def _stamps(path) -> list[float]:
    conn = sqlite3.connect(path)
    try:
        return [row[0] for row in conn.execute("SELECT stamp FROM myinvois_rate_slot ORDER BY stamp")]
    finally:
        conn.close()


def _policy(path) -> RatePolicy:
    return RatePolicy(RateLimitSettings(backend=f"sqlite:///{path}", window_seconds=WINDOW))


def test_a_call_is_counted_from_its_answer(sim, tmp_path):
    path = tmp_path / "rate.db"
    set_faults(sim.base_url, latency_by_endpoint={"validate_tin": {"fixed_ms": 300}})
    with _policy(path) as policy:
        client = MyInvoisClient(sim.base_url, sim.base_url, TAXPAYER, rate_policy=policy, retry_settings=FAST_RETRIES)
        client.login()
        before_login_slot = len(_stamps(path))
        sent = time.time()
        assert client.validate_tin(docs.DEMO_TIN, "BRN", "202001234567") is True
        answered = time.time()
        client.close()
    stamps = _stamps(path)
    assert len(stamps) == before_login_slot + 1
    guard = policy.settings.guard_seconds()
    # Not the grant (before the 0.3 s on the way), not in flight (a window ahead): the answer.
    assert sent + 0.3 <= stamps[-1] <= answered + guard


def test_a_call_whose_answer_was_lost_is_counted_from_the_failure(sim, tmp_path):
    path = tmp_path / "rate.db"
    retries = RetrySettings(read_max_attempts=1, base_delay_s=0.01, max_delay_s=0.01)
    with _policy(path) as policy:
        client = MyInvoisClient(sim.base_url, sim.base_url, TAXPAYER, rate_policy=policy, retry_settings=retries)
        client.login()
        set_faults(sim.base_url, lost_response_rate=1.0)  # the connection drops instead of the answer
        with pytest.raises(ApiError):
            client.submit([docs.entry()])
        failed = time.time()
        client.close()
    # Stamped at the failure, not left in flight (a window ahead) until the window after next.
    stamps = _stamps(path)
    assert len(stamps) == 2  # the login's and the call's
    assert max(stamps) <= failed + policy.settings.guard_seconds()


def test_a_login_that_failed_is_counted_from_its_failure(tmp_path):
    path = tmp_path / "rate.db"
    nowhere = f"http://127.0.0.1:{free_port()}"
    with _policy(path) as policy:
        client = MyInvoisClient(nowhere, nowhere, TAXPAYER, rate_policy=policy, retry_settings=FAST_RETRIES)
        with pytest.raises(RetriableError):
            client.login()
        failed = time.time()
        client.close()
    stamps = _stamps(path)
    assert len(stamps) == 1
    assert stamps[0] <= failed + policy.settings.guard_seconds()
