"""A failing rate-limit backend: reported as RateBackendUnavailable before anything is sent, and outlived.

Outages are real: a throw-away redis-server stopped and started again (never the shared one),
a PostgreSQL URL where nothing listens, a SQLite file locked by another connection.
"""

from __future__ import annotations

import sqlite3
import time
from datetime import datetime, timedelta, timezone

import pytest

from connector_core.api import (
    Endpoint,
    MyInvoisClient,
    RateBackendUnavailable,
    RateLimitSettings,
    RatePolicy,
    RetriableError,
)

from . import _documents as docs
from . import _ratelimit_workers as workers
from ._throwaway_redis import free_port
from .conftest import FAST_RETRIES, TAXPAYER, stats
from .test_ratelimit import _assert_within_limit

WINDOW = 2.0
LIMIT = 3


def _settings(backend: str, **changes) -> RateLimitSettings:
    values = dict(
        backend=backend,
        window_seconds=WINDOW,
        overrides={Endpoint.submit: LIMIT},
        backend_timeout_seconds=1.0,
    )
    values.update(changes)
    return RateLimitSettings(**values)


def test_the_error_says_retriable_not_sent_and_is_exported():
    import connector_core.api as api

    assert issubclass(RateBackendUnavailable, RetriableError)
    assert "RateBackendUnavailable" in api.__all__


#: Every call the client offers, each one MyInvois API.
CALLS = {
    "login": lambda c: c.login(),
    "submit": lambda c: c.submit([docs.entry()]),
    "get_submission": lambda c: c.get_submission("SUBMISSION"),
    "get_document_details": lambda c: c.get_document_details("DOC"),
    "get_document": lambda c: c.get_document_raw("DOC"),
    "search": lambda c: c.search_documents(datetime.now(timezone.utc) - timedelta(days=1), datetime.now(timezone.utc)),
    "cancel": lambda c: c.cancel_document("DOC", "wrong buyer"),
    "reject": lambda c: c.reject_document("DOC", "not ours"),
    "validate_tin": lambda c: c.validate_tin(docs.DEMO_TIN, "BRN", "202001234567"),
}


def test_every_call_raises_before_sending_when_the_backend_is_down_from_the_start(sim):
    # Credentials in the URL must not reach the message.
    url = f"redis://:hunter2-secret@127.0.0.1:{free_port()}/0"
    for name, call in CALLS.items():
        with RatePolicy(_settings(url)) as policy:  # constructing it needs no backend
            client = MyInvoisClient(
                sim.base_url, sim.base_url, TAXPAYER, rate_policy=policy, retry_settings=FAST_RETRIES
            )
            with pytest.raises(RateBackendUnavailable) as down:
                call(client)
            client.close()
        message = str(down.value)
        assert "hunter2" not in message, name
        assert down.value.backend in message and "redis://127.0.0.1:" in message, name
        assert "nothing was sent" in message and "redis-cli" in message, name
    assert stats(sim.base_url)["requests"] == {}  # not one request reached MyInvois, not even a login


def test_a_restarted_redis_is_reported_then_used_again_and_the_window_outlives_it(sim, throwaway_redis):
    with RatePolicy(_settings(throwaway_redis.url)) as policy:
        client = MyInvoisClient(sim.base_url, sim.base_url, TAXPAYER, rate_policy=policy, retry_settings=FAST_RETRIES)
        granted = []
        for _ in range(LIMIT):
            granted.append(workers.call(policy, client_id=TAXPAYER.client_id))
        client.login()
        sent_before = stats(sim.base_url)["requests"]

        throwaway_redis.stop()
        for name, call in CALLS.items():
            if name == "login":
                continue  # the token is cached: nothing to send, nothing to pace
            with pytest.raises(RateBackendUnavailable, match="unavailable"):
                call(client)
        assert stats(sim.base_url)["requests"] == sent_before  # nothing sent while it was down

        throwaway_redis.start()  # empty: no persistence, and Redis forgot the loaded scripts
        assert policy.granted_in_backend(TAXPAYER.client_id, Endpoint.submit) == 0
        # The same policy carries on by itself: reconnects, reloads its script ...
        assert client.validate_tin(docs.DEMO_TIN, "BRN", "202001234567") is True
        for _ in range(LIMIT):
            granted.append(workers.call(policy, client_id=TAXPAYER.client_id))
        assert policy.granted_in_backend(TAXPAYER.client_id, Endpoint.submit) == LIMIT
        client.close()
    # ... and its own record of the grants before the restart kept the window Redis forgot.
    _assert_within_limit(granted, LIMIT, WINDOW)


def test_a_locked_sqlite_file_is_reported_and_outlived(tmp_path):
    path = tmp_path / "rate.db"
    with RatePolicy(_settings(f"sqlite:///{path}", backend_timeout_seconds=0.2)) as policy:
        policy.acquire(TAXPAYER.client_id, Endpoint.submit)
        blocker = sqlite3.connect(path, isolation_level=None)
        blocker.execute("BEGIN EXCLUSIVE")  # another program holding the write lock
        try:
            with pytest.raises(RateBackendUnavailable, match="locked") as down:
                policy.acquire(TAXPAYER.client_id, Endpoint.submit)
            assert str(path) in str(down.value)
        finally:
            blocker.execute("ROLLBACK")
            blocker.close()
        policy.acquire(TAXPAYER.client_id, Endpoint.submit)
        assert policy.granted_in_backend(TAXPAYER.client_id, Endpoint.submit) == 2


def test_an_unreachable_postgresql_is_reported_without_its_password():
    url = f"postgresql://connector:pg-secret-pw@127.0.0.1:{free_port()}/rates"
    with RatePolicy(_settings(url, backend_timeout_seconds=0.5)) as policy:
        with pytest.raises(RateBackendUnavailable) as down:
            policy.acquire(TAXPAYER.client_id, Endpoint.submit)
    message = str(down.value)
    assert "pg-secret-pw" not in message and "connector@" not in message
    assert down.value.backend == url.replace("connector:pg-secret-pw@", "") and down.value.backend in message
    assert "pg_isready" in message


def test_policies_sharing_a_redis_that_restarted_empty_wait_a_whole_window(throwaway_redis):
    """Two policies (two processes' worth) share a Redis that restarts without its keys: neither
    knows what the other granted in the window before, so each grants nothing for one whole
    counting window, and the pair never puts more than the limit into a window."""
    slept: dict[str, list[float]] = {"a": [], "b": []}
    a = RatePolicy(_settings(throwaway_redis.url), sleep=lambda s: (slept["a"].append(s), time.sleep(s)))
    b = RatePolicy(_settings(throwaway_redis.url), sleep=lambda s: (slept["b"].append(s), time.sleep(s)))
    window = a.settings.counting_window_seconds()
    try:
        granted = []
        for policy in (a, b):
            granted.append(workers.call(policy, client_id=TAXPAYER.client_id))
        throwaway_redis.stop()
        throwaway_redis.start()  # empty: the windows, the scripts and the marker are gone
        for name, policy in (("a", a), ("b", b)):
            before = len(slept[name])
            for _ in range(LIMIT):
                granted.append(workers.call(policy, client_id=TAXPAYER.client_id))
            # The first call after the restart waited out (nearly) a whole window.
            assert max(slept[name][before:], default=0.0) >= window * 0.9, slept[name]
    finally:
        a.close()
        b.close()
    _assert_within_limit(granted, LIMIT, WINDOW)


def test_a_policy_that_saw_no_restart_does_not_wait(throwaway_redis):
    slept: list[float] = []
    with RatePolicy(_settings(throwaway_redis.url), sleep=lambda s: (slept.append(s), time.sleep(s))) as policy:
        for _ in range(LIMIT):
            policy.acquire(TAXPAYER.client_id, Endpoint.submit)
    assert slept == []  # a fresh Redis at first start is not a restart: no pause
