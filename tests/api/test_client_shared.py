"""The client in-process (ASGI, no socket), from many threads, and from two processes at once."""

from __future__ import annotations

import multiprocessing
import subprocess
import sys
import threading
import time
import warnings

import pytest

from connector_core.api import (
    Endpoint,
    MyInvoisClient,
    RateLimited,
    RateLimitSettings,
    RatePolicy,
    SubmissionStatus,
    SubmitOutcomeUnknown,
    TokenProvider,
)
from connector_core.simulator import RateLimitConfig, SimulatorConfig, ValidationConfig, create_app, run_in_thread
from connector_core.simulator.config import FaultsConfig, LatencySpec

from . import _client_workers as workers
from . import _documents as docs
from .conftest import FAST_RETRIES, TAXPAYER, stats


def _in_process(config: SimulatorConfig | None = None):
    with warnings.catch_warnings():
        # Starlette 1.x nudges towards httpx2 for its TestClient; with httpx 0.28 it is still an
        # httpx.Client, which is exactly what MyInvoisClient(http=...) takes.
        warnings.simplefilter("ignore", UserWarning)
        from starlette.testclient import TestClient
    app = create_app(config or SimulatorConfig())
    return app, TestClient(app, base_url="http://testserver")


def test_in_process_submit_poll_and_lost_response():
    app, http = _in_process()
    sim = app.state.simulator
    with http, RatePolicy(RateLimitSettings(profile="off")) as policy:
        client = MyInvoisClient(
            "http://testserver",
            "http://testserver",
            TAXPAYER,
            http=http,
            rate_policy=policy,
            retry_settings=FAST_RETRIES,
        )
        result = client.submit([docs.entry()])
        page = client.get_submission(result.submission_uid)
        assert [d.uuid for d in page.documents] == [result.accepted[0].uuid]

        http.post("/_simulator/faults", json={"lost_response_rate": {"submit": 1.0}}).raise_for_status()
        with pytest.raises(SubmitOutcomeUnknown):
            client.submit([docs.entry()])
        assert sim.stats.submissions == 2
        assert sim.stats.logins == {"demo-taxpayer": 1}


def test_threads_share_one_login():
    app, http = _in_process()
    with http, RatePolicy(RateLimitSettings(profile="off")) as policy:
        client = MyInvoisClient("http://testserver", "http://testserver", TAXPAYER, http=http, rate_policy=policy)
        barrier = threading.Barrier(8)
        errors: list[BaseException] = []

        def poll() -> None:
            barrier.wait()
            try:
                assert client.validate_tin(docs.DEMO_TIN, "BRN", "202001234567")
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=poll) for _ in range(8)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert not errors
        assert app.state.simulator.stats.logins == {"demo-taxpayer": 1}


def test_short_lived_token_is_renewed_before_it_expires():
    config = SimulatorConfig(token_lifetime_seconds=2)
    app, http = _in_process(config)
    with http, RatePolicy(RateLimitSettings(profile="off")) as policy:
        provider = TokenProvider("http://testserver", TAXPAYER, http=http, rate_policy=policy)
        client = MyInvoisClient(
            "http://testserver", "http://testserver", TAXPAYER, http=http, token_provider=provider, rate_policy=policy
        )
        client.validate_tin(docs.DEMO_TIN, "BRN", "202001234567")
        client.validate_tin(docs.DEMO_TIN, "BRN", "202001234567")
        assert app.state.simulator.stats.logins == {"demo-taxpayer": 1}
        # The margin (5 min, capped at half the 2 s life) says renew after 1 s: no 401 on the way.
        time.sleep(1.1)
        client.validate_tin(docs.DEMO_TIN, "BRN", "202001234567")
        assert app.state.simulator.stats.logins == {"demo-taxpayer": 2}
        assert "401" not in app.state.simulator.stats.requests["validate_tin"]


@pytest.fixture(
    params=[
        "sqlite",
        pytest.param("redis", marks=pytest.mark.services),
        pytest.param("postgresql", marks=pytest.mark.services),
    ]
)
def shared_backend(request, tmp_path):
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'rate.db'}"
    if request.param == "redis":
        return request.getfixturevalue("redis_url")
    return request.getfixturevalue("postgres_url")


def test_two_connector_processes_share_limits_and_token(tmp_path, shared_backend, unique_prefix):
    window, server_limit, calls = 2.0, 5, 5
    config = SimulatorConfig(
        rate_limits=RateLimitConfig(window_seconds=window, overrides={"validate_tin": server_limit})
    )
    backend = shared_backend
    prefix = unique_prefix.replace("-", "_")
    token_file = str(tmp_path / "tokens.json")
    ctx = multiprocessing.get_context("spawn")
    with run_in_thread(config) as sim, ctx.Pool(2) as pool:
        pool.map(workers.ready, range(2))
        start_at = time.time() + 0.3
        results = pool.starmap(
            workers.validate_tins,
            [(sim.base_url, backend, prefix, token_file, server_limit, window, calls, start_at)] * 2,
        )
        s = stats(sim.base_url)
    statuses = [status for r in results for status in r]
    # 10 calls where the server takes 5 per window: only waiting for each other avoids a 429.
    assert statuses == [200] * (2 * calls)
    assert s["max_requests_per_window"]["demo-taxpayer"]["validate_tin"] <= server_limit
    # The token file is shared: at most one login per process (usually one in all).
    assert 1 <= s["logins"]["demo-taxpayer"] <= 2


@pytest.fixture()
def busy_core():
    """One core kept busy, as when the ERP, a backup or another daemon runs beside the connector."""
    spinner = subprocess.Popen([sys.executable, "-c", "while True: pass"])
    yield
    spinner.kill()
    spinner.wait()


@pytest.mark.parametrize(
    "backend",
    [
        "sqlite",
        pytest.param("redis", marks=pytest.mark.services),
        pytest.param("postgresql", marks=pytest.mark.services),
    ],
)
def test_busy_processes_sharing_a_client_id_never_overfill_lhdns_window(
    backend, request, tmp_path, unique_prefix, busy_core
):
    """LHDN counts a submit when it arrives, and answers it after its processing.

    Two connector processes on a busy machine submit as fast as the limit allows, and each
    submit takes its own time to be answered (0.1 to 0.4 s, drawn anew for every call). Were a
    slot counted from its grant, the last call of one window sent late and the first of the next
    early would put one call too many in LHDN's window (101 in 100 was seen). A slot is counted
    from its request's send plus the guard instead, so the simulator, counting on arrival (both
    its peaks and its admission), never answers 429.
    """
    window, limit, per_process = 2.0, 3, 4
    if backend == "sqlite":
        backend_url = f"sqlite:///{tmp_path / 'rate.db'}"
    else:
        backend_url = request.getfixturevalue("redis_url" if backend == "redis" else "postgres_url")
    settings = RateLimitSettings(
        backend=backend_url,
        key_prefix=unique_prefix.replace("-", "_"),
        window_seconds=window,
        safety_factor=1.0,
        overrides={Endpoint.submit: limit},
        # 0.1 s of this 2 s window: the guard stands for the request's way to the server, which
        # here is the simulator's event loop on this busy machine noting the arrival (tens of ms),
        # as the default 0.25 s of 60 stands for the internet's way to LHDN.
        arrival_margin_seconds=3.0,
    )
    config = SimulatorConfig(
        rate_limits=RateLimitConfig(window_seconds=window, overrides={"submit": limit}),
        validation=ValidationConfig(delay_seconds=0.2, per_document_seconds=0.0),
        faults=FaultsConfig(latency_by_endpoint={"submit": LatencySpec(fixed_ms=100, jitter_ms=300)}),
    )
    entries = [[docs.entry() for _ in range(per_process)] for _ in range(2)]
    token_file = str(tmp_path / "tokens.json")
    ctx = multiprocessing.get_context("spawn")
    with run_in_thread(config) as sim, ctx.Pool(2) as pool:
        pool.map(workers.ready, range(2))
        start_at = time.time() + 0.5
        results = pool.starmap(
            workers.submit_documents, [(sim.base_url, settings, token_file, mine, start_at) for mine in entries]
        )
        s = stats(sim.base_url)
    statuses = [status for r in results for status in r]
    assert statuses == [202] * (2 * per_process)  # not one 429 for submit
    assert s["requests"]["submit"] == {"202": 2 * per_process}
    # The processes pressed against the limit: a window of LHDN's saw exactly that many.
    assert s["max_requests_per_window"]["demo-taxpayer"]["submit"] == limit


def test_retry_after_beyond_the_cap_goes_to_the_caller_and_is_remembered():
    config = SimulatorConfig(rate_limits=RateLimitConfig(window_seconds=60, overrides={"validate_tin": 1}))
    app, http = _in_process(config)
    sleeps: list[float] = []
    with http, RatePolicy(RateLimitSettings(profile="off"), sleep=sleeps.append) as policy:
        settings = FAST_RETRIES.model_copy(update={"max_retry_after_s": 5})
        client = MyInvoisClient(
            "http://testserver",
            "http://testserver",
            TAXPAYER,
            http=http,
            rate_policy=policy,
            retry_settings=settings,
            sleep=sleeps.append,
        )
        client.validate_tin(docs.DEMO_TIN, "BRN", "202001234567")
        with pytest.raises(RateLimited) as limited:
            client.validate_tin(docs.DEMO_TIN, "BRN", "202001234567")
        assert sleeps == []  # did not park the thread for the minute LHDN asked for
        assert limited.value.retry_after > 5
        # Every later call through this policy (or any process sharing its backend) waits it out.
        assert policy.blocked_until("demo-taxpayer", Endpoint.validate_tin) is not None
        assert app.state.simulator.stats.requests["validate_tin"] == {"200": 1, "429": 1}


def test_a_failing_listener_does_not_break_the_call(caplog):
    app, http = _in_process()

    def broken(event):
        raise RuntimeError("metrics backend down")

    seen = []
    with http, RatePolicy(RateLimitSettings(profile="off")) as policy:
        client = MyInvoisClient(
            "http://testserver",
            "http://testserver",
            TAXPAYER,
            http=http,
            rate_policy=policy,
            listeners=[broken, seen.append],
        )
        assert client.validate_tin(docs.DEMO_TIN, "BRN", "202001234567")
    assert [e.endpoint for e in seen] == [Endpoint.login, Endpoint.validate_tin]
    assert "listener" in caplog.text


@pytest.mark.parametrize("style", ["documented", "title", "pascal"])
def test_every_overall_status_spelling_is_understood(style):
    config = SimulatorConfig(
        overall_status_style=style, validation=ValidationConfig(delay_seconds=0.05, per_document_seconds=0.0)
    )
    app, http = _in_process(config)
    with http, RatePolicy(RateLimitSettings(profile="off")) as policy:
        client = MyInvoisClient("http://testserver", "http://testserver", TAXPAYER, http=http, rate_policy=policy)
        result = client.submit([docs.entry()])
        assert client.get_submission(result.submission_uid).overall_status is SubmissionStatus.IN_PROGRESS
        time.sleep(0.15)
        assert client.get_submission(result.submission_uid).overall_status is SubmissionStatus.VALID
