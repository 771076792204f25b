"""Client-side rate limits with real backends, shared by real processes.

The window is compressed to 2 s so a test shows several windows in a few seconds.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest
from pydantic import ValidationError

from connector_core.api import Endpoint, RateLimitSettings, RatePolicy

from . import _ratelimit_workers as workers

WINDOW = 2.0
LIMIT = 4
CALLS_PER_PROCESS = 3


def test_limits_by_profile_safety_factor_and_overrides():
    production = RateLimitSettings()
    assert production.limit_for(Endpoint.submit) == 97  # 100 RPM * 0.97
    assert production.limit_for(Endpoint.login) == 11  # 12 * 0.97 rounded down
    assert production.limit_for(Endpoint.get_submission) == 291
    sandbox = RateLimitSettings(profile="sandbox", safety_factor=1.0)
    assert sandbox.limit_for(Endpoint.submit) == 50
    assert sandbox.limit_for(Endpoint.search) == 6
    off = RateLimitSettings(profile="off", overrides={Endpoint.submit: 400})
    assert off.limit_for(Endpoint.get_submission) is None
    assert off.limit_for(Endpoint.submit) == 388
    tiny = RateLimitSettings(safety_factor=0.01)
    assert tiny.limit_for(Endpoint.login) == 1  # never zero


@pytest.mark.parametrize("backend", ["mysql://x", "sqlite:/relative", "file:///x"])
def test_unknown_backend_is_refused_with_the_choices(backend):
    with pytest.raises(ValidationError, match="sqlite:///path"):
        RateLimitSettings(backend=backend)


def test_off_profile_never_waits():
    with RatePolicy(RateLimitSettings(profile="off", window_seconds=WINDOW)) as policy:
        started = time.monotonic()
        for _ in range(50):
            policy.acquire("c", Endpoint.search)
        assert time.monotonic() - started < 1.0


def test_memory_backend_blocks_threads_of_one_process():
    from concurrent.futures import ThreadPoolExecutor

    settings = workers.settings("memory", "mem", LIMIT, WINDOW)
    with RatePolicy(settings) as policy, ThreadPoolExecutor(4) as pool:

        def take(_):
            policy.acquire("c", Endpoint.submit)
            return time.time()

        stamps = list(pool.map(take, range(2 * LIMIT)))
    _assert_within_limit(stamps, LIMIT, WINDOW)
    assert max(stamps) - min(stamps) >= WINDOW - 0.1  # the second half had to wait a window


def _assert_within_limit(stamps: list[float], limit: int, window: float) -> None:
    """No span shorter than the window holds more than ``limit`` grants.

    Stamps are taken just after acquire() returns, so they may lag the limiter's own clock by a
    few milliseconds; 0.1 s of slack keeps the check about the limit, not about scheduling.
    """
    stamps = sorted(stamps)
    for i, start in enumerate(stamps):
        in_window = [t for t in stamps[i:] if t < start + window - 0.1]
        assert len(in_window) <= limit, (
            f"{len(in_window)} grants within {window} s starting at +{start - stamps[0]:.2f} s"
        )


def _shared_backend_case(backend: str, prefix: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(workers.ready, range(2))  # both children past their imports before the race starts
        start_at = time.time() + 0.3
        results = pool.starmap(workers.hammer, [(backend, prefix, LIMIT, WINDOW, CALLS_PER_PROCESS, start_at)] * 2)
        stamps = [t for r in results for t in r]
        assert len(stamps) == 2 * CALLS_PER_PROCESS
        _assert_within_limit(stamps, LIMIT, WINDOW)
        # 6 grants at 4 per window need two windows: the processes really waited for each other.
        assert max(stamps) - min(stamps) >= WINDOW - 0.2

        # A 429 seen here (this process) makes a process that never saw it wait.
        with RatePolicy(workers.settings(backend, prefix, LIMIT, WINDOW)) as policy:
            policy.record_retry_after(workers.CLIENT_ID, Endpoint.get_submission, 1.0)
            assert policy.blocked_until(workers.CLIENT_ID, Endpoint.get_submission) is not None
            # A shorter Retry-After later must not cut the longer block short.
            policy.record_retry_after(workers.CLIENT_ID, Endpoint.get_submission, 0.1)
            waited = pool.apply(workers.wait_for_slot, (backend, prefix, LIMIT, WINDOW))
        assert 0.7 <= waited <= 2.0


def test_two_processes_share_one_sqlite_file(tmp_path, unique_prefix):
    _shared_backend_case(f"sqlite:///{tmp_path / 'rate.db'}", unique_prefix.replace("-", "_"))


@pytest.mark.services
def test_two_processes_share_redis(redis_url, unique_prefix):
    _shared_backend_case(redis_url, unique_prefix)


@pytest.mark.parametrize(
    "backend_fixture",
    [
        pytest.param("redis_url", marks=pytest.mark.services),
        pytest.param("postgres_url", marks=pytest.mark.services),
        "sqlite",
    ],
)
def test_a_slot_stamped_later_but_stored_first_still_counts(backend_fixture, request, tmp_path, unique_prefix):
    """The race CI once lost on Redis, replayed deterministically.

    Process A stamps its call after process B does, but A's check-and-insert reaches the backend
    first. B's check must still see A's call, or both get the last slot of the window.
    """
    from pyrate_limiter import Rate, RateItem

    from connector_core.api.ratelimit import _open_backend

    url = f"sqlite:///{tmp_path / 'rate.db'}" if backend_fixture == "sqlite" else request.getfixturevalue(backend_fixture)
    backend = _open_backend(url)
    try:
        bucket = backend.make_bucket(unique_prefix.replace("-", "_"), [Rate(1, 2000)])
        stamped_by_b = bucket.now()
        assert bucket.put(RateItem("a", stamped_by_b + 50)) is True  # A: later stamp, stored first
        assert bucket.put(RateItem("b", stamped_by_b)) is False  # B: the window is already full
    finally:
        backend.close()


@pytest.mark.services
def test_redis_script_is_reloaded_after_redis_forgets_it(redis_url, unique_prefix):
    """A Redis restart or SCRIPT FLUSH must not break every later acquire() with NOSCRIPT."""
    import redis

    settings = workers.settings(redis_url, unique_prefix, LIMIT, WINDOW)
    with RatePolicy(settings) as policy:
        policy.acquire(workers.CLIENT_ID, Endpoint.submit)
        redis.Redis.from_url(redis_url).script_flush()
        policy.acquire(workers.CLIENT_ID, Endpoint.submit)
        bucket = policy._factory.bucket_for(policy._name(workers.CLIENT_ID, Endpoint.submit))
        assert bucket.count() == 2


@pytest.mark.services
def test_two_processes_share_postgresql(postgres_url, unique_prefix):
    _shared_backend_case(postgres_url, unique_prefix.replace("-", "_"))


def test_search_is_also_spaced_as_lhdn_asks():
    # "1 request every 5 seconds": with the window compressed to 6 s that is 0.5 s apart.
    with RatePolicy(RateLimitSettings(window_seconds=6)) as policy:
        stamps = []
        for _ in range(3):
            policy.acquire("c", Endpoint.search)
            stamps.append(time.monotonic())
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(0.45 <= g <= 0.8 for g in gaps), gaps
