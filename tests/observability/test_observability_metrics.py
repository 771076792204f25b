"""Metrics after events, the health verdict, and both over real HTTP."""

from __future__ import annotations

import json
import socket
import threading
import time
import urllib.error
import urllib.request

import pytest
from prometheus_client.parser import text_string_to_metric_families

from connector_core.contract import DocumentState
from connector_core.observability.health import HealthMonitor
from connector_core.observability.metrics import ConnectorMetrics
from connector_core.observability.server import MetricsServer, RemoteBindRefused, metrics_server_from_settings
from connector_core.observability.settings import ObservabilitySettings


class SteppedClock:
    """Time that moves only when the test says so, so 'three intervals later' takes no time."""

    def __init__(self, start: float = 1_000_000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def samples(metrics: ConnectorMetrics) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """Every sample of the exposition, parsed by prometheus_client's own parser."""
    parsed = {}
    for family in text_string_to_metric_families(metrics.render().decode()):
        for sample in family.samples:
            parsed[(sample.name, tuple(sorted(sample.labels.items())))] = sample.value
    return parsed


def value(metrics: ConnectorMetrics, name: str, **labels: str) -> float:
    return samples(metrics)[(name, tuple(sorted(labels.items())))]


def test_metrics_text_carries_every_series_after_events():
    m = ConnectorMetrics()
    m.set_document_counts({DocumentState.PENDING: 4, "valid": 10, DocumentState.INVALID: 1})
    m.submission_sent(documents=3)
    m.submission_sent(documents=2)
    m.api_call("submit", 202, 0.3)
    m.api_call("submit", 429, 0.02)
    m.rate_limited("submit")
    m.api_call("login", None, 30.0)
    m.login(True, profile="acme")
    m.login(False, profile="acme")
    m.set_token_issued_at("acme", time.time() - 120)
    m.cycle_finished("poll", 1.5, ok=True)
    m.cycle_finished("poll", 0.2, ok=False)
    m.set_oldest_pending_age(900)
    m.document_final(DocumentState.VALID, 42.0)
    m.document_final("invalid", 7200.0)

    assert value(m, "myinvois_documents", state="pending") == 4
    assert value(m, "myinvois_documents", state="valid") == 10
    assert value(m, "myinvois_documents", state="submitted") == 0  # states not given are zero
    assert value(m, "myinvois_submissions_total") == 2
    assert value(m, "myinvois_submitted_documents_total") == 5
    assert value(m, "myinvois_api_calls_total", endpoint="submit", status="202") == 1
    assert value(m, "myinvois_api_calls_total", endpoint="submit", status="429") == 1
    assert value(m, "myinvois_api_calls_total", endpoint="login", status="error") == 1
    assert value(m, "myinvois_api_call_duration_seconds_count", endpoint="submit") == 2
    assert value(m, "myinvois_api_call_duration_seconds_bucket", endpoint="submit", le="0.05") == 1
    assert value(m, "myinvois_rate_limited_total", endpoint="submit") == 1
    assert value(m, "myinvois_logins_total", profile="acme", outcome="success") == 1
    assert value(m, "myinvois_logins_total", profile="acme", outcome="failure") == 1
    assert 119 <= value(m, "myinvois_token_age_seconds", profile="acme") < 180
    assert value(m, "myinvois_cycle_duration_seconds_count", cycle="poll", outcome="ok") == 1
    assert value(m, "myinvois_cycle_duration_seconds_count", cycle="poll", outcome="failed") == 1
    assert time.time() - value(m, "myinvois_cycle_last_success_timestamp_seconds", cycle="poll") < 60
    assert value(m, "myinvois_oldest_pending_document_age_seconds") == 900
    assert value(m, "myinvois_document_fetch_to_final_seconds_count", state="valid") == 1
    assert value(m, "myinvois_document_fetch_to_final_seconds_sum", state="invalid") == 7200
    assert value(m, "myinvois_connector_info", version=__import__("connector_core").__version__) == 1


def test_document_counts_replace_the_previous_ones():
    m = ConnectorMetrics()
    m.set_document_counts({"pending": 4})
    m.set_document_counts({"valid": 4})
    assert value(m, "myinvois_documents", state="pending") == 0
    assert value(m, "myinvois_documents", state="valid") == 4


def test_misspelt_or_non_final_states_are_refused_instead_of_making_stray_series():
    m = ConnectorMetrics()
    with pytest.raises(ValueError):
        m.set_document_counts({"vaild": 1})
    with pytest.raises(ValueError, match="final state"):
        m.document_final(DocumentState.SUBMITTED, 10)


def test_two_instances_have_separate_registries():
    first, second = ConnectorMetrics(), ConnectorMetrics()
    first.submission_sent(1)
    assert value(first, "myinvois_submissions_total") == 1
    assert value(second, "myinvois_submissions_total") == 0


def test_a_cycle_is_late_after_multiplier_times_its_interval():
    clock = SteppedClock()
    health = HealthMonitor(healthy_cycle_multiplier=3, clock=clock)
    health.register_cycle("poll", 60)

    clock.advance(180)
    assert health.status()[0] is True  # exactly at the limit is still fine
    clock.advance(1)
    ok, reasons, details = health.status()
    assert ok is False
    assert reasons == [
        "cycle 'poll' has not succeeded once for 181 s (runs every 60 s; unhealthy after 180 s; 0 failed run(s) in a row)"
    ]
    assert details["cycles"]["poll"]["late"] is True

    health.cycle_finished("poll", ok=True)
    assert health.status()[0] is True
    # A failing run does not make it unhealthy by itself, a run of them over the limit does.
    clock.advance(60)
    health.cycle_finished("poll", ok=False)
    assert health.status()[0] is True
    clock.advance(121)
    health.cycle_finished("poll", ok=False)
    ok, reasons, _ = health.status()
    assert ok is False and "2 failed run(s) in a row" in reasons[0]


def test_consecutive_login_failures_of_one_profile_make_it_unhealthy_until_a_success():
    health = HealthMonitor(max_consecutive_login_failures=3)
    health.login(False, profile="acme", error="invalid_client")
    health.login(False, profile="acme")
    health.login(True, profile="other")
    assert health.status()[0] is True
    health.login(False, profile="acme", error="invalid_client")
    ok, reasons, details = health.status()
    assert ok is False
    assert reasons == [
        "login of profile 'acme' failed 3 times in a row (last error: invalid_client); check its client id and secret"
    ]
    assert details["logins"]["other"]["failing"] is False
    health.login(True, profile="acme")
    assert health.status()[0] is True


def test_unregistered_cycles_are_reported_but_never_unhealthy():
    clock = SteppedClock()
    health = HealthMonitor(clock=clock)
    health.cycle_finished("adhoc-resend", ok=False)
    clock.advance(10**6)
    ok, _, details = health.status()
    assert ok is True and details["cycles"]["adhoc-resend"]["last_ok"] is False


def get(url: str, accept: str | None = None) -> tuple[int, str, bytes]:
    request = urllib.request.Request(url, headers={"Accept": accept} if accept else {})
    try:
        with urllib.request.urlopen(request, timeout=5) as response:
            return response.status, response.headers["Content-Type"], response.read()
    except urllib.error.HTTPError as error:
        return error.code, error.headers["Content-Type"], error.read()


def test_metrics_and_health_over_http_flip_to_503_when_a_cycle_is_late_or_logins_fail():
    clock = SteppedClock()
    health = HealthMonitor(healthy_cycle_multiplier=2, max_consecutive_login_failures=2, clock=clock)
    metrics = ConnectorMetrics(health)
    health.register_cycle("submit", 30)

    with MetricsServer(metrics, health, port=0) as server:
        metrics.api_call("submit", 202, 0.1)
        metrics.cycle_finished("submit", 2.0, ok=True)

        status, content_type, body = get(f"{server.url}/metrics")
        assert status == 200 and content_type.startswith("text/plain")
        assert b'myinvois_api_calls_total{endpoint="submit",status="202"} 1.0' in body

        status, content_type, body = get(f"{server.url}/metrics", accept="application/openmetrics-text")
        assert status == 200 and content_type.startswith("application/openmetrics-text") and body.endswith(b"# EOF\n")

        status, content_type, body = get(f"{server.url}/healthz")
        assert (status, content_type) == (200, "application/json")
        assert json.loads(body)["status"] == "ok"

        clock.advance(61)  # past 2 x 30 s without a successful submit cycle
        status, _, body = get(f"{server.url}/healthz")
        assert status == 503
        answer = json.loads(body)
        assert answer["status"] == "unhealthy" and "cycle 'submit'" in answer["reasons"][0]

        metrics.cycle_finished("submit", 2.0, ok=True)
        assert get(f"{server.url}/healthz")[0] == 200

        metrics.login(False, profile="acme", error="invalid_client")
        metrics.login(False, profile="acme", error="invalid_client")
        status, _, body = get(f"{server.url}/healthz")
        assert status == 503 and "login of profile 'acme'" in json.loads(body)["reasons"][0]
        assert b'myinvois_logins_total{outcome="failure",profile="acme"} 2.0' in get(f"{server.url}/metrics")[2]

        assert get(f"{server.url}/other")[0] == 404


def test_stop_releases_the_port_for_a_restart():
    metrics, health = ConnectorMetrics(), HealthMonitor()
    server = MetricsServer(metrics, health, port=0)
    server.start()
    port = server.port
    server.stop()
    with pytest.raises(OSError):  # nothing listens any more
        socket.create_connection(("127.0.0.1", port), timeout=1).close()
    again = MetricsServer(metrics, health, port=port)
    again.start()
    try:
        assert get(f"{again.url}/healthz")[0] == 200
    finally:
        again.stop()


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.0.2.10", "metrics.example.com"])
def test_non_loopback_addresses_are_refused_without_allow_remote(host):
    with pytest.raises(RemoteBindRefused, match="allow_remote"):
        MetricsServer(ConnectorMetrics(), HealthMonitor(), host=host, port=0)


def test_all_interfaces_serve_when_explicitly_allowed():
    with MetricsServer(ConnectorMetrics(), HealthMonitor(), host="0.0.0.0", port=0, allow_remote=True) as server:
        assert get(f"http://127.0.0.1:{server.port}/healthz")[0] == 200


def test_ipv6_loopback_is_served():
    if not socket.has_ipv6:
        pytest.skip("no IPv6 on this machine")
    try:
        server = MetricsServer(ConnectorMetrics(), HealthMonitor(), host="::1", port=0)
        server.start()
    except OSError as exc:
        pytest.skip(f"::1 not bindable here: {exc}")
    try:
        assert get(f"{server.url}/healthz")[0] == 200
    finally:
        server.stop()


def test_settings_decide_whether_and_where_to_serve():
    metrics, health = ConnectorMetrics(), HealthMonitor()
    assert metrics_server_from_settings(ObservabilitySettings(metrics_port=0), metrics, health) is None
    local = metrics_server_from_settings(ObservabilitySettings(), metrics, health)
    assert (local.host, local.port) == ("127.0.0.1", 9464)
    # An address written in the configuration is the operator's explicit choice.
    remote = metrics_server_from_settings(
        ObservabilitySettings(metrics_host="0.0.0.0", metrics_port=9100), metrics, health
    )
    assert (remote.host, remote.port) == ("0.0.0.0", 9100)


def test_the_app_serves_both_routes_without_a_socket_and_nothing_is_cached():
    """The app is built apart from its server: what later pages join, and what an in-process
    test can call. /metrics is answered where scrapers look for it, not redirected to /metrics/."""
    import asyncio

    import httpx

    from connector_core.observability.server import build_app

    metrics, health = ConnectorMetrics(), HealthMonitor()
    metrics.api_call("submit", 202, 0.1)

    async def ask(*paths: str) -> list[httpx.Response]:
        transport = httpx.ASGITransport(app=build_app(metrics, health))
        async with httpx.AsyncClient(transport=transport, base_url="http://connector") as client:
            return [await client.get(path) for path in paths]

    scrape, health_answer, missing = asyncio.run(ask("/metrics", "/healthz", "/other"))
    assert scrape.status_code == 200 and scrape.headers["cache-control"] == "no-store"
    assert 'myinvois_api_calls_total{endpoint="submit",status="202"} 1.0' in scrape.text
    assert scrape.headers["content-encoding"] == "gzip"  # asked for by the client, as Prometheus does
    assert health_answer.status_code == 200 and health_answer.headers["cache-control"] == "no-store"
    assert health_answer.json() == {"status": "ok", "reasons": [], "details": health.status()[2]}
    assert missing.status_code == 404 and missing.text == "not found: try /metrics or /healthz\n"


def test_a_taken_port_is_a_warning_and_the_connector_runs_without_the_server(tmp_path, caplog):
    from connector_core.observability.wiring import Monitoring
    from connector_core.settings import Settings

    with socket.socket() as holder:
        holder.bind(("127.0.0.1", 0))
        holder.listen()
        port = holder.getsockname()[1]
        settings = Settings(environment="simulator", state_dir=tmp_path, observability={"metrics_port": port})
        with caplog.at_level("WARNING", logger="connector_core.monitoring"):
            monitoring = Monitoring(settings)
        try:
            assert monitoring.server is None
            (warning,) = [r for r in caplog.records if r.name == "connector_core.monitoring"]
            assert f"metrics server not started on 127.0.0.1:{port}" in warning.getMessage()
            assert "metrics_port to a free port, or 0 to turn it off" in warning.getMessage()
            assert not [t for t in threading.enumerate() if t.name == "metrics-server"]
        finally:
            monitoring.close()


def test_closing_monitoring_stops_the_server_thread_and_frees_the_port(tmp_path):
    """``run --once`` and the daemon's SIGTERM both end in Monitoring.close(): nothing of the
    server may outlive it."""
    from connector_core.observability.wiring import Monitoring
    from connector_core.settings import Settings

    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    monitoring = Monitoring(Settings(environment="simulator", state_dir=tmp_path, observability={"metrics_port": port}))
    assert monitoring.server is not None and monitoring.server.port == port
    assert get(f"http://127.0.0.1:{port}/healthz")[0] == 200
    assert [t.name for t in threading.enumerate()].count("metrics-server") == 1
    monitoring.close()
    assert not [t for t in threading.enumerate() if t.name == "metrics-server"]
    with pytest.raises(OSError):
        socket.create_connection(("127.0.0.1", port), timeout=1).close()


def test_the_documents_gauge_is_counted_again_only_after_a_pause_its_own_cost_sets(tmp_path):
    """After each poll cycle the gauge may be refreshed, but the count reads the documents final
    in the last minutes: a count is followed by a pause a hundred times its own length (so a
    small ledger still follows every second, a large one every few seconds)."""
    from datetime import UTC, datetime

    from connector_core.ledger import Ledger, states
    from connector_core.observability.wiring import Monitoring
    from connector_core.settings import Settings

    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    monitoring = Monitoring(
        Settings(environment="simulator", state_dir=tmp_path, observability={"metrics_port": 0}), serve=False
    )

    def record(key: str) -> None:
        now = datetime.now(UTC)
        row = {"source": "erp", "source_key": key, "version": 1, "fingerprint": key, "profile": "main", "number": key,
               "fetched_at": now, "updated_at": now, "attempts": 0, "refused_as_batch": False, "report_attempts": 0}  # fmt: skip
        with ledger.engine.begin() as conn:
            states.insert_state(conn, states.doc("record"), [row])

    try:
        record("k1")
        monitoring.refresh(ledger)
        assert value(monitoring.metrics, "myinvois_documents", state="pending") == 1
        record("k2")
        monitoring.refresh(ledger)  # at once: within the pause, the gauge keeps the last count
        assert value(monitoring.metrics, "myinvois_documents", state="pending") == 1
        deadline = time.monotonic() + 30
        while value(monitoring.metrics, "myinvois_documents", state="pending") == 1 and time.monotonic() < deadline:
            time.sleep(0.01)
            monitoring.refresh(ledger)
        assert value(monitoring.metrics, "myinvois_documents", state="pending") == 2
    finally:
        monitoring.close()
        ledger.close()
