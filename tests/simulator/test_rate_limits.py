"""Per-client, per-endpoint limits: profiles, sliding window, headers, and peak statistics."""

from __future__ import annotations

import time

import pytest

from connector_core.simulator.config import PRODUCTION_LIMITS_PER_MINUTE, SANDBOX_LIMITS_PER_MINUTE

from .helpers import TAXPAYER_2, login, make_client

FORM = {"client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret", "grant_type": "client_credentials"}


def test_production_profile_is_lhdns_table():
    client = make_client(rate_limits={"profile": "production"})
    limits = client.get("/_simulator/stats").json()["limits"]
    assert limits == PRODUCTION_LIMITS_PER_MINUTE
    assert limits["login"] == 12 and limits["submit"] == 100 and limits["get_submission"] == 300
    assert limits["get_document_details"] == 125 and limits["search"] == 12 and limits["qr"] == 60


def test_sandbox_profile_is_half_of_production_and_off_has_no_limits():
    sandbox = make_client(rate_limits={"profile": "sandbox"}).get("/_simulator/stats").json()["limits"]
    assert sandbox == SANDBOX_LIMITS_PER_MINUTE
    assert sandbox["login"] == 6 and sandbox["get_submission"] == 150
    off = make_client(rate_limits={"profile": "off"})
    assert set(off.get("/_simulator/stats").json()["limits"].values()) == {None}
    for _ in range(20):
        assert off.post("/connect/token", data=FORM).status_code == 200


def test_thirteenth_login_in_a_minute_is_429_with_retry_after():
    client = make_client(rate_limits={"profile": "production"})
    for n in range(12):
        response = client.post("/connect/token", data=FORM)
        assert response.status_code == 200
        assert response.headers["X-Rate-Limit-Limit"] == "12"
        assert response.headers["X-Rate-Limit-Remaining"] == str(11 - n)
    refused = client.post("/connect/token", data=FORM)
    assert refused.status_code == 429
    assert refused.json()["error"]["code"] == "TooManyRequests"
    assert 58 <= int(refused.headers["Retry-After"]) <= 60
    assert refused.headers["X-Rate-Limit-Remaining"] == "0"
    assert refused.headers["X-Rate-Limit-Reset"].endswith("Z")
    assert refused.headers["correlationId"]
    # limits are per client id: another client is unaffected
    other = client.post("/connect/token", data={**FORM, "client_id": "demo-buyer", "client_secret": "demo-buyer-secret"})
    assert other.status_code == 200


# The windows below are a few seconds long: the requests that must fall into one window get
# seconds of margin even on a busy machine, and the waits for a window to pass are sleeps
# past its end, which a busy machine can only lengthen.


def _sleep_past(moment: float) -> None:
    time.sleep(max(0.0, moment - time.time()) + 0.1)


def test_short_window_compresses_time_and_slots_free_as_requests_age():
    window = 2.0
    client = make_client(rate_limits={"profile": "production", "window_seconds": window, "overrides": {"get_submission": 3}})
    headers = login(client)
    url = "/api/v1.0/documentsubmissions/NONE"
    assert [client.get(url, headers=headers).status_code for _ in range(3)] == [404, 404, 404]
    last_admitted_by = time.time()
    refused = client.get(url, headers=headers)
    assert refused.status_code == 429
    # Seconds of the compressed window, not of LHDN's minute.
    assert 1 <= int(refused.headers["Retry-After"]) <= window
    _sleep_past(last_admitted_by + window)
    assert client.get(url, headers=headers).status_code == 404


def test_refused_requests_do_not_use_up_slots():
    """The window counts admitted requests only, so a client that waits Retry-After gets in."""
    window = 2.0
    client = make_client(rate_limits={"profile": "production", "window_seconds": window, "overrides": {"validate_tin": 2}})
    headers = login(client)
    url = "/api/v1.0/taxpayer/validate/C25845632020?idType=BRN&idValue=202001234567"
    statuses = []
    for _ in range(10):
        statuses.append(client.get(url, headers=headers).status_code)
        if len(statuses) == 2:
            admitted_by = time.time()
    assert statuses == [200, 200] + [429] * 8
    # Eight refusals later, the two admitted requests' window is all that stands in the way.
    _sleep_past(admitted_by + window)
    assert client.get(url, headers=headers).status_code == 200


TIN_URL = "/api/v1.0/taxpayer/validate/C25845632020?idType=BRN&idValue=202001234567"


def test_a_call_is_counted_when_it_arrives_not_when_it_is_answered():
    """MyInvois counts a call at its arrival; the processing after it does not move it in the window."""
    window, processing = 3.0, 2.0
    client = make_client(rate_limits={"profile": "production", "window_seconds": window, "overrides": {"validate_tin": 1}})
    headers = login(client)
    client.post("/_simulator/faults", json={"latency_by_endpoint": {"validate_tin": {"fixed_ms": processing * 1000}}})
    sent = time.time()
    assert client.get(TIN_URL, headers=headers).status_code == 200
    answered = time.time()
    assert answered - sent >= processing
    client.post("/_simulator/faults", json={})
    # A window after the first call's arrival, but not after its answer: counted at its answer,
    # it would still fill the window.
    _sleep_past(sent + window)
    assert time.time() < answered + window
    assert client.get(TIN_URL, headers=headers).status_code == 200
    assert client.get(TIN_URL, headers=headers).status_code == 429  # the limit still holds


def test_a_refused_call_is_answered_at_once_without_the_processing():
    window = 3.0
    client = make_client(rate_limits={"profile": "production", "window_seconds": window, "overrides": {"validate_tin": 1}})
    headers = login(client)
    client.post("/_simulator/faults", json={"latency_by_endpoint": {"validate_tin": {"fixed_ms": 200}}})
    assert client.get(TIN_URL, headers=headers).status_code == 200
    assert client.get(TIN_URL, headers=headers).status_code == 429
    assert client.get(TIN_URL, headers={"Authorization": "Bearer not-a-token"}).status_code == 401
    # Only the admitted call was processed (waited the injected latency).
    assert client.get("/_simulator/stats").json()["faults_injected"]["latency"] == 1


def test_the_window_stays_sorted_when_a_stamp_comes_in_late():
    from connector_core.simulator.rate_limiter import SlidingWindowLimiter

    limiter = SlidingWindowLimiter({"submit": 2}, window_seconds=10.0)
    assert limiter.check("c", "submit", 100.0).allowed
    assert limiter.check("c", "submit", 99.0).allowed  # arrived earlier, asked later
    assert not limiter.check("c", "submit", 105.0).allowed
    # The earlier one (99) leaves first: at 109.5 one slot is free, and the refusal's wait says so.
    assert limiter.check("c", "submit", 109.5).allowed
    refused = limiter.check("c", "submit", 109.6)
    assert not refused.allowed and refused.resets_at == 110.0


def test_stats_report_the_peak_of_all_arrivals_per_client_and_endpoint():
    client = make_client(rate_limits={"profile": "production", "overrides": {"get_submission": 5}})
    one, two = login(client), login(client, TAXPAYER_2)
    for _ in range(8):
        client.get("/api/v1.0/documentsubmissions/NONE", headers=one)
    for _ in range(2):
        client.get("/api/v1.0/documentsubmissions/NONE", headers=two)
    stats = client.get("/_simulator/stats").json()
    assert stats["window_seconds"] == 60
    assert stats["max_requests_per_window"]["demo-taxpayer"]["get_submission"] == 8  # 5 admitted + 3 refused
    assert stats["max_requests_per_window"]["demo-taxpayer-2"]["get_submission"] == 2
    assert stats["max_requests_per_window"]["demo-taxpayer"]["login"] == 1
    assert stats["requests"]["get_submission"] == {"404": 7, "429": 3}


def test_peak_is_over_a_sliding_window_not_the_total():
    window = 2.0
    client = make_client(rate_limits={"profile": "off", "window_seconds": window})
    headers = login(client)
    for _ in range(3):
        client.get("/api/v1.0/documentsubmissions/NONE", headers=headers)
    _sleep_past(time.time() + window)
    for _ in range(2):
        client.get("/api/v1.0/documentsubmissions/NONE", headers=headers)
    assert client.get("/_simulator/stats").json()["max_requests_per_window"]["demo-taxpayer"]["get_submission"] == 3


@pytest.mark.parametrize("bad", [{"profile": "fast"}, {"window_seconds": 0}])
def test_bad_rate_settings_are_refused(bad):
    with pytest.raises(ValueError):
        make_client(rate_limits=bad)
