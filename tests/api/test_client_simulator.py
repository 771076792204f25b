"""The client against the real simulator over loopback HTTP: tokens, retries, errors, paging."""

from __future__ import annotations

import logging
import os
import stat
import time

import pytest
from pydantic import SecretStr

from connector_core.api import (
    AuthenticationFailed,
    BatchRefused,
    Credentials,
    DocumentStatus,
    DuplicateSubmission,
    Endpoint,
    MyInvoisClient,
    NotFound,
    RateLimitSettings,
    RatePolicy,
    RetriableError,
    SubmissionStatus,
    SubmitOutcomeUnknown,
    TokenCache,
)

from . import _documents as docs
from .conftest import TAXPAYER, requests_of, set_faults, stats

INTERMEDIARY = "demo-intermediary"


def _wait_final(client, uid: str, timeout: float = 60.0):
    # A generous deadline, only reached when something is wrong: a busy machine validates late.
    deadline = time.monotonic() + timeout
    while True:
        page = client.get_submission(uid)
        if page.overall_status.is_final:
            return page
        assert time.monotonic() < deadline, f"submission {uid} still {page.overall_status.value} after {timeout:g} s"
        time.sleep(0.2)


def test_one_login_for_many_calls(sim, make_client):
    client = make_client()
    result = client.submit([docs.entry()])
    assert result.submission_uid and len(result.accepted) == 1 and not result.rejected
    for _ in range(5):
        page = client.get_submission(result.submission_uid)
        assert page.submission_uid == result.submission_uid
    assert stats(sim.base_url)["logins"] == {"demo-taxpayer": 1}


def test_persisted_token_survives_a_new_client_and_stays_private(sim, make_client, token_cache_path):
    make_client(token_cache=TokenCache(token_cache_path)).login()
    assert stat.S_IMODE(os.stat(token_cache_path).st_mode) == 0o600
    assert "demo-taxpayer-secret" not in token_cache_path.read_text()

    restarted = make_client(token_cache=TokenCache(token_cache_path))
    result = restarted.submit([docs.entry()])
    assert result.submission_uid
    assert stats(sim.base_url)["logins"] == {"demo-taxpayer": 1}


@pytest.mark.parametrize(
    "credentials",
    [
        Credentials(client_id="YOUR_CLIENT_ID", client_secret="whatever"),
        Credentials(client_id="0", client_secret="whatever"),
        Credentials(client_id="demo-taxpayer", client_secret=""),
        Credentials(client_id="demo-taxpayer", client_secret="your_client_secret"),
    ],
)
def test_placeholder_credentials_never_reach_the_server(sim, make_client, credentials):
    client = make_client(credentials)
    with pytest.raises(AuthenticationFailed, match="placeholder") as raised:
        client.submit([docs.entry()])
    assert "whatever" not in str(raised.value)
    s = stats(sim.base_url)
    assert s["logins"] == {}
    assert "login" not in s["requests"] and "submit" not in s["requests"]


def test_refused_login_names_the_fix_and_backs_off(sim, make_client):
    client = make_client(Credentials(client_id="demo-taxpayer", client_secret="wrong-secret"))
    with pytest.raises(AuthenticationFailed) as first:
        client.login()
    message = str(first.value)
    assert "client_id and client_secret" in message and "wrong-secret" not in message
    assert first.value.code == "invalid_client"
    # Straight away again: refused locally, LHDN's login counter is not touched.
    with pytest.raises(AuthenticationFailed, match="not retrying the login"):
        client.get_submission("ANY")
    assert requests_of(sim.base_url, "login") == {"400": 1}


def test_intermediary_gets_one_token_per_represented_taxpayer(sim, make_client, token_cache_path):
    cache = TokenCache(token_cache_path)
    for_demo = make_client(
        Credentials(client_id=INTERMEDIARY, client_secret="demo-intermediary-secret", on_behalf_of=docs.DEMO_TIN),
        token_cache=cache,
    )
    result = for_demo.submit([docs.entry()])
    assert result.submission_uid and len(result.accepted) == 1

    other_tin = "C10000000010"
    for_other = make_client(
        Credentials(client_id=INTERMEDIARY, client_secret="demo-intermediary-secret", on_behalf_of=other_tin),
        token_cache=cache,
    )
    for_other.login()
    for_demo.get_submission(result.submission_uid)  # still the first token
    assert stats(sim.base_url)["logins"] == {INTERMEDIARY: 2}
    assert for_demo.tokens.token() != for_other.tokens.token()

    # The token for the other taxpayer cannot submit the demo taxpayer's invoice.
    with pytest.raises(BatchRefused) as refused:
        for_other.submit([docs.entry()])
    assert refused.value.status == 403 and refused.value.code == "IncorrectSubmitter"

    not_authorised = make_client(
        Credentials(client_id=INTERMEDIARY, client_secret="demo-intermediary-secret", on_behalf_of="C99999999990")
    )
    with pytest.raises(AuthenticationFailed, match="authorised this intermediary"):
        not_authorised.login()


def test_revoked_token_is_refreshed_once(sim, make_client):
    events = []
    client = make_client(listeners=[events.append])
    client.login()
    import httpx

    httpx.post(f"{sim.base_url}/_simulator/revoke-tokens", json={}).raise_for_status()
    with pytest.raises(NotFound):
        client.get_submission("NOSUCHSUBMISSION00000000000")
    assert stats(sim.base_url)["logins"] == {"demo-taxpayer": 2}
    assert [(e.endpoint, e.status) for e in events] == [
        (Endpoint.login, 200),
        (Endpoint.get_submission, 401),
        (Endpoint.login, 200),
        (Endpoint.get_submission, 404),
    ]


def test_token_rejected_twice_is_an_authentication_failure(sim, make_client):
    client = make_client()
    client.login()
    set_faults(sim.base_url, revoke_rate={"get_submission": 1.0})
    with pytest.raises(AuthenticationFailed, match="even with a fresh token"):
        client.get_submission("X")
    assert requests_of(sim.base_url, "get_submission") == {"401": 2}


def test_429_is_honoured_and_shared_through_the_cooldown(simulator, tmp_path):
    from connector_core.api import MyInvoisClient
    from connector_core.simulator import RateLimitConfig, SimulatorConfig, run_in_thread

    from .conftest import FAST_RETRIES

    config = SimulatorConfig(rate_limits=RateLimitConfig(window_seconds=2, overrides={"validate_tin": 2}))
    events = []
    with run_in_thread(config) as limited, RatePolicy(RateLimitSettings(profile="off")) as policy:
        client = MyInvoisClient(
            limited.base_url,
            limited.base_url,
            TAXPAYER,
            rate_policy=policy,
            retry_settings=FAST_RETRIES,
            listeners=[events.append],
        )
        started = time.monotonic()
        for _ in range(3):
            assert client.validate_tin(docs.DEMO_TIN, "BRN", "202001234567") is True
        elapsed = time.monotonic() - started
        client.close()
        limited_stats = stats(limited.base_url)
    refused = [e for e in events if e.status == 429]
    assert len(refused) == 1 and refused[0].retry_after is not None and refused[0].retry_after >= 1
    assert elapsed >= refused[0].retry_after - 0.05  # waited as told instead of hammering
    assert limited_stats["requests"]["validate_tin"] == {"200": 3, "429": 1}


def test_client_side_limit_prevents_429(sim, make_client):
    from connector_core.simulator import RateLimitConfig, SimulatorConfig, run_in_thread

    config = SimulatorConfig(rate_limits=RateLimitConfig(window_seconds=2, overrides={"validate_tin": 3}))
    with (
        run_in_thread(config) as limited,
        # The simulator runs in this process: a busy machine can hold a call between its grant and
        # its arrival for a while, so the arrival margin is 0.5 s of the 2 s window, not 1/60.
        RatePolicy(
            RateLimitSettings(
                window_seconds=2, arrival_margin_seconds=15, overrides={Endpoint.validate_tin: 3}, safety_factor=1.0
            )
        ) as policy,
    ):
        from connector_core.api import MyInvoisClient

        client = MyInvoisClient(limited.base_url, limited.base_url, TAXPAYER, rate_policy=policy)
        for _ in range(5):
            client.validate_tin(docs.DEMO_TIN, "BRN", "202001234567")
        client.close()
        s = stats(limited.base_url)
    assert s["requests"]["validate_tin"] == {"200": 5}
    assert s["max_requests_per_window"]["demo-taxpayer"]["validate_tin"] <= 3


def test_server_error_on_a_read_is_retried(sim, make_client):
    client = make_client()
    result = client.submit([docs.entry()])
    set_faults(sim.base_url, error_rate={"get_submission": 1.0})
    sleeps = []

    def recover(seconds: float) -> None:  # LHDN comes back while we back off
        sleeps.append(seconds)
        if len(sleeps) == 2:
            set_faults(sim.base_url)

    client._sleep = recover
    page = client.get_submission(result.submission_uid)
    assert page.submission_uid == result.submission_uid
    assert len(sleeps) == 2 and all(0 <= s <= 0.05 for s in sleeps)
    r = requests_of(sim.base_url, "get_submission")
    assert r.get("200") == 1 and r.get("500", 0) + r.get("503", 0) == 2


def test_read_gives_up_after_the_configured_attempts(sim, make_client):
    client = make_client()
    client.login()
    set_faults(sim.base_url, error_rate={"get_submission": 1.0})
    with pytest.raises(RetriableError, match="transient"):
        client.get_submission("X")
    assert sum(requests_of(sim.base_url, "get_submission").values()) == client.retry_settings.read_max_attempts


def test_lost_submit_is_unknown_never_retried_and_was_stored(sim, make_client):
    client = make_client()
    entry = docs.entry()
    client.login()
    set_faults(sim.base_url, lost_response_rate={"submit": 1.0})
    with pytest.raises(SubmitOutcomeUnknown, match="do not resend"):
        client.submit([entry])
    assert stats(sim.base_url)["submissions"] == 1
    assert sum(requests_of(sim.base_url, "submit").values()) == 1

    # It did arrive: sending the same payload again is a duplicate, with LHDN's Retry-After.
    set_faults(sim.base_url)
    with pytest.raises(DuplicateSubmission) as duplicate:
        client.submit([entry])
    assert duplicate.value.status == 422 and duplicate.value.retry_after > 0
    assert "not a failure" in str(duplicate.value)


def test_server_error_on_submit_is_unknown_and_not_retried(sim, make_client):
    client = make_client()
    client.login()
    set_faults(sim.base_url, error_rate={"submit": 1.0})
    with pytest.raises(SubmitOutcomeUnknown):
        client.submit([docs.entry()])
    assert sum(requests_of(sim.base_url, "submit").values()) == 1


def test_spurious_429_on_submit_is_retried_because_nothing_was_processed(sim, make_client):
    client = make_client()
    client.login()
    set_faults(sim.base_url, spurious_429_rate={"submit": 1.0})
    calls = []

    def stop_throttling(event):
        calls.append(event)
        if event.status == 429:
            set_faults(sim.base_url)

    client.listeners = (stop_throttling,)
    result = client.submit([docs.entry()])
    assert result.submission_uid
    assert requests_of(sim.base_url, "submit") == {"429": 1, "202": 1}
    assert stats(sim.base_url)["submissions"] == 1


def test_bad_structure_refuses_the_batch(sim, make_client):
    client = make_client()
    bad = docs.entry()
    bad["format"] = "PDF"
    with pytest.raises(BatchRefused) as refused:
        client.submit([bad])
    err = refused.value
    assert (err.status, err.code) == (400, "BadStructure")
    assert err.details and "format" in err.details[0].message
    assert err.correlation_id


def test_batches_lhdn_would_refuse_are_refused_before_sending(sim, make_client):
    client = make_client()
    with pytest.raises(BatchRefused, match="at most 100"):
        client.submit([docs.entry(f"X{i}") for i in range(101)])
    with pytest.raises(BatchRefused, match="at least one"):
        client.submit([])
    missing = docs.entry()
    del missing["documentHash"]
    with pytest.raises(BatchRefused, match="documentHash"):
        client.submit([missing])
    assert "submit" not in stats(sim.base_url)["requests"]


def test_rejected_document_inside_an_accepted_submission(sim, make_client):
    client = make_client()
    good, bad = docs.entry(), docs.entry()
    bad["documentHash"] = "0" * 64
    result = client.submit([good, bad])
    assert [code for _, code in result.accepted] == [good["codeNumber"]]
    [(code, error)] = result.rejected
    assert code == bad["codeNumber"]
    assert "Document hash is not valid." in error.summary()


def test_get_submission_pages(sim, make_client):
    client = make_client()
    result = client.submit([docs.entry() for _ in range(5)])
    first = client.get_submission(result.submission_uid, page_no=1, page_size=2)
    assert first.document_count == 5 and first.total_pages == 3 and len(first.documents) == 2
    whole = client.get_submission_all(result.submission_uid, page_size=2)
    assert sorted(d.uuid for d in whole.documents) == sorted(uuid for uuid, _ in result.accepted)
    assert requests_of(sim.base_url, "get_submission") == {"200": 4}  # 1 + 3 pages, each its own call


def test_validated_documents_details_raw_search_cancel_and_reject(sim, make_client):
    client = make_client()
    good = docs.entry()
    broken_raw = docs.invoice_bytes("BROKEN-1").replace(b'"IssueDate":[{"_":"', b'"IssueDate":[{"_":"1999')
    import base64
    import hashlib

    broken = {
        "format": "JSON",
        "document": base64.b64encode(broken_raw).decode(),
        "documentHash": hashlib.sha256(broken_raw).hexdigest(),
        "codeNumber": "BROKEN-1",
    }
    result = client.submit([good, broken])
    page = _wait_final(client, result.submission_uid)
    assert page.overall_status in (SubmissionStatus.PARTIALLY_VALID, SubmissionStatus.INVALID)
    by_code = {d.internal_id: d for d in page.documents}
    valid_doc = by_code[good["codeNumber"]]
    assert valid_doc.status is DocumentStatus.VALID and valid_doc.long_id

    details = client.get_document_details(by_code["BROKEN-1"].uuid)
    assert details.validation_status is DocumentStatus.INVALID
    assert details.errors and all(e.clerk_message().startswith("MyInvois rejected") for e in details.errors)

    raw = client.get_document_raw(valid_doc.uuid)
    assert raw.document.encode() == base64.b64decode(good["document"])

    from datetime import datetime, timedelta, timezone

    now = datetime.now(timezone.utc)
    pages = list(client.iter_search_documents(now - timedelta(hours=1), now + timedelta(minutes=1), page_size=1))
    assert {d.uuid for p in pages for d in p.documents} >= {valid_doc.uuid}

    assert client.validate_tin(docs.DEMO_TIN, "BRN", "202001234567") is True

    buyer = make_client(Credentials(client_id="demo-buyer", client_secret="demo-buyer-secret"))
    rejected = buyer.reject_document(valid_doc.uuid, "Wrong quantity on line 1")
    assert rejected.status is DocumentStatus.REQUESTED_FOR_REJECTION
    cancelled = client.cancel_document(valid_doc.uuid, "Customer asked for rejection")
    assert cancelled.status is DocumentStatus.CANCELLED
    with pytest.raises(Exception) as again:
        client.cancel_document(valid_doc.uuid, "again")
    assert type(again.value).__name__ == "RequestRefused"


def test_logs_never_show_tokens_or_secrets(sim, make_client, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client()
    result = client.submit([docs.entry()])
    client.get_submission(result.submission_uid)
    token = client.tokens.token()
    text = caplog.text
    assert token not in text
    assert "demo-taxpayer-secret" not in text
    assert "Bearer" not in text and "authorization" not in text.lower()
    assert "correlationId" in text


def test_secret_not_in_credentials_repr():
    c = Credentials(client_id="id", client_secret=SecretStr("s3cr3t"))
    assert "s3cr3t" not in repr(c)


def test_unreachable_service_is_retriable_and_says_where(unused_port):
    url = f"http://127.0.0.1:{unused_port}"
    with RatePolicy(RateLimitSettings(profile="off")) as policy:
        from connector_core.api import MyInvoisClient

        from .conftest import FAST_RETRIES

        with MyInvoisClient(url, url, TAXPAYER, rate_policy=policy, retry_settings=FAST_RETRIES) as client:
            with pytest.raises(RetriableError, match=f"could not reach the MyInvois identity service at {url}"):
                client.get_submission("X")
            # The failed login is not repeated in a tight loop: the back-off gate answers.
            with pytest.raises(RetriableError, match="not retrying the login"):
                client.submit([docs.entry()])


@pytest.fixture()
def unused_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_401_with_a_token_another_thread_already_replaced_does_not_use_up_the_refresh(sim):
    """Two callers share one token provider, as the daemon's threads do.

    B's call fails with the old token T while A has already logged in again (T2); then T2 is
    revoked too. B must not blame the credentials: its first 401 was only stale, so it still
    has its own refresh left, logs in (T3) and succeeds.
    """
    import httpx

    from connector_core.api import MyInvoisClient, TokenProvider

    with RatePolicy(RateLimitSettings(profile="off")) as policy:
        provider = TokenProvider(sim.base_url, TAXPAYER, rate_policy=policy)
        a = MyInvoisClient(sim.base_url, sim.base_url, TAXPAYER, token_provider=provider, rate_policy=policy)
        fired = []

        def meanwhile_in_thread_a(response: httpx.Response) -> None:
            if response.status_code == 401 and not fired:
                fired.append(True)
                assert a.validate_tin(docs.DEMO_TIN, "BRN", "202001234567")  # A: 401, fresh login, success
                httpx.post(f"{sim.base_url}/_simulator/revoke-tokens", json={}).raise_for_status()

        hooked = httpx.Client(event_hooks={"response": [meanwhile_in_thread_a]})
        b = MyInvoisClient(
            sim.base_url, sim.base_url, TAXPAYER, http=hooked, token_provider=provider, rate_policy=policy
        )
        provider.token()  # T
        httpx.post(f"{sim.base_url}/_simulator/revoke-tokens", json={}).raise_for_status()
        assert b.validate_tin(docs.DEMO_TIN, "BRN", "202001234567")
        a.close()
        b.close()
        hooked.close()
        provider.close()
    assert fired
    assert stats(sim.base_url)["logins"] == {"demo-taxpayer": 3}  # T, T2 by A, T3 by B
    assert requests_of(sim.base_url, "validate_tin") == {"401": 3, "200": 2}


def test_the_submission_body_is_the_compact_json_lhdn_hashes_for_duplicates():
    """orjson writes the body; it must be the bytes json.dumps wrote, or a resend after an upgrade
    would no longer be recognised by LHDN as the same submission (its duplicate check hashes them)."""
    import json

    entries = [
        {**docs.entry(), "codeNumber": 'INV-Ünïcødé-請求書-"q"-\\-\t-\u2028-\x01'},
        docs.entry(),
    ]
    expected = json.dumps({"documents": entries}, separators=(",", ":"), ensure_ascii=False).encode("utf-8")
    assert MyInvoisClient._submission_body(entries) == expected
