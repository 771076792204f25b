"""Relative paths in a configuration file resolve against the file's folder, wherever the
process starts; bad URLs and DSNs are one line naming the key, before anything runs."""

from __future__ import annotations

import csv
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from connector_core.plugins import PluginHost
from connector_core.runtime import build_sources
from connector_core.settings import ConfigError, load_settings

REPO = Path(__file__).resolve().parents[2]
CONNECTOR = REPO / ".venv" / "bin" / "myinvois-connector"


def _clean_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("MYINVOIS_")}


def test_the_demo_runs_from_another_directory_and_writes_only_next_to_its_configuration(tmp_path):
    """The README's demo command, from /tmp-like elsewhere, on a copy of the repository's layout."""
    checkout = tmp_path / "checkout"
    shutil.copytree(REPO / "config" / "demo", checkout / "config" / "demo")
    shutil.copy(REPO / "config" / "demo.toml", checkout / "config" / "demo.toml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()

    result = subprocess.run(
        [str(CONNECTOR), "--config", str(checkout / "config" / "demo.toml"), "run", "--once"],
        cwd=elsewhere, env=_clean_env(), capture_output=True, text=True, timeout=180,
    )  # fmt: skip
    assert "13 invoice(s) fetched" in result.stdout, result.stdout + result.stderr
    assert result.returncode in (0, 3), result.stderr  # 3: the two invoices the demo refuses on purpose
    assert list(elsewhere.iterdir()) == []
    state = checkout / "var" / "demo"  # state_dir = "../var/demo" next to config/
    assert (state / "ledger.sqlite").is_file()
    with (state / "outbox" / "results.csv").open(encoding="utf-8", newline="") as fh:
        assert len(list(csv.DictReader(fh))) == 13

    status = subprocess.run(
        [str(CONNECTOR), "--config", str(checkout / "config" / "demo.toml"), "status"],
        cwd=elsewhere, env=_clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert f"Ledger: sqlite:///{state / 'ledger.sqlite'}" in status.stdout, status.stdout + status.stderr


def _write(folder: Path, text: str) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / "connector.toml"
    path.write_text(text)
    return path


COMPANY = """
[sources.shop.options.company]
name = "Syarikat Demo Sdn. Bhd."
tin = "C25845632020"
id_type = "BRN"
id_value = "202001234567"
msic_code = "46510"
business_activity = "Wholesale"
phone = "+60312345678"
address = { lines = ["Lot 66"], city = "Kuala Lumpur", postal_zone = "50480", state = "14" }
"""


def test_every_kind_of_relative_path_resolves_against_the_files_folder(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)  # not the configuration's folder
    conf = tmp_path / "etc" / "myinvois"
    (conf / "secrets").mkdir(parents=True)
    (conf / "secrets" / "client-secret").write_text("the-secret-from-a-file\n")
    config = _write(
        conf,
        f"""
state_dir = "state"
token_cache = "cache/tokens.json"
[ledger]
url = "sqlite:///data/ledger.sqlite"
[rate_limits]
backend = "sqlite:///../shared/limits.sqlite"
[profiles.p]
tin = "C25845632020"
client_id = "id"
client_secret = "$file:secrets/client-secret"
[sources.shop]
kind = "csv"
profile = "p"
[sources.shop.options]
inbox = "in"
archive = "/srv/archive"
outbox = "~/results.csv"
[sources.erp]
kind = "sql"
profile = "p"
[sources.erp.options]
url = "sqlite:///erp/erp.sqlite"
init_scripts = ["sql/ddl.sql", "/opt/demo.sql"]
{COMPANY}""",
    )
    settings = load_settings(config)
    assert settings.config_dir == conf
    assert settings.state_dir == conf / "state"
    assert settings.token_cache_path() == conf / "cache" / "tokens.json"
    assert settings.ledger_url() == f"sqlite:///{conf / 'data' / 'ledger.sqlite'}"
    assert settings.rate_limit_backend() == f"sqlite:///{tmp_path / 'etc' / 'shared' / 'limits.sqlite'}"
    assert settings.profiles["p"].client_secret.get_secret_value() == "the-secret-from-a-file"

    sources, problems = build_sources(settings, PluginHost())
    assert problems == []
    shop = sources["shop"].options
    assert (shop.inbox, shop.archive, shop.outbox) == (conf / "in", Path("/srv/archive"), Path.home() / "results.csv")
    erp = sources["erp"].options
    assert erp.url.get_secret_value() == f"sqlite:///{conf / 'erp' / 'erp.sqlite'}"
    assert erp.init_scripts == [conf / "sql" / "ddl.sql", Path("/opt/demo.sql")]
    # Nothing was created by reading the configuration.
    assert sorted(p.name for p in conf.iterdir()) == ["connector.toml", "secrets"]


def test_an_environment_variable_path_resolves_against_the_files_folder_too(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    config = _write(tmp_path / "conf", "")
    monkeypatch.setenv("MYINVOIS_STATE_DIR", "from-env")
    assert load_settings(config).state_dir == tmp_path / "conf" / "from-env"


def test_without_a_file_paths_stay_relative_to_the_working_directory(monkeypatch):
    monkeypatch.delenv("MYINVOIS_CONFIG", raising=False)
    settings = load_settings(None)
    assert settings.config_dir is None
    assert settings.state_dir == Path("var")
    assert settings.ledger_url() == "sqlite:///var/ledger.sqlite"
    assert settings.rate_limit_backend() == "sqlite:///var/rate-limits.sqlite"
    assert settings.rate_limits.backend is None  # documented as unset


SECRET = "Pl4nted-Secr3t-pw"

BAD_VALUES = [
    ("api_base_url", 'api_base_url = "htp:/no-host"'),
    ("api_base_url", 'api_base_url = "ftp://files.example.com"'),
    ("identity_base_url", 'identity_base_url = "not a url at all"'),
    ("portal_base_url", 'portal_base_url = "https://"'),
    ("ledger.url", f'[ledger]\nurl = "postgresql+psycopg://u:{SECRET}@db:notaport/ledger"'),
    ("ledger.url", f'[ledger]\nurl = "oracle://u:{SECRET}@db/ledger"'),
    ("ledger.url", f'[ledger]\nurl = "{SECRET}"'),
    ("rate_limits.backend", f'[rate_limits]\nbackend = "redis://:{SECRET}@cache:notaport/0"'),
    ("rate_limits.backend", f'[rate_limits]\nbackend = "redis://:{SECRET}@cache:6379/zero"'),
    ("rate_limits.backend", f'[rate_limits]\nbackend = "postgresql://u:{SECRET}@/"'),
    ("observability.sentry_dsn", f'[observability]\nsentry_dsn = "https://{SECRET}@sentry.example.com/not-a-project"'),
    ("observability.sentry_dsn", f'[observability]\nsentry_dsn = "{SECRET}"'),
]


@pytest.mark.parametrize(("key", "toml"), BAD_VALUES, ids=[f"{k}-{i}" for i, (k, _) in enumerate(BAD_VALUES)])
def test_a_bad_url_or_dsn_is_one_line_naming_its_key_and_never_its_value(tmp_path, key, toml):
    config = _write(tmp_path, toml + "\n")
    with pytest.raises(ConfigError) as caught:
        load_settings(config)
    (problem,) = caught.value.problems
    assert problem.startswith(f"{key}: "), problem
    assert "\n" not in problem and SECRET not in str(caught.value)


def test_run_with_a_malformed_sentry_dsn_exits_config_with_one_line_and_no_traceback(tmp_path):
    demo = (REPO / "config" / "demo.toml").read_text()
    config = _write(tmp_path, demo + f'\n[observability]\nsentry_dsn = "https://{SECRET}@sentry.example.com/abc"\n')
    result = subprocess.run(
        [str(CONNECTOR), "--config", str(config), "run", "--once"],
        cwd=tmp_path, env=_clean_env(), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert result.returncode == 2, result.stderr  # ExitCode.CONFIG
    output = result.stdout + result.stderr
    assert "Traceback" not in output and SECRET not in output
    assert [line for line in output.splitlines() if "sentry_dsn" in line] == [
        (
            "  - observability.sentry_dsn: is not a Sentry DSN; copy it from Sentry's project settings (Client Keys), "
            "e.g. https://<key>@o0.ingest.sentry.io/<project number>"
        )
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["connector.toml"]  # nothing started, nothing created


@pytest.mark.parametrize("command", [["status"], ["doctor", "--no-login"], ["plugins"]])
def test_commands_that_only_read_create_no_ledger_and_no_folder(tmp_path, command):
    conf = tmp_path / "conf"
    shutil.copytree(REPO / "config" / "demo", conf / "demo")
    shutil.copy(REPO / "config" / "demo.toml", conf / "demo.toml")
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    before = sorted(str(p) for p in tmp_path.rglob("*"))
    result = subprocess.run(
        [str(CONNECTOR), "--config", str(conf / "demo.toml"), *command],
        cwd=elsewhere, env=_clean_env(), capture_output=True, text=True, timeout=120,
    )  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    assert sorted(str(p) for p in tmp_path.rglob("*")) == before
