"""Fault injection: latency, 5xx, spurious 429, lost responses, revocation, slow validation;
seeded, and changeable at run time."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from connector_core.simulator import create_app
from connector_core.simulator.config import FaultsConfig
from connector_core.simulator.demo import submission_body
from connector_core.simulator.faults import FaultInjector
from connector_core.simulator.responses import ResponseLost

from .helpers import invoice, login, make_client, make_config, submit, wait_final

SUBMIT = "/api/v1.0/documentsubmissions"


def stats(client) -> dict:
    return client.get("/_simulator/stats").json()


def test_fixed_latency_per_endpoint_delays_only_that_endpoint():
    client = make_client(faults={"latency_by_endpoint": {"get_submission": {"fixed_ms": 500}}})
    headers = login(client)
    started = time.monotonic()
    client.get("/api/v1.0/documentsubmissions/NONE", headers=headers)
    # A lower bound only: a busy machine makes a call slower, never faster.
    assert time.monotonic() - started >= 0.5
    assert stats(client)["faults_injected"]["latency"] == 1
    # The other endpoint is not delayed: told by the fault counter, not by a stopwatch, which
    # a busy machine would make lie.
    client.get("/api/v1.0/documents/NONE/details", headers=headers)
    assert stats(client)["faults_injected"]["latency"] == 1


def test_global_latency_with_jitter_stays_within_its_bounds():
    client = make_client(faults={"latency_ms": 50, "latency_jitter_ms": 100})
    durations = []
    for _ in range(4):
        started = time.monotonic()
        client.post("/connect/token", data={"client_id": "x", "client_secret": "y", "grant_type": "client_credentials"})
        durations.append(time.monotonic() - started)
    assert all(d >= 0.05 for d in durations)
    assert stats(client)["faults_injected"]["latency"] == 4
    # The upper bound is the planned delay's, not a call's wall time (which grows with the
    # machine's load): fixed plus at most the jitter, and the jitter really varies.
    injector = FaultInjector(FaultsConfig(latency_ms=50, latency_jitter_ms=100), seed=3)
    planned = [injector.plan("login", authenticated=False).latency_seconds for _ in range(200)]
    assert all(0.05 <= d <= 0.15 for d in planned), (min(planned), max(planned))
    assert max(planned) - min(planned) > 0.05


def test_error_rate_answers_5xx_without_processing():
    client = make_client(faults={"error_rate": {"submit": 1.0}})
    headers = login(client)
    response = submit(client, headers, [(invoice("E-1"), "E-1")])
    assert response.status_code in (500, 503)
    assert response.json()["error"]["code"] in ("InternalServerError", "ServiceUnavailable")
    assert response.headers["correlationId"]
    assert stats(client)["submissions"] == 0
    assert stats(client)["documents_by_status"] == {}
    client.post("/_simulator/faults", json={})
    assert submit(client, headers, [(invoice("E-1"), "E-1")]).status_code == 202  # not a duplicate: never processed


def test_spurious_429_comes_with_retry_after_while_under_the_limit():
    client = make_client(faults={"spurious_429_rate": {"get_submission": 1.0}})
    headers = login(client)
    response = client.get("/api/v1.0/documentsubmissions/NONE", headers=headers)
    assert response.status_code == 429
    assert response.headers["Retry-After"] == "1"
    assert stats(client)["faults_injected"]["spurious_429"] == 1


def test_lost_response_in_process_raises_after_the_submission_was_committed():
    client = make_client(faults={"lost_response_rate": {"submit": 1.0}})
    headers = login(client)
    body = json.dumps(submission_body([(invoice("L-1"), "L-1")]))
    with pytest.raises(httpx.TransportError) as caught:
        client.post(SUBMIT, content=body, headers={**headers, "Content-Type": "application/json"})
    assert isinstance(caught.value, ResponseLost)
    assert stats(client)["submissions"] == 1
    assert stats(client)["accepted_by_invoice"] == {"C25845632020|L-1": 1}
    assert stats(client)["faults_injected"]["lost_response"] == 1
    client.post("/_simulator/faults", json={})
    # the client that retries the identical payload learns it was already received
    assert client.post(SUBMIT, content=body, headers={**headers, "Content-Type": "application/json"}).status_code == 422


@pytest.fixture()
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_lost_response_through_httpx_asgi_transport():
    app = create_app(make_config(faults={"lost_response_rate": {"login": 1.0}}))
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://sim") as client:
        with pytest.raises(httpx.RemoteProtocolError):
            await client.post("/connect/token", data={"client_id": "demo-taxpayer",
                                                      "client_secret": "demo-taxpayer-secret",
                                                      "grant_type": "client_credentials"})
        stats_body = (await client.get("/_simulator/stats")).json()
    assert stats_body["logins"] == {"demo-taxpayer": 1}


def test_failed_calls_are_never_lost_only_successful_ones():
    client = make_client(faults={"lost_response_rate": 1.0})
    response = client.post("/connect/token", data={"client_id": "demo-taxpayer", "client_secret": "bad",
                                                   "grant_type": "client_credentials"})
    assert response.status_code == 400


def test_revocation_gives_401_before_expiry_and_the_token_stays_dead():
    client = make_client(faults={"revoke_rate": {"get_submission": 1.0}})
    headers = login(client)
    response = client.get("/api/v1.0/documentsubmissions/NONE", headers=headers)
    assert response.status_code == 401
    client.post("/_simulator/faults", json={})
    assert client.get("/api/v1.0/documentsubmissions/NONE", headers=headers).status_code == 401
    assert client.get("/api/v1.0/documentsubmissions/NONE", headers=login(client)).status_code == 404
    assert stats(client)["faults_injected"]["revoke"] == 1


def test_revoke_tokens_endpoint_kills_all_or_one_clients_tokens():
    client = make_client()
    taxpayer, buyer = login(client), login(client, ("demo-buyer", "demo-buyer-secret"))
    assert client.post("/_simulator/revoke-tokens", json={"client_id": "demo-buyer"}).json() == {"revoked": 1}
    assert client.get("/api/v1.0/documentsubmissions/NONE", headers=buyer).status_code == 401
    assert client.get("/api/v1.0/documentsubmissions/NONE", headers=taxpayer).status_code == 404
    assert client.post("/_simulator/revoke-tokens").json() == {"revoked": 1}
    assert client.get("/api/v1.0/documentsubmissions/NONE", headers=taxpayer).status_code == 401


def test_slow_validation_delays_some_submissions():
    slow_seconds = 3.0  # seconds of margin for the one call below, even on a busy machine
    client = make_client(faults={"slow_validation_rate": 1.0, "slow_validation_seconds": slow_seconds})
    headers = login(client)
    uid = submit(client, headers, [(invoice("SLOW"), "SLOW")]).json()["submissionUid"]
    assert client.get(f"{SUBMIT}/{uid}", headers=headers).json()["overallStatus"] == "in progress"
    # The extra delay is the configured one, on top of the normal validation delay.
    (document,) = (d for d in client.app.state.simulator.store.documents.values() if d.submission_uid == uid)
    assert document.ready_at - document.received_at >= slow_seconds
    assert wait_final(client, headers, uid, timeout=slow_seconds + 30)["overallStatus"] == "valid"
    assert stats(client)["faults_injected"]["slow_validation"] == 1


def run_sequence(seed: int) -> list[int]:
    client = make_client(seed=seed, faults={"error_rate": 0.3, "spurious_429_rate": 0.2})
    headers = login_retrying(client)
    return [client.get("/api/v1.0/documentsubmissions/NONE", headers=headers).status_code for _ in range(40)]


def login_retrying(client):
    for _ in range(50):
        response = client.post("/connect/token", data={"client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret",
                                                       "grant_type": "client_credentials"})
        if response.status_code == 200:
            return {"Authorization": f"Bearer {response.json()['access_token']}"}
    raise AssertionError("could not log in")


def test_faults_are_seeded_and_repeatable():
    first, again, other = run_sequence(7), run_sequence(7), run_sequence(8)
    assert first == again
    assert first != other
    assert {404, 429} <= set(first) and ({500, 503} & set(first))


def test_faults_change_at_run_time_and_bad_settings_are_refused():
    client = make_client()
    headers = login(client)
    assert client.get("/api/v1.0/documentsubmissions/NONE", headers=headers).status_code == 404
    changed = client.post("/_simulator/faults", json={"error_rate": {"get_submission": 1.0}})
    assert changed.status_code == 200
    assert client.get("/_simulator/faults").json()["error_rate"] == {"get_submission": 1.0}
    assert client.get("/api/v1.0/documentsubmissions/NONE", headers=headers).status_code in (500, 503)
    for bad in ({"error_rate": 2}, {"error_rate": {"nonsense": 0.5}}, {"no_such_fault": 1}):
        response = client.post("/_simulator/faults", json=bad)
        assert response.status_code == 400, bad
    assert client.get("/_simulator/faults").json()["error_rate"] == {"get_submission": 1.0}


def test_reset_clears_documents_and_counters_but_keeps_tokens():
    client = make_client()
    headers = login(client)
    uid = submit(client, headers, [(invoice("RS-1"), "RS-1")]).json()["submissionUid"]
    wait_final(client, headers, uid)
    before = stats(client)
    assert before["submissions"] == 1 and before["documents_by_status"] == {"Valid": 1}
    assert before["valid_by_invoice"] == {"C25845632020|RS-1": 1}
    assert client.post("/_simulator/reset").json() == {"reset": True}
    after = stats(client)
    assert after["submissions"] == 0 and after["documents_by_status"] == {} and after["requests"] == {}
    assert after["accepted_by_invoice"] == {} and after["max_requests_per_window"] == {}
    assert client.get(f"{SUBMIT}/{uid}", headers=headers).status_code == 404  # token still good, submission gone


def test_duplicate_documents_are_counted_per_invoice():
    client = make_client()
    headers = login(client)
    for n in range(3):  # the same invoice number issued at different seconds: three valid documents
        document = invoice("TWICE")
        document["Invoice"][0]["IssueTime"][0]["_"] = time.strftime(f"%H:%M:{n:02d}Z", time.gmtime(time.time() - 60))
        document["Invoice"][0]["IssueDate"][0]["_"] = time.strftime("%Y-%m-%d", time.gmtime(time.time() - 60))
        uid = submit(client, headers, [(document, f"TWICE-{n}")]).json()["submissionUid"]
        wait_final(client, headers, uid)
    body = stats(client)
    assert body["accepted_by_invoice"]["C25845632020|TWICE"] == 3
    assert body["valid_by_invoice"]["C25845632020|TWICE"] == 3
    assert body["duplicate_documents"] == 2
