"""The example plugin of docs/writing-a-plugin.md, installed for real and run by the real command.

``docs/examples/myinvois-plugin-jsonl`` is built and installed with pip into a throw-away
folder (``--target``), which is then put on ``PYTHONPATH`` of ``myinvois-connector`` run in a
subprocess. Nothing is imported from the example by this test: the connector must find it
through its ``myinvois_connector`` entry point, exactly as it finds a plugin from PyPI.

The build uses pip's default isolated build (setuptools from the package index, as for the
project's own ``pip install -e .``), so it works on a fresh checkout without extra tools.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
EXAMPLE = ROOT / "docs" / "examples" / "myinvois-plugin-jsonl"
CLI = Path(sys.executable).parent / "myinvois-connector"


@pytest.fixture(scope="session")
def example_copy(tmp_path_factory) -> Path:
    """A copy of the example folder: a build writes build/ and *.egg-info next to the sources,
    and a run of the sample writes var/."""
    return tmp_path_factory.mktemp("src") / EXAMPLE.name


@pytest.fixture(scope="session")
def installed(tmp_path_factory, example_copy) -> Path:
    """The example installed with pip into a folder of its own; returns that folder."""
    target = tmp_path_factory.mktemp("site")
    source = example_copy
    shutil.copytree(EXAMPLE, source, ignore=shutil.ignore_patterns("var", "build", "*.egg-info", "__pycache__"))
    result = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "--quiet", "--target", str(target), str(source)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, f"pip could not install the example plugin:\n{result.stdout}\n{result.stderr}"
    assert list(target.glob("myinvois_plugin_jsonl-*.dist-info")), "pip installed no distribution metadata (no entry point)"
    return target


def _env(site: Path, tmp_path: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYINVOIS_")}
    env["PYTHONPATH"] = str(site)
    env["HOME"] = str(tmp_path)
    return env


def test_plugins_command_lists_the_installed_plugin_with_its_hooks(installed, tmp_path):
    result = subprocess.run([str(CLI), "plugins", "--json"], capture_output=True, text=True, env=_env(installed, tmp_path), timeout=60)
    assert result.returncode == 0, result.stderr
    plugins = {p["name"]: p for p in json.loads(result.stdout)}
    assert "jsonl" in plugins, f"the installed plugin was not found through its entry point: {sorted(plugins)}"
    jsonl = plugins["jsonl"]
    assert jsonl["module"] == "myinvois_jsonl.plugin"
    assert jsonl["distribution"] == "myinvois-plugin-jsonl"
    assert jsonl["kinds"] == ["jsonl"]
    assert jsonl["hooks"] == ["fetch_pending_invoices", "on_invoices_recorded", "on_submission_result", "register_source_kinds"]
    assert jsonl["error"] is None
    # The built-in plugins still load next to it.
    assert {"csv", "sql", "odoo"} <= set(plugins)

    # The text form shows the same, as the docs say.
    text = subprocess.run([str(CLI), "plugins"], capture_output=True, text=True, env=_env(installed, tmp_path), timeout=60)
    assert "jsonl: myinvois_jsonl.plugin (myinvois-plugin-jsonl)" in text.stdout
    assert "source kind: jsonl - " in text.stdout


def _config(tmp_path: Path, invoices: Path, results: Path, extra_option: str = "") -> Path:
    config = tmp_path / "connector.toml"
    config.write_text(
        f"""
environment = "simulator"
state_dir = "{tmp_path / 'state'}"

[simulator]
validation = {{ delay_seconds = 0.2, per_document_seconds = 0.01 }}

[observability]
metrics_port = 0

[cycles]
first_poll_delay_seconds = 0.2
poll_min_interval_seconds = 0.2
poll_max_interval_seconds = 0.5
once_timeout_seconds = 60

[profiles.demo]
tin = "C25845632020"
client_id = "demo-taxpayer"
client_secret = "demo-taxpayer-secret"

[sources.erp]
kind = "jsonl"
profile = "demo"

[sources.erp.options]
invoices = "{invoices}"
results = "{results}"
{extra_option}
""",
        encoding="utf-8",
    )
    return config


def test_run_once_writes_valid_outcomes_with_uuids_to_the_results_file(installed, tmp_path):
    invoices = tmp_path / "invoices.jsonl"
    sample = (EXAMPLE / "sample" / "invoices.jsonl").read_text(encoding="utf-8")
    # The two sample invoices, and a line that is not an invoice.
    invoices.write_text(sample + '{"source_key": "JL-BAD", "number": "JL-BAD"}\n', encoding="utf-8")
    results = tmp_path / "out" / "results.jsonl"
    config = _config(tmp_path, invoices, results)

    run = subprocess.run(
        [str(CLI), "--config", str(config), "--log-format", "text", "run", "--once", "--json"],
        capture_output=True,
        text=True,
        env=_env(installed, tmp_path),
        cwd=tmp_path,
        timeout=90,
    )
    assert run.returncode == 3, f"run --once failed:\n{run.stdout}\n{run.stderr}"  # the bad line needs attention
    summary = json.loads(run.stdout)
    assert summary["finished"] is True
    assert summary["counts"] == {"valid": 2, "locally_invalid": 1}

    lines = [json.loads(line) for line in results.read_text(encoding="utf-8").splitlines()]
    by_key = {line["source_key"]: line for line in lines}
    assert len(lines) == 3, lines
    for key in ("JL-1001", "JL-1002"):
        outcome = by_key[key]
        assert outcome["state"] == "valid"
        assert outcome["version"] == 1
        assert outcome["uuid"] and len(outcome["uuid"]) == 26 and outcome["uuid"].isalnum()
        assert outcome["validation_link"].endswith(outcome["long_id"])
        assert outcome["submission_uid"]
    bad = by_key["invoices.jsonl#line=3"]
    assert bad["state"] == "locally_invalid"
    assert any("supplier" in error for error in bad["errors"]), bad["errors"]

    # A second run sends nothing and writes nothing twice.
    again = subprocess.run(
        [str(CLI), "--config", str(config), "run", "--once", "--json"],
        capture_output=True,
        text=True,
        env=_env(installed, tmp_path),
        cwd=tmp_path,
        timeout=90,
    )
    assert again.returncode == 3, again.stderr
    assert json.loads(again.stdout)["submissions"] == 0
    assert len(results.read_text(encoding="utf-8").splitlines()) == 3


def test_a_misspelt_option_of_the_plugin_stops_start_up_naming_the_key(installed, tmp_path):
    config = _config(tmp_path, tmp_path / "in.jsonl", tmp_path / "out.jsonl", extra_option='result_file = "x.jsonl"')
    run = subprocess.run(
        [str(CLI), "--config", str(config), "run", "--once"],
        capture_output=True,
        text=True,
        env=_env(installed, tmp_path),
        cwd=tmp_path,
        timeout=60,
    )
    assert run.returncode == 2
    assert "sources.erp.options.result_file: unknown key" in run.stderr


def test_the_sample_configuration_of_the_guide_runs_as_documented(installed, example_copy, tmp_path):
    """docs/writing-a-plugin.md: from the example folder, `run --once` with sample/connector.toml."""
    env = _env(installed, tmp_path) | {"MYINVOIS_OBSERVABILITY__METRICS_PORT": "0"}
    run = subprocess.run(
        [str(CLI), "--config", "sample/connector.toml", "run", "--once", "--json"],
        capture_output=True,
        text=True,
        env=env,
        cwd=example_copy,
        timeout=90,
    )
    assert run.returncode == 0, f"{run.stdout}\n{run.stderr}"
    assert json.loads(run.stdout)["counts"] == {"valid": 2}
    states = [json.loads(line)["state"] for line in (example_copy / "var" / "results.jsonl").read_text(encoding="utf-8").splitlines()]
    assert states == ["valid", "valid"]
