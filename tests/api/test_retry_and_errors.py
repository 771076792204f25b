"""The retry numbers and the status-to-decision mapping."""

from __future__ import annotations

import email.utils
import time

import pytest
from pydantic import ValidationError

from connector_core.api import (
    AuthenticationFailed,
    BatchRefused,
    DuplicateSubmission,
    Endpoint,
    NotFound,
    RateLimited,
    RequestRefused,
    RetriableError,
    RetrySettings,
    SubmitOutcomeUnknown,
    error_class_for_status,
)
from connector_core.api.retry import backoff_delay, login_backoff, parse_retry_after


def test_backoff_is_capped_exponential_with_full_jitter():
    s = RetrySettings(base_delay_s=0.5, max_delay_s=4)
    assert [backoff_delay(n, s, rng=lambda: 1.0) for n in range(1, 7)] == [0.5, 1, 2, 4, 4, 4]
    assert backoff_delay(3, s, rng=lambda: 0.25) == 0.5
    no_jitter = RetrySettings(base_delay_s=0.5, jitter=False)
    assert backoff_delay(2, no_jitter, rng=lambda: 0.0) == 1.0


def test_retry_after_seconds_and_http_date():
    assert parse_retry_after("30") == 30
    assert parse_retry_after(" 1.5 ") == 1.5
    assert parse_retry_after("-4") == 0
    assert parse_retry_after(None) is None
    assert parse_retry_after("soon") is None
    future = email.utils.formatdate(time.time() + 120, usegmt=True)
    assert 110 < parse_retry_after(future) <= 121


def test_login_backoff_never_faster_than_the_login_limit():
    s = RetrySettings()
    delays = [login_backoff(n, s) for n in range(0, 12)]
    assert delays[0] == 0
    assert all(d >= 5.0 for d in delays[1:])  # 12 logins per minute
    assert delays[1:5] == [5, 10, 20, 40]
    assert max(delays) == s.login_backoff_cap_s
    with pytest.raises(ValidationError, match="12 logins per minute"):
        RetrySettings(login_backoff_base_s=1)


def test_settings_forbid_unknown_keys():
    with pytest.raises(ValidationError):
        RetrySettings(max_retries=3)


@pytest.mark.parametrize(
    ("endpoint", "status", "expected"),
    [
        (Endpoint.submit, 202, None),
        (Endpoint.submit, 400, BatchRefused),
        (Endpoint.submit, 403, BatchRefused),
        (Endpoint.submit, 422, DuplicateSubmission),
        (Endpoint.submit, 429, RateLimited),
        (Endpoint.submit, 500, SubmitOutcomeUnknown),
        (Endpoint.submit, 503, SubmitOutcomeUnknown),
        (Endpoint.get_submission, 500, RetriableError),
        (Endpoint.get_submission, 503, RetriableError),
        (Endpoint.get_document_details, 404, NotFound),
        (Endpoint.cancel, 400, RequestRefused),
        (Endpoint.reject, 403, RequestRefused),
        (Endpoint.login, 400, AuthenticationFailed),
        (Endpoint.login, 403, AuthenticationFailed),
        (Endpoint.login, 502, RetriableError),
        (Endpoint.get_submission, 401, AuthenticationFailed),
    ],
)
def test_status_maps_to_the_decision(endpoint, status, expected):
    assert error_class_for_status(endpoint, status) is expected


def test_errors_quote_the_correlation_id():
    err = RetriableError("MyInvois get_submission answered HTTP 503", correlation_id="JHDSJ8882POY72SG-2828")
    assert str(err) == "MyInvois get_submission answered HTTP 503 (LHDN correlationId JHDSJ8882POY72SG-2828)"
