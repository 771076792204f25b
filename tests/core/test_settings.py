"""Settings: TOML plus environment, every problem named at once, secrets never quoted."""

from __future__ import annotations

import pytest

from connector_core.settings import ConfigError, Environment, load_settings

MINIMAL = """
environment = "sandbox"
[profiles.acme]
tin = "C25845632020"
client_id = "acme-erp"
client_secret = "$env:ACME_SECRET"
[sources.books]
kind = "csv"
profile = "acme"
"""


def test_toml_then_environment_overrides_nested_keys(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL)
    monkeypatch.setenv("ACME_SECRET", "s3cr3t-value")
    monkeypatch.setenv("MYINVOIS_CYCLES__FETCH_INTERVAL_SECONDS", "30")
    monkeypatch.setenv("MYINVOIS_PROFILES__ACME__CLIENT_ID", "acme-erp-2")
    settings = load_settings(path)
    assert settings.environment is Environment.SANDBOX
    assert settings.cycles.fetch_interval_seconds == 30
    profile = settings.profiles["acme"]
    assert profile.client_id == "acme-erp-2"
    assert profile.client_secret.get_secret_value() == "s3cr3t-value"
    assert "s3cr3t-value" not in repr(settings)
    api, identity, portal = settings.base_urls()
    assert api == "https://preprod-api.myinvois.hasil.gov.my" and portal == "https://preprod.myinvois.hasil.gov.my"


def test_config_path_from_environment_variable(tmp_path, monkeypatch):
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL.replace("$env:ACME_SECRET", "plain-secret"))
    monkeypatch.setenv("MYINVOIS_CONFIG", str(path))
    assert load_settings().profiles["acme"].client_id == "acme-erp"


def test_every_problem_is_reported_at_once_naming_its_key_and_never_the_value(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(
        """
environment = "production"
verify_tls = false
colour = "blue"
[cycles]
fetch_interval_seconds = -5
[profiles.acme]
tin = "C25845632020"
client_id = "YOUR_CLIENT_ID"
client_secret = "hunter2-secret"
[sources.books]
kind = "csv"
profile = "nobody"
"""
    )
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    text = str(caught.value)
    assert "colour: unknown key" in text
    assert "cycles.fetch_interval_seconds" in text
    assert "profiles.acme.client_id: is empty or a placeholder" in text
    assert "hunter2-secret" not in text and "YOUR_CLIENT_ID" not in text


def test_references_and_tls_are_checked_after_the_fields(tmp_path):
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL.replace('environment = "sandbox"', 'environment = "production"\nverify_tls = false').replace("$env:ACME_SECRET", "x-secret").replace('profile = "acme"\n', 'profile = "nobody"\n'))
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    problems = caught.value.problems
    assert any(p.startswith("verify_tls: cannot be false in the production environment") for p in problems)
    assert any(p.startswith("sources.books.profile: no profile named 'nobody'") for p in problems)


def test_missing_secret_reference_names_the_variable(tmp_path, monkeypatch):
    monkeypatch.delenv("ACME_SECRET", raising=False)
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL)
    with pytest.raises(ConfigError) as caught:
        load_settings(path)
    assert "profiles.acme.client_secret: environment variable ACME_SECRET is not set" in str(caught.value)


def test_secret_file_reference(tmp_path):
    secret = tmp_path / "secret"
    secret.write_text("from-a-file\n")
    path = tmp_path / "c.toml"
    path.write_text(MINIMAL.replace("$env:ACME_SECRET", f"$file:{secret}"))
    assert load_settings(path).profiles["acme"].client_secret.get_secret_value() == "from-a-file"


def test_bad_toml_and_missing_file_are_one_line_each(tmp_path):
    with pytest.raises(ConfigError, match="does not exist"):
        load_settings(tmp_path / "absent.toml")
    bad = tmp_path / "bad.toml"
    bad.write_text("environment = \n")
    with pytest.raises(ConfigError, match="is not valid TOML"):
        load_settings(bad)


def test_simulator_environment_defaults_to_the_in_process_simulator_and_sqlite(tmp_path):
    settings = load_settings(None, state_dir=tmp_path)
    assert settings.uses_inprocess_simulator
    assert settings.ledger_url() == f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    assert settings.token_cache_path() == tmp_path / "token-cache.json"
