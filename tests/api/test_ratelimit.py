"""Client-side rate limits with real backends, shared by real processes.

The window is compressed to 2 s so a test shows several windows in a few seconds. Each call is
noted inside its slot, between grant and release, as LHDN counts a call somewhere between its
sending and its answer, and the notes are counted in LHDN's window: no window may hold more
than the limit, whatever the delays.
"""

from __future__ import annotations

import multiprocessing
import time

import pytest
from pydantic import ValidationError

from connector_core.api import Endpoint, RateLimitSettings, RatePolicy
from connector_core.api.ratelimit import Slot

from . import _ratelimit_workers as workers

WINDOW = 2.0
LIMIT = 4
CALLS_PER_PROCESS = 3


def test_limits_by_profile_safety_factor_and_overrides():
    production = RateLimitSettings()
    # LHDN's figures as published, over LHDN's own window: a call's slot counts until its request
    # left (plus a 0.25 s guard per minute), which is what keeps 101 out of LHDN's minute.
    assert production.limit_for(Endpoint.submit) == 100
    assert production.limit_for(Endpoint.login) == 12
    assert production.limit_for(Endpoint.get_submission) == 300
    assert production.counting_window_seconds() == 60.0
    assert production.guard_seconds() == pytest.approx(0.25)
    compressed = RateLimitSettings(window_seconds=15.0)
    assert compressed.counting_window_seconds() == 15.0
    assert compressed.guard_seconds() == pytest.approx(0.0625)
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
            return workers.call(policy, client_id="c")

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


def _busiest_window(stamps: list[float], span: float) -> int:
    stamps = sorted(stamps)
    return max(len([t for t in stamps[i:] if t < start + span]) for i, start in enumerate(stamps))


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
    url = (
        f"sqlite:///{tmp_path / 'rate.db'}" if backend_fixture == "sqlite" else request.getfixturevalue(backend_fixture)
    )
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


ALL_BACKENDS = [
    "memory",
    "sqlite",
    pytest.param("redis_url", marks=pytest.mark.services),
    pytest.param("postgres_url", marks=pytest.mark.services),
]


def _backend_url(backend_fixture: str, request, tmp_path) -> str:
    if backend_fixture == "memory":
        return "memory"
    if backend_fixture == "sqlite":
        return f"sqlite:///{tmp_path / 'rate.db'}"
    return request.getfixturevalue(backend_fixture)


@pytest.mark.parametrize("backend_fixture", ALL_BACKENDS[1:])
def test_a_slot_stamped_later_but_stored_first_still_counts(backend_fixture, request, tmp_path, unique_prefix):
    """The race CI once lost on Redis, replayed deterministically.

    Process A stamps its call after process B does, but A's count-then-insert reaches the backend
    first. B's count must still see A's call, or both get the last slot of the window.
    """
    from connector_core.api.ratelimit import _open_backend

    backend = _open_backend(_backend_url(backend_fixture, request, tmp_path))
    bucket = unique_prefix.replace("-", "_")
    try:
        b_now = time.time()
        assert backend.take(bucket, "a", b_now + 0.05, b_now + 2.05, [(1, 2.0)]) == 0.0  # A: later, stored first
        assert backend.take(bucket, "b", b_now, b_now + 2.0, [(1, 2.0)]) > 0  # B: the window is already full
        assert backend.count(bucket) == 1
    finally:
        backend.close()


class _Clock:
    """Time that moves only when the policy sleeps or the test says so: waits are exact."""

    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now

    def sleep(self, seconds: float) -> None:
        self.now += max(0.0, seconds)


@pytest.mark.parametrize("backend_fixture", ALL_BACKENDS)
def test_a_slot_counts_from_its_answer_not_its_grant(backend_fixture, request, tmp_path, unique_prefix):
    """A call granted at G and answered at R is counted from R: the next slot comes at R + window
    (+ the guard), not at G + window, so LHDN's window never holds it together with a call
    granted a window after G while it was still on its way."""
    window, guard_per_minute = 10.0, 6.0  # a 1 s guard at this window, to see it apart
    clock = _Clock()
    settings = workers.settings(
        _backend_url(backend_fixture, request, tmp_path), unique_prefix.replace("-", "_"), 1, window
    )
    settings = settings.model_copy(update={"arrival_margin_seconds": guard_per_minute})
    with RatePolicy(settings, clock=clock, sleep=clock.sleep) as policy:
        granted = clock.now
        slot = policy.take(workers.CLIENT_ID, Endpoint.submit)
        clock.sleep(3.0)  # the call takes 3 s to be answered
        policy.release(slot)
        answered = clock.now
        policy.take(workers.CLIENT_ID, Endpoint.submit)
        assert clock.now >= answered + window + 1.0  # counted from the answer, with the guard
        assert clock.now < answered + window + 1.0 + 0.01  # and not a moment longer
        assert clock.now > granted + window + 3.0


@pytest.mark.parametrize("backend_fixture", ALL_BACKENDS)
def test_a_slot_counts_from_when_its_request_left_when_that_is_known(backend_fixture, request, tmp_path, unique_prefix):
    """LHDN counts a call at its arrival: a call whose request left 2.5 s before its answer is
    counted from then (plus the guard), and the next slot comes that much earlier."""
    window, guard_per_minute = 10.0, 6.0  # a 1 s guard at this window, to see it apart
    clock = _Clock()
    settings = workers.settings(
        _backend_url(backend_fixture, request, tmp_path), unique_prefix.replace("-", "_"), 1, window
    )
    settings = settings.model_copy(update={"arrival_margin_seconds": guard_per_minute})
    with RatePolicy(settings, clock=clock, sleep=clock.sleep) as policy:
        slot = policy.take(workers.CLIENT_ID, Endpoint.submit)
        clock.sleep(0.5)  # written to the socket
        sent = clock.now
        clock.sleep(2.5)  # LHDN's processing, then the answer
        policy.release(slot, sent_seconds_ago=2.5)
        policy.take(workers.CLIENT_ID, Endpoint.submit)
        assert clock.now >= sent + window + 1.0  # from the send, with the guard
        assert clock.now < sent + window + 1.0 + 0.01  # not from the answer (2.5 s later)


@pytest.mark.parametrize("backend_fixture", ALL_BACKENDS[1:])
def test_a_call_in_flight_holds_its_slot_in_every_process(backend_fixture, request, tmp_path, unique_prefix):
    """While a call is unanswered, no process sharing the backend gets its slot, even a window
    after the grant; a process that died mid-call frees it two windows after the grant."""
    window = 10.0
    clock = _Clock()
    settings = workers.settings(
        _backend_url(backend_fixture, request, tmp_path), unique_prefix.replace("-", "_"), 1, window
    )
    with (
        RatePolicy(settings, clock=clock, sleep=clock.sleep) as a,
        RatePolicy(settings, clock=clock, sleep=clock.sleep) as b,
    ):
        granted = clock.now
        a.take(workers.CLIENT_ID, Endpoint.submit)  # never released: the process died mid-call
        clock.sleep(window + 2.0)
        b.take(workers.CLIENT_ID, Endpoint.submit)
        assert clock.now >= granted + 2 * window
        assert clock.now < granted + 2 * window + 0.01


@pytest.mark.parametrize("backend_fixture", ALL_BACKENDS[1:])
def test_calls_of_varying_duration_never_overfill_a_window_counted_on_arrival(
    backend_fixture, request, tmp_path, unique_prefix
):
    """Two policies share a backend; each call reaches "LHDN" at a random moment between its
    sending and its answer, and takes a random time. However the delays fall, no window of
    arrivals holds more than the limit, and the limit is reached."""
    import random

    window, limit, calls = 10.0, 3, 12
    rng = random.Random(18)
    clock = _Clock()
    settings = workers.settings(
        _backend_url(backend_fixture, request, tmp_path), unique_prefix.replace("-", "_"), limit, window
    )
    arrivals: list[float] = []
    with (
        RatePolicy(settings, clock=clock, sleep=clock.sleep) as a,
        RatePolicy(settings, clock=clock, sleep=clock.sleep) as b,
    ):
        in_flight: list[tuple[float, Slot, RatePolicy]] = []  # (answered at, slot, its policy)
        for i in range(calls):
            for entry in [e for e in in_flight if e[0] <= clock.now]:
                entry[2].release(entry[1])  # released at now: at or after its answer
                in_flight.remove(entry)
            policy = (a, b)[i % 2]
            slot = policy.take(workers.CLIENT_ID, Endpoint.submit)
            duration = rng.uniform(0.0, 4.0)
            arrivals.append(clock.now + rng.uniform(0.0, duration))
            in_flight.append((clock.now + duration, slot, policy))
            clock.sleep(rng.uniform(0.0, 1.0))  # until the next call is ready
    _assert_within_limit(arrivals, limit, window)
    assert _busiest_window(arrivals, window) == limit


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
    # "1 request every 5 seconds": with the window compressed to 6 s that is 0.5 s apart,
    # from one call's answer to the next call.
    settings = RateLimitSettings(window_seconds=6)
    with RatePolicy(settings) as policy:
        stamps = []
        for _ in range(3):
            with policy.slot("c", Endpoint.search):
                stamps.append(time.monotonic())
    gaps = [b - a for a, b in zip(stamps, stamps[1:], strict=False)]
    assert all(g >= 0.5 for g in gaps), gaps
