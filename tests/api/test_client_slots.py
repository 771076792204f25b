"""The client hands its rate slot back when the answer (or the failure) is here, in a real backend.

A slot is stamped a window ahead while its call is in flight; the client's release moves it to
the moment the request was completely sent (plus the guard), or, when it never was as far as the
client saw, to the failure. Read back from the SQLite file the limits live in.
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


#: The simulator's processing time for the calls below: the answer comes this long after the
#: request left, so a stamp at the answer and one at the send are told apart by seconds.
PROCESSING_S = 2.0


@pytest.mark.parametrize("endpoint", ["submit", "login"])
def test_a_call_is_counted_from_when_its_request_left_not_from_its_answer(sim, tmp_path, endpoint):
    path = tmp_path / "rate.db"
    with _policy(path) as policy:
        client = MyInvoisClient(sim.base_url, sim.base_url, TAXPAYER, rate_policy=policy, retry_settings=FAST_RETRIES)
        before_slot = 0
        if endpoint == "submit":
            client.login()
            before_slot = len(_stamps(path))
        set_faults(sim.base_url, latency_by_endpoint={endpoint: {"fixed_ms": PROCESSING_S * 1000}})
        sent = time.time()
        if endpoint == "submit":
            assert client.submit([docs.entry()]).submission_uid
        else:
            client.login()
        answered = time.time()
        client.close()
    stamps = _stamps(path)
    assert len(stamps) == before_slot + 1
    guard = policy.settings.guard_seconds()
    assert answered - sent >= PROCESSING_S
    # Not the grant (the guard comes on top of the send), not in flight (a window ahead), not
    # the answer (seconds later): the moment the request was written, plus the guard.
    assert sent + guard <= stamps[-1] <= answered - PROCESSING_S / 2 + guard


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
