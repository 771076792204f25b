"""The service recipes agree with the code: the unit is valid for systemd and has the
directives a safe unattended service needs, and the container checks the health endpoint on
the port the settings default to."""

from __future__ import annotations

import re
import shutil
import subprocess
from pathlib import Path

import pytest

from connector_core.observability.settings import ObservabilitySettings

REPO = Path(__file__).resolve().parents[2]
UNIT = REPO / "config" / "myinvois-connector.service"
CONTAINERFILE = REPO / "Containerfile"


def directives(section: str) -> dict[str, list[str]]:
    found: dict[str, list[str]] = {}
    current = None
    for raw in UNIT.read_text().splitlines():
        line = raw.strip()
        if line.startswith("[") and line.endswith("]"):
            current = line[1:-1]
        elif current == section and line and not line.startswith("#") and "=" in line:
            key, _, value = line.partition("=")
            found.setdefault(key, []).append(value)
    return found


def test_unit_runs_the_daemon_safely():
    service = directives("Service")
    assert service["Type"] == ["simple"]
    assert service["ExecStart"] == [
        "/opt/myinvois-connector/.venv/bin/myinvois-connector --config /etc/myinvois-connector/connector.toml run"
    ]
    assert service["User"] == ["myinvois-connector"]
    assert service["KillSignal"] == ["SIGTERM"]
    assert int(service["TimeoutStopSec"][0]) >= 60
    assert service["Restart"] == ["on-failure"]
    for key, value in {"NoNewPrivileges": "yes", "ProtectSystem": "strict", "PrivateTmp": "yes"}.items():
        assert service[key] == [value], key
    assert "/var/lib/myinvois-connector" in service["ReadWritePaths"]
    assert any(v.startswith("client-secret:") for v in service["LoadCredential"])
    assert directives("Unit")["StartLimitIntervalSec"] == ["0"]


def test_unit_passes_systemd_analyze_verify(tmp_path):
    analyze = shutil.which("systemd-analyze")
    if analyze is None:
        pytest.skip("systemd-analyze is not installed")
    # verify checks that ExecStart exists; the installed path does not exist on a test machine.
    unit = tmp_path / UNIT.name
    unit.write_text(UNIT.read_text().replace("/opt/myinvois-connector/.venv/bin/myinvois-connector", "/bin/true"))
    result = subprocess.run([analyze, "verify", str(unit)], capture_output=True, text=True, timeout=30)
    problems = [line for line in (result.stdout + result.stderr).splitlines() if UNIT.name in line]
    assert result.returncode == 0 and not problems, result.stdout + result.stderr


def test_container_checks_health_on_the_default_port_as_a_non_root_user():
    text = CONTAINERFILE.read_text()
    port = ObservabilitySettings().metrics_port
    assert re.search(rf"HEALTHCHECK .*\n?.*127\.0\.0\.1:{port}/healthz", text)
    assert f"EXPOSE {port}" in text
    assert re.search(r"^FROM python:3\.11-slim$", text, re.M)
    user = re.findall(r"^USER (\S+)", text, re.M)
    assert user and not user[-1].startswith(("root", "0"))
    assert 'VOLUME ["/var/lib/myinvois-connector"]' in text
    assert 'CMD ["run"]' in text and re.search(r'^ENTRYPOINT \["myinvois-connector"', text, re.M)
