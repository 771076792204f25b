"""MyInvois unreachable, or refusing a profile's login (issue 11, "Honest signals").

Before: with MyInvois down, every beat of the run loop (2 s) wrote a WARNING and a ``not_sent``
submission row, 299 of each in ten minutes, and a refused login was one INFO line. Now an
outage is backed off from, told once when it starts, summarised while it lasts and once when
it ends, and leaves no row per attempt; a refused login is one ERROR and one incident.

"Unreachable" here is a loopback port with nothing listening (connection refused), later
taken by a real simulator to end the outage. Ten minutes of outage are lived on a fake
monotonic clock driving the back-off (and the token provider's login back-off), beat by beat,
as the daemon's jobs would run them."""

from __future__ import annotations

import json
import logging
import socket
from collections import Counter

import httpx
import pytest
from sqlalchemy import select

from connector_core.exitcodes import ExitCode
from connector_core.ledger import Ledger
from connector_core.ledger.schema import documents
from connector_core.observability.server import MetricsServer
from connector_core.observability.wiring import Monitoring
from connector_core.pipeline.sending import BatchOutcome
from connector_core.simulator import SimulatorConfig
from connector_core.simulator.server import RunningSimulator
from tests.exactly_once.conftest import make_connector, set_faults, valid_documents_at_myinvois
from tests.exactly_once.erp import MemoryErp
from tests.exactly_once.test_scenarios import fetch, poll_and_report, submission_states, submit

pytestmark = pytest.mark.slow

#: The daemon's poll job wakes every 2 s and its fetch-and-submit job every 60 s (the defaults).
BEAT_S = 2.0
FETCH_EVERY_BEATS = 30
OUTAGE_S = 600.0


class FakeClock:
    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


class Nowhere:
    """A loopback address where nothing listens (connection refused), and the simulator that
    later takes its port to end the outage."""

    def __init__(self) -> None:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            self.port = s.getsockname()[1]
        self.base_url = f"http://127.0.0.1:{self.port}"
        self.running: RunningSimulator | None = None

    def come_up(self) -> RunningSimulator:
        config = SimulatorConfig(seed=11, validation={"delay_seconds": 0.0, "per_document_seconds": 0.0})
        self.running = RunningSimulator(config, port=self.port)
        return self.running

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()


@pytest.fixture()
def nowhere():
    place = Nowhere()
    yield place
    place.stop()


def _connector(tmp_path, ledger_url, target, erp, **overrides):
    retry = {"jitter": False, **overrides.pop("retry", {})}
    return make_connector(tmp_path, ledger_url, target, {"erp": erp}, retry=retry, **overrides)


def _lines(caplog) -> list[logging.LogRecord]:
    """Every line an operator sees at the default level, from any logger (httpx's included)."""
    return [r for r in caplog.records if r.levelno >= logging.INFO]


def test_ten_minutes_of_myinvois_down_write_no_row_and_a_few_lines_then_everything_goes_once(
    tmp_path, ledger_url, nowhere, caplog
):
    erp = MemoryErp()
    for n in range(5):
        erp.add(f"k{n}")
    clock = FakeClock()
    with _connector(tmp_path, ledger_url, nowhere, erp) as c:
        monitoring = Monitoring(c.settings, serve=False)
        c.ctx.observers.append(monitoring.observe)
        c.ctx.availability.clock = clock
        # The login back-off counts on the same fake clock, so logins are really attempted
        # (and refused by the closed port) whenever the outage's back-off lets one through.
        c.clients["main"].tokens._clock = clock
        caplog.set_level(logging.INFO)
        fetch(c)
        caplog.clear()

        beats = int(OUTAGE_S / BEAT_S)
        for beat in range(beats):
            if beat % FETCH_EVERY_BEATS == 0:
                c.fetch_and_submit_cycle()
            c.submit_cycle()
            c.poll_cycle()
            clock.advance(BEAT_S)

        outage = c.ctx.availability.snapshot()["unreachable"]["main"]
        attempts = outage["attempts"]
        lines = _lines(caplog)
        # No row per attempt: nothing ever left this host, so nothing is recorded as sent.
        assert submission_states(c) == []
        assert len(c.ledger.sends.pending_documents("main", 10)) == 5
        # 5 s doubling to 300 s: a handful of attempts in ten minutes, not one every beat.
        assert 3 <= attempts <= 12, attempts
        assert len(lines) < 20, [r.getMessage() for r in lines]
        assert len(lines) <= attempts, [r.getMessage() for r in lines]
        start = [r for r in lines if "cannot be reached" in r.getMessage()]
        assert len(start) == 1 and start[0].levelno == logging.WARNING
        said = start[0].getMessage()
        assert "'main'" in said and "login" in said and "ConnectError" in said
        summaries = [r.getMessage() for r in lines if "still unreachable" in r.getMessage()]
        assert len(summaries) == 1 and "'main'" in summaries[0] and "attempts" in summaries[0]
        incidents = [i for i in c.ledger.journal.recent_incidents(50) if i["kind"] == "myinvois_unreachable"]
        assert len(incidents) == 1 and incidents[0]["subject"] == "main"
        ok, _reasons, details = monitoring.health.status()
        assert ok and any("'main'" in d and "unreachable" in d for d in details["degraded"]), details
        with MetricsServer(monitoring.metrics, monitoring.health, port=0) as server:
            answer = httpx.get(f"{server.url}/healthz", timeout=10)
        # Degraded, not unhealthy: a probe must not restart a connector for LHDN's outage.
        assert answer.status_code == 200 and answer.json()["status"] == "degraded", answer.text

        # MyInvois comes back: the next try after the back-off sends every invoice, once.
        sim = nowhere.come_up()
        caplog.clear()
        clock.advance(c.settings.retry.outage_max_delay_s + c.settings.retry.login_backoff_cap_s)
        report = submit(c)
        assert BatchOutcome.ACCEPTED in report.outcomes
        poll_and_report(c)
        assert {r.status for r in erp.rows.values()} == {"valid"}
        for n in range(5):
            assert len(valid_documents_at_myinvois(sim, f"INV-k{n}")) == 1
        # Every one closed: its documents are Valid, watched for the 72-hour cancellation window.
        assert Counter(submission_states(c)) == Counter({"watching": len(submission_states(c))})
        ended = [r for r in _lines(caplog) if "reachable again" in r.getMessage()]
        assert len(ended) == 1 and ended[0].levelno == logging.INFO and "'main'" in ended[0].getMessage()
        assert c.ctx.availability.unreachable_for("main") is None
        assert monitoring.health.status()[2]["degraded"] == []
        with MetricsServer(monitoring.metrics, monitoring.health, port=0) as server:
            assert httpx.get(f"{server.url}/healthz", timeout=10).json()["status"] == "ok"
        monitoring.close()


def test_run_once_gives_up_on_a_myinvois_that_stays_unreachable(tmp_path, ledger_url, nowhere):
    erp = MemoryErp()
    for n in range(3):
        erp.add(f"k{n}")
    with _connector(
        tmp_path,
        ledger_url,
        nowhere,
        erp,
        retry={"outage_initial_delay_s": 0.05, "outage_max_delay_s": 0.2},
        cycles={"once_outage_give_up_seconds": 1.0, "poll_interval_seconds": 0.05, "once_timeout_seconds": 120},
    ) as c:
        summary = c.run_once()
    assert not summary.finished
    assert summary.myinvois_problem and "could not be reached for profile 'main'" in summary.myinvois_problem
    assert "once_outage_give_up_seconds" in summary.myinvois_problem
    assert summary.exit_code() is ExitCode.MYINVOIS_UNAVAILABLE
    # It stopped at the outage limit, not at once_timeout_seconds.
    assert summary.duration_s < 120
    assert summary.counts == {"pending": 3}
    # Attempts that never left this host are not submissions, in the summary as in the ledger.
    assert summary.submissions == 0


def test_a_refused_login_is_one_error_naming_the_profile_one_incident_and_no_tight_loop(tmp_path, ledger_url, simulator, caplog):
    erp = MemoryErp()
    for n in range(3):
        erp.add(f"k{n}")
    wrong_secret = "not-the-secret-4711"
    c = _connector(tmp_path, ledger_url, simulator, erp)
    settings = c.settings
    c.close()
    profile = settings.profiles["main"].model_copy(update={"client_secret": wrong_secret})
    settings = settings.model_copy(update={"profiles": {"main": profile}})
    from connector_core.runtime import Connector

    with Connector(settings, host=c.host) as c:
        monitoring = Monitoring(settings, serve=False)
        c.ctx.observers.append(monitoring.observe)
        events: list[str] = []
        c.ctx.observers.append(lambda event, fields: events.append(event))
        caplog.set_level(logging.INFO)
        fetch(c)
        first = submit(c)
        second = submit(c)  # inside the login back-off: LHDN is not asked again
        assert first.outcomes == [BatchOutcome.AUTH_FAILED] and second.outcomes == [BatchOutcome.AUTH_FAILED]
        logins = httpx.get(f"{simulator.base_url}/_simulator/stats", timeout=10).json()["requests"].get("login", {})
        assert sum(logins.values()) == 1, logins
        # Sentry hears of it once per refusal, like the log and the incidents.
        assert events.count("login_failed") == 1 and events.count("login_refused") == 1, events
        errors = [r for r in _lines(caplog) if r.levelno >= logging.ERROR]
        assert len(errors) == 1, [r.getMessage() for r in errors]
        assert "login of profile 'main' refused" in errors[0].getMessage() and "invalid_client" in errors[0].getMessage()
        assert all(wrong_secret not in r.getMessage() for r in caplog.records)
        incidents = [i for i in c.ledger.journal.recent_incidents(50) if i["kind"] == "login_failed"]
        assert len(incidents) == 1 and incidents[0]["subject"] == "main" and wrong_secret not in incidents[0]["message"]
        _ok, _reasons, details = monitoring.health.status()
        assert any("login of profile 'main' refused" in d for d in details["degraded"]), details
        # Nothing left this host: no submission row, the invoices wait.
        assert submission_states(c) == []
        assert len(c.ledger.sends.pending_documents("main", 10)) == 3

        summary = c.run_once()
        assert summary.myinvois_problem and "refused the login of profile 'main'" in summary.myinvois_problem
        assert summary.exit_code() is ExitCode.MYINVOIS_UNAVAILABLE
        monitoring.close()


def test_a_5xx_on_submit_stays_in_doubt_backs_off_and_goes_exactly_once_when_myinvois_is_back(tmp_path, ledger_url, simulator, caplog):
    """5xx on submit: MyInvois may have stored it, so it is in doubt (never withdrawn), and the
    profile's sending backs off instead of sending batch after batch into a failing server."""
    erp = MemoryErp()
    for n in range(4):
        erp.add(f"k{n}")
    clock = FakeClock()
    with _connector(tmp_path, ledger_url, simulator, erp, submission={"max_documents": 2}) as c:
        c.ctx.availability.clock = clock
        caplog.set_level(logging.INFO)
        fetch(c)
        c.clients["main"].login()  # the token first: only the submit fails
        set_faults(simulator, error_rate={"submit": 1.0})
        first = submit(c)
        # Both batches went (one 5xx alone is not an outage) and failed: in doubt, not
        # withdrawn; the second 5xx in a row starts the outage, and sending waits.
        assert first.outcomes == [BatchOutcome.IN_DOUBT, BatchOutcome.IN_DOUBT], first.outcomes
        assert submission_states(c) == ["in_doubt", "in_doubt"]
        assert c.ctx.availability.snapshot()["unreachable"]["main"]["endpoint"] == "submit"
        again = submit(c)
        assert again.outcomes == [] and submission_states(c) == ["in_doubt", "in_doubt"]

        set_faults(simulator, error_rate=0.0)
        clock.advance(c.settings.retry.outage_max_delay_s)
        for _ in range(3):
            submit(c)
            poll_and_report(c)
        assert {r.status for r in erp.rows.values()} == {"valid"}
        for n in range(4):
            assert len(valid_documents_at_myinvois(simulator, f"INV-k{n}")) == 1
        starts = [r for r in _lines(caplog) if "cannot be reached" in r.getMessage()]
        ends = [r for r in _lines(caplog) if "reachable again" in r.getMessage()]
        assert len(starts) == 1 and len(ends) == 1


def test_the_cli_run_once_against_an_unreachable_myinvois_exits_5_with_one_readable_reason(tmp_path, nowhere):
    """The whole command, as a scheduler runs it: a clear line naming the profile and what to
    check, exit code 5, no traceback, no submission row, and the invoices kept for the next run."""
    from tests.core.test_end_to_end import demo_config, run_cli

    config = demo_config(tmp_path, api_base_url=nowhere.base_url)
    text = config.read_text()
    text = text.replace(
        "[cycles]\n",
        "[retry]\noutage_initial_delay_s = 0.1\noutage_max_delay_s = 0.2\n\n"
        "[cycles]\nonce_outage_give_up_seconds = 1.0\npoll_interval_seconds = 0.1\n",
    )
    text = text.replace("[simulator]\n", "[observability]\nmetrics_port = 0\n\n[simulator]\n")
    config.write_text(text)
    result = run_cli("--config", str(config), "run", "--once", cwd=tmp_path, timeout=120)
    assert result.returncode == ExitCode.MYINVOIS_UNAVAILABLE, result.stdout + result.stderr
    assert "Traceback" not in result.stdout + result.stderr
    assert "MyInvois could not be reached for profile 'demo'" in result.stdout
    assert "once_outage_give_up_seconds" in result.stdout
    # One WARNING when it started: not one per attempt.
    assert (result.stdout + result.stderr).count("MyInvois cannot be reached for profile 'demo'") == 1

    status = run_cli("--config", str(config), "status", "--json", cwd=tmp_path)
    report = json.loads(status.stdout)
    assert [i["kind"] for i in report["incidents"]].count("myinvois_unreachable") == 1
    ledger = Ledger(f"sqlite:///{tmp_path / 'var' / 'demo' / 'ledger.sqlite'}")
    try:
        assert ledger.status.find_submissions() == []
        assert set(ledger.status.counts_by_state()) <= {"pending", "locally_invalid"}
    finally:
        ledger.close()


def test_a_submit_refused_at_connect_with_a_valid_token_is_withdrawn_not_recorded(tmp_path, ledger_url, nowhere, caplog):
    """The token is still good, but the submit cannot connect: the client's own retries fail,
    the claimed submission is withdrawn (no row), the documents are pending again with their
    attempt not counted, and the outage names the submit endpoint."""
    erp = MemoryErp()
    for n in range(3):
        erp.add(f"k{n}")
    with _connector(tmp_path, ledger_url, nowhere, erp) as c:
        nowhere.come_up()
        c.clients["main"].login()
        nowhere.stop()  # MyInvois goes away; the token stays valid in the connector
        caplog.set_level(logging.INFO)
        fetch(c)
        report = submit(c)
        assert report.outcomes == [BatchOutcome.UNREACHABLE] and report.submissions == 0
        assert submission_states(c) == []
        pending = c.ledger.sends.pending_documents("main", 10)
        assert len(pending) == 3
        with c.ledger.engine.connect() as conn:
            assert set(conn.execute(select(documents.c.attempts)).scalars()) == {0}
        outage = c.ctx.availability.snapshot()["unreachable"]["main"]
        assert outage["endpoint"] == "submit" and "ConnectError" in outage["cause"]
        assert len([r for r in _lines(caplog) if r.levelno >= logging.WARNING]) == 1
