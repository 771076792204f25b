"""The outage back-off of one profile (connector_core/pipeline/availability.py), on a clock the
test drives: what counts as a new failed attempt, and so how long a profile is parked."""

from __future__ import annotations

from connector_core.api.retry import RetrySettings
from connector_core.pipeline.availability import Availability


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _availability(clock: _Clock) -> tuple[Availability, list[tuple]]:
    incidents: list[tuple] = []
    settings = RetrySettings(jitter=False, outage_initial_delay_s=5, outage_max_delay_s=300)
    availability = Availability(settings, incident=lambda *a: incidents.append(a), emit=lambda *a, **k: None, clock=clock)
    return availability, incidents


def test_calls_in_flight_when_the_back_off_starts_are_one_failed_round_not_one_each():
    clock = _Clock()
    availability, incidents = _availability(clock)
    # Four submitters and the poller were all waiting on MyInvois when it failed.
    for endpoint in ("submit", "submit", "submit", "submit", "get_submission"):
        availability.unreachable("main", endpoint, "HTTP 503")
    assert availability.seconds_until_try("main") == 5.0
    assert len(incidents) == 1
    assert "5 attempt" not in (availability.describe_outage("main") or "")

    # The next round fails too: now the delay doubles, once.
    clock.now += 5.0
    assert availability.may_try("main")
    availability.unreachable("main", "submit", "HTTP 503")
    availability.unreachable("main", "get_submission", "HTTP 503")
    assert availability.seconds_until_try("main") == 10.0
    assert "2 attempt(s)" in (availability.describe_outage("main") or "")


def test_an_answer_ends_the_outage_and_the_next_one_starts_from_the_first_delay():
    clock = _Clock()
    availability, incidents = _availability(clock)
    for _ in range(3):
        availability.unreachable("main", "submit", "timeout")
        clock.now += availability.seconds_until_try("main")
    assert availability.seconds_until_try("main") == 0.0
    availability.reached("main")
    assert availability.unreachable_for("main") is None
    availability.unreachable("main", "submit", "timeout")
    assert availability.seconds_until_try("main") == 5.0
    assert len(incidents) == 2
