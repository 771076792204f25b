"""Over real loopback HTTP: run_in_thread, the lost-response fault, and the command line."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest
from click.testing import CliRunner

from connector_core.simulator import run_in_thread
from connector_core.simulator.cli import banner, load_config, simulator_command
from connector_core.simulator.demo import submission_body

from .helpers import FINAL_DEADLINE_SECONDS, TAXPAYER_TIN, invoice, load_sample, make_config, prepare_sample

FORM = {"client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret", "grant_type": "client_credentials",
        "scope": "InvoicingAPI"}


def bearer(client: httpx.Client) -> dict[str, str]:
    token = client.post("/connect/token", data=FORM).json()["access_token"]
    return {"Authorization": f"Bearer {token}"}


def test_run_in_thread_serves_login_submit_and_poll_to_valid():
    with run_in_thread(make_config()) as sim:
        assert re.fullmatch(r"http://127\.0\.0\.1:\d+", sim.base_url)
        assert sim.app.state.simulator is sim.simulator
        with httpx.Client(base_url=sim.base_url, timeout=10) as client:
            headers = bearer(client)
            document = prepare_sample(load_sample("1.0-Invoice-Sample.json"), internal_id="HTTP-1")
            response = client.post("/api/v1.0/documentsubmissions", json=submission_body([(document, "HTTP-1")]),
                                   headers=headers)
            assert response.status_code == 202
            uid = response.json()["submissionUid"]
            deadline = time.monotonic() + FINAL_DEADLINE_SECONDS
            while (body := client.get(f"/api/v1.0/documentsubmissions/{uid}", headers=headers).json())[
                    "overallStatus"] == "in progress":
                assert time.monotonic() < deadline
                time.sleep(0.02)
            assert body["overallStatus"] == "valid"
            assert body["documentSummary"][0]["issuerTin"] == TAXPAYER_TIN
    with pytest.raises(httpx.ConnectError):
        httpx.get(sim.base_url + "/_simulator/stats", timeout=2)


def test_lost_response_over_http_is_a_connection_error_after_commit():
    config = make_config(faults={"lost_response_rate": {"submit": 1.0}})
    with run_in_thread(config) as sim, httpx.Client(base_url=sim.base_url, timeout=10) as client:
        headers = bearer(client)
        body = json.dumps(submission_body([(invoice("LOST-1"), "LOST-1")]))
        with pytest.raises(httpx.TransportError):
            client.post("/api/v1.0/documentsubmissions", content=body,
                        headers={**headers, "Content-Type": "application/json"})
        stats = client.get("/_simulator/stats").json()
        assert stats["submissions"] == 1
        assert stats["accepted_by_invoice"] == {"C25845632020|LOST-1": 1}
        # the simulator keeps serving after the aborted connection
        client.post("/_simulator/faults", json={})
        retried = client.post("/api/v1.0/documentsubmissions", content=body,
                              headers={**headers, "Content-Type": "application/json"})
        assert retried.status_code == 422


def test_over_http_responses_carry_rate_headers_and_correlation_id():
    config = make_config(rate_limits={"profile": "sandbox"})
    with run_in_thread(config) as sim, httpx.Client(base_url=sim.base_url) as client:
        response = client.post("/connect/token", data=FORM)
        assert response.headers["x-rate-limit-limit"] == "6"
        assert response.headers["x-rate-limit-remaining"] == "5"
        assert response.headers["correlationid"]


def test_config_file_and_options_combine(tmp_path: Path):
    path = tmp_path / "sim.toml"
    path.write_text('seed = 3\noverall_status_style = "pascal"\n[rate_limits]\nprofile = "sandbox"\n'
                    '[faults]\nerror_rate = 0.1\n[validation]\ndelay_seconds = 1.5\n')
    config = load_config(path, {"rate_limits.window_seconds": 5.0, "faults.error_rate": 0.2, "seed": None})
    assert config.seed == 3 and config.overall_status_style == "pascal"
    assert config.rate_limits.profile == "sandbox" and config.rate_limits.window_seconds == 5.0
    assert config.faults.error_rate == 0.2 and config.validation.delay_seconds == 1.5
    text = banner(config, "http://127.0.0.1:9")
    for credential in ("demo-taxpayer / demo-taxpayer-secret", "C25845632020", "demo-intermediary / demo-intermediary-secret",
                       "demo-buyer / demo-buyer-secret", "http://127.0.0.1:9"):
        assert credential in text


def test_bad_configuration_is_one_line_and_exit_code_2(tmp_path: Path):
    path = tmp_path / "bad.toml"
    path.write_text('[faults]\nerror_rate = 3\n')
    result = CliRunner().invoke(simulator_command, ["--config", str(path), "--port", "0"])
    assert result.exit_code == 2
    assert "configuration is not valid" in result.output


def test_command_line_starts_prints_url_and_credentials_and_serves():
    env = {**os.environ, "PYTHONUNBUFFERED": "1"}
    process = subprocess.Popen(
        [sys.executable, "-c", "from connector_core.cli import main; main()", "simulator", "--port", "0",
         "--rate-profile", "sandbox", "--window-seconds", "10", "--validation-delay", "0.1", "--seed", "5",
         "--log-level", "warning"],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, env=env)
    try:
        first = process.stdout.readline()
        match = re.search(r"listening on (http://127\.0\.0\.1:\d+)", first)
        assert match, first
        rest = "".join(process.stdout.readline() for _ in range(8))
        assert "demo-taxpayer / demo-taxpayer-secret" in rest
        stats = httpx.get(match.group(1) + "/_simulator/stats", timeout=5).json()
        assert stats["window_seconds"] == 10 and stats["limits"]["login"] == 6
        assert httpx.post(match.group(1) + "/connect/token", data=FORM, timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=10)


def test_every_command_line_option_sets_its_configuration_field(tmp_path: Path):
    from connector_core.simulator.cli import OPTION_FIELDS, config_from_options

    path = tmp_path / "base.toml"
    path.write_text("seed = 1\n[faults]\nerror_rate = 0.5\n")
    args = ["--config", str(path), "--host", "127.0.0.1", "--port", "0",
            "--rate-profile", "sandbox", "--window-seconds", "6", "--token-lifetime", "120",
            "--validation-delay", "0.5", "--per-document-delay", "0.02", "--latency-ms", "10",
            "--latency-jitter-ms", "20", "--error-rate", "0.1", "--spurious-429-rate", "0.2",
            "--lost-response-rate", "0.3", "--revoke-rate", "0.04", "--slow-validation-rate", "0.05",
            "--slow-validation-seconds", "7", "--seed", "99", "--overall-status-style", "title"]
    context = simulator_command.make_context("simulator", args)
    params = dict(context.params)
    options = {name: params[name] for name in OPTION_FIELDS}
    config = config_from_options(params["config_path"], options)
    assert config.rate_limits.profile == "sandbox" and config.rate_limits.window_seconds == 6
    assert config.token_lifetime_seconds == 120
    assert config.validation.delay_seconds == 0.5 and config.validation.per_document_seconds == 0.02
    faults = config.faults
    assert (faults.latency_ms, faults.latency_jitter_ms) == (10, 20)
    assert (faults.error_rate, faults.spurious_429_rate, faults.lost_response_rate, faults.revoke_rate) == (
        0.1, 0.2, 0.3, 0.04)
    assert (faults.slow_validation_rate, faults.slow_validation_seconds) == (0.05, 7)
    assert config.seed == 99 and config.overall_status_style == "title"
    # options not given keep the file's value
    sparse = simulator_command.make_context("simulator", ["--config", str(path)]).params
    kept = config_from_options(sparse["config_path"], {name: sparse[name] for name in OPTION_FIELDS})
    assert kept.seed == 1 and kept.faults.error_rate == 0.5


def test_demo_module_prints_a_valid_invoice_for_the_walkthrough():
    from .helpers import details, login, make_client, submit_one

    output = subprocess.run([sys.executable, "-m", "connector_core.simulator.demo", "CLI-1"], capture_output=True,
                            check=True, text=True).stdout
    document = json.loads(output)
    assert document["Invoice"][0]["ID"][0]["_"] == "CLI-1"
    client = make_client()
    headers = login(client)
    assert details(client, headers, submit_one(client, headers, document, "CLI-1"))["status"] == "Valid"


def test_run_in_thread_on_a_taken_port_fails_with_a_clear_error():
    with run_in_thread(make_config()) as first:
        with pytest.raises(RuntimeError, match=f"could not start on 127.0.0.1:{first.port}"):
            run_in_thread(make_config(), port=first.port)
        assert httpx.get(first.base_url + "/_simulator/stats").status_code == 200
