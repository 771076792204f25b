"""Client-side rate limits with real backends, shared by real processes.

The window is compressed to 2 s so a test shows several windows in a few seconds. Grants are
noted by the tests just after acquire() returns and counted in LHDN's window; the limiter's own
window is longer by the arrival margin, which absorbs that noting delay on a busy machine just
as in production it absorbs the delay between a grant and the call's arrival at LHDN.
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
    # LHDN's figures as published: the arrival margin, not a safety factor, keeps us under them.
    assert production.safety_factor == 1.0
    assert production.limit_for(Endpoint.submit) == 100
    assert production.limit_for(Endpoint.login) == 12
    assert production.limit_for(Endpoint.get_submission) == 300
    # 100 grants span at least 61 s: about 0.984 of LHDN's ceiling, and never 101 in its minute.
    assert production.counting_window_seconds() == pytest.approx(61.0)
    assert RateLimitSettings(window_seconds=2.0).counting_window_seconds() == pytest.approx(2.0 * 61 / 60)
    cautious = RateLimitSettings(safety_factor=0.97)
    assert cautious.limit_for(Endpoint.submit) == 97
    assert cautious.limit_for(Endpoint.login) == 11  # 12 * 0.97 rounded down
    sandbox = RateLimitSettings(profile="sandbox")
    assert sandbox.limit_for(Endpoint.submit) == 50
    assert sandbox.limit_for(Endpoint.search) == 6
    off = RateLimitSettings(profile="off", overrides={Endpoint.submit: 400})
    assert off.limit_for(Endpoint.get_submission) is None
    assert off.limit_for(Endpoint.submit) == 400
    tiny = RateLimitSettings(safety_factor=0.01)
    assert tiny.limit_for(Endpoint.login) == 1  # never zero


@pytest.mark.parametrize("backend", ["mysql://x", "sqlite:/relative", "file:///x"])
def test_unknown_backend_is_refused_with_the_choices(backend):
    with pytest.raises(ValidationError, match="sqlite:///path"):
        RateLimitSettings(backend=backend)


def test_off_profile_never_waits():
    sleeps: list[float] = []
    with RatePolicy(RateLimitSettings(profile="off", window_seconds=WINDOW), sleep=sleeps.append) as policy:
        for _ in range(50):
            policy.acquire("c", Endpoint.search)
    assert sleeps == []


def test_memory_backend_blocks_threads_of_one_process():
    from concurrent.futures import ThreadPoolExecutor

    settings = workers.settings("memory", "mem", LIMIT, WINDOW)
    with RatePolicy(settings) as policy, ThreadPoolExecutor(4) as pool:

        def take(_):
            policy.acquire("c", Endpoint.submit)
            return time.time()

        stamps = list(pool.map(take, range(2 * LIMIT)))
    assert len(stamps) == 2 * LIMIT
    _assert_within_limit(stamps, LIMIT, WINDOW)


def _assert_within_limit(stamps: list[float], limit: int, span: float) -> None:
    """No ``span`` seconds (LHDN's window) hold more than ``limit`` of the noted grants."""
    stamps = sorted(stamps)
    for i, start in enumerate(stamps):
        in_window = [t for t in stamps[i:] if t < start + span]
        assert len(in_window) <= limit, (
            f"{len(in_window)} grants within {span} s starting at +{start - stamps[0]:.2f} s: "
            f"{[round(t - stamps[0], 3) for t in stamps]}"
        )


def _shared_backend_case(backend: str, prefix: str) -> None:
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool:
        pool.map(workers.ready, range(2))  # both children past their imports before the race starts
        start_at = time.time() + 0.3
        results = pool.starmap(workers.hammer, [(backend, prefix, LIMIT, WINDOW, CALLS_PER_PROCESS, start_at)] * 2)
        stamps = [t for r in results for t in r]
        # 6 grants at 4 per window: the processes had to wait for each other's grants.
        assert len(stamps) == 2 * CALLS_PER_PROCESS
        _assert_within_limit(stamps, LIMIT, WINDOW)

        # A 429 seen here (this process) makes a process that never saw it wait.
        with RatePolicy(workers.settings(backend, prefix, LIMIT, WINDOW)) as policy:
            policy.record_retry_after(workers.CLIENT_ID, Endpoint.get_submission, 1.0)
            until = policy.blocked_until(workers.CLIENT_ID, Endpoint.get_submission)
            assert until is not None
            # A shorter Retry-After later must not cut the longer block short.
            policy.record_retry_after(workers.CLIENT_ID, Endpoint.get_submission, 0.1)
            assert policy.blocked_until(workers.CLIENT_ID, Endpoint.get_submission) == until
            granted = pool.apply(workers.slot_granted_at, (backend, prefix, LIMIT, WINDOW))
        assert granted >= until


def test_two_processes_share_one_sqlite_file(tmp_path, unique_prefix):
    _shared_backend_case(f"sqlite:///{tmp_path / 'rate.db'}", unique_prefix.replace("-", "_"))


@pytest.mark.services
def test_two_processes_share_redis(redis_url, unique_prefix):
    _shared_backend_case(redis_url, unique_prefix)


@pytest.mark.services
def test_two_processes_share_postgresql(postgres_url, unique_prefix):
    _shared_backend_case(postgres_url, unique_prefix.replace("-", "_"))


@pytest.mark.parametrize("backend_fixture", [pytest.param("redis_url", marks=pytest.mark.services), "sqlite"])
def test_slots_are_taken_after_a_cooldown_not_before_it(backend_fixture, request, tmp_path, unique_prefix):
    """Calls queued for a slot when a 429 arrives do not pile up at the end of the cool-down.

    Two processes make 3 calls each at 2 per window. The first two go at once, the next two
    queue for a window. LHDN then asks for a wait of two windows. Were the queued calls to take
    their slots while waiting, they would fire at its end together with the two a fresh window
    then allows: four calls at once where LHDN's window takes two.
    """
    url = f"sqlite:///{tmp_path / 'rate.db'}" if backend_fixture == "sqlite" else request.getfixturevalue(backend_fixture)
    prefix = unique_prefix.replace("-", "_")
    limit, calls = 2, 3
    settings = workers.settings(url, prefix, limit, WINDOW)
    ctx = multiprocessing.get_context("spawn")
    with ctx.Pool(2) as pool, RatePolicy(settings) as policy:
        pool.map(workers.ready, range(2))
        start_at = time.time() + 0.3
        pending = pool.starmap_async(workers.hammer, [(url, prefix, limit, WINDOW, calls, start_at)] * 2)
        time.sleep(max(0.0, start_at + 0.5 - time.time()))  # the first two went, the others queue
        policy.record_retry_after(workers.CLIENT_ID, Endpoint.submit, 2 * settings.counting_window_seconds())
        until = policy.blocked_until(workers.CLIENT_ID, Endpoint.submit)
        stamps = sorted(t for r in pending.get() for t in r)
    assert until is not None and len(stamps) == 2 * calls
    # Nothing but the first window's calls went before the cool-down ended ...
    assert all(t >= until for t in stamps[limit:]), [round(t - until, 3) for t in stamps]
    # ... and after it, no window holds more than the limit.
    _assert_within_limit(stamps, limit, WINDOW)


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
        assert policy.granted_in_backend(workers.CLIENT_ID, Endpoint.submit) == 2


def test_search_is_also_spaced_as_lhdn_asks():
    # "1 request every 5 seconds": with the window compressed to 6 s that is 0.5 s apart, and
    # the arrival margin (15 s per minute here, a quarter) stretches it to 0.625 s.
    settings = RateLimitSettings(window_seconds=6, arrival_margin_seconds=workers.MARGIN_PER_MINUTE)
    with RatePolicy(settings) as policy:
        stamps = []
        for _ in range(3):
            policy.acquire("c", Endpoint.search)
            stamps.append(time.monotonic())
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(g >= 0.5 for g in gaps), gaps
