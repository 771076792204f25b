"""docs/operations.md quotes the policies' numbers: they must be the ones the code has."""

from __future__ import annotations

import math
from pathlib import Path

import pytest

from connector_core.api import PRODUCTION_LIMITS, Endpoint, RateLimitSettings, RetrySettings
from connector_core.api.retry import MIN_LOGIN_INTERVAL_S, login_backoff
from connector_core.api.token import DEFAULT_EXPIRY_MARGIN_S
from connector_core.pipeline import reconcile
from connector_core.settings import CycleSettings, SubmissionSettings

DOC = (Path(__file__).resolve().parents[2] / "docs" / "operations.md").read_text("utf-8")
RETRY = RetrySettings()
CYCLES = CycleSettings()


def _s(value: float) -> str:
    return f"{value:g} s"


@pytest.mark.parametrize(
    "quoted",
    [
        f"`read_max_attempts` | {RETRY.read_max_attempts} |",
        f"`connect_timeout_s`, `pool_timeout_s` | {_s(RETRY.connect_timeout_s)} |",
        f"`read_timeout_s`, `write_timeout_s` | {_s(RETRY.read_timeout_s)} |",
        f"| {_s(RETRY.base_delay_s)}, {_s(RETRY.max_delay_s)}, on |",
        f"up to {RETRY.rate_limited_max_retries} such answers",
        f"at most {RETRY.max_retry_after_s:g} s",
        f"or {_s(RETRY.default_retry_after_s)} when it gives none",
        f"no further login for {_s(RETRY.login_backoff_base_s)}",
        f"up to {RETRY.login_backoff_cap_s:g} s",
        f"`expires_in` minus {DEFAULT_EXPIRY_MARGIN_S / 60:g} minutes",
        f"`safety_factor` ({RateLimitSettings().safety_factor:g}",
        f"`window_seconds` ({RateLimitSettings().window_seconds:g};",
        f"`first_poll_delay_seconds` ({_s(CYCLES.first_poll_delay_seconds)})",
        f"`first_poll_delay_per_document_seconds` ({_s(CYCLES.first_poll_delay_per_document_seconds)})",
        f"`poll_min_interval_seconds` ({_s(CYCLES.poll_min_interval_seconds)})",
        f"`poll_backoff_factor` ({CYCLES.poll_backoff_factor:g})",
        f"`poll_max_interval_seconds` ({_s(CYCLES.poll_max_interval_seconds)})",
        f"`slow_poll_after_seconds` ({_s(CYCLES.slow_poll_after_seconds)})",
        f"`slow_poll_interval_seconds` ({_s(CYCLES.slow_poll_interval_seconds)})",
        f"`poll_interval_seconds` ({_s(CYCLES.poll_interval_seconds)})",
        f"`poll_concurrency`\n  ({SubmissionSettings().poll_concurrency})",
        f"`reconcile_after_seconds` ({_s(CYCLES.reconcile_after_seconds)};",
        f"for up to {reconcile.PROBES_PER_SUBMISSION} of its documents",
        f"from {reconcile.WINDOW_BEFORE.total_seconds() / 60:g} minutes",
        f"`reconcile_max_attempts` ({CYCLES.reconcile_max_attempts})",
        f"`reconcile_give_up_after_hours` ({CYCLES.reconcile_give_up_after_hours:g} h)",
        f"within an hour of LHDN's {reconcile.ISSUANCE_LIMIT.total_seconds() / 3600:g}-hour",
        f"`submission.abandoned_after_seconds` ({SubmissionSettings().abandoned_after_seconds:g} s,",
        f"`outage_initial_delay_s` ({_s(RETRY.outage_initial_delay_s)})",
        f"`outage_max_delay_s`\n  ({_s(RETRY.outage_max_delay_s)})",
        f"`outage_summary_interval_s` ({_s(RETRY.outage_summary_interval_s)})",
        f"`cycles.once_outage_give_up_seconds`\n({_s(CYCLES.once_outage_give_up_seconds)})",
    ],
)
def test_the_operations_guide_quotes_the_numbers_the_code_has(quoted: str):
    assert quoted in DOC


def test_login_back_off_steps_and_floor_are_as_documented():
    assert MIN_LOGIN_INTERVAL_S == 5.0
    assert [login_backoff(n, RETRY) for n in range(1, 6)] == [5, 10, 20, 40, 80]
    assert "5 s, then 10, 20, 40 ... up to 600 s" in DOC


@pytest.mark.parametrize(
    ("row", "endpoints"),
    [
        ("Submit Documents", [Endpoint.submit]),
        ("Get Submission", [Endpoint.get_submission]),
        ("Get Document Details", [Endpoint.get_document_details]),
        ("Get Document", [Endpoint.get_document]),
        ("Search Documents, Get Recent Documents", [Endpoint.search, Endpoint.recent]),
        ("Login", [Endpoint.login]),
        ("Cancel, Reject", [Endpoint.cancel, Endpoint.reject]),
        ("Validate / Search taxpayer TIN, QR code", [Endpoint.validate_tin, Endpoint.search_tin, Endpoint.qr]),
    ],
)
def test_the_rate_table_matches_the_limits_and_the_safety_factor(row: str, endpoints: list[Endpoint]):
    settings = RateLimitSettings()
    for endpoint in endpoints:
        published = PRODUCTION_LIMITS[endpoint]
        ours = settings.limit_for(endpoint)
        assert ours == math.floor(published * settings.safety_factor)
        assert f"| {row} | {published} | {ours} |" in DOC
