"""The [observability] table: documented defaults, secret references, unknown keys refused,
and every key described in docs/deployment.md."""

from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import SecretStr, ValidationError

from connector_core.observability.settings import ObservabilitySettings

REPO = Path(__file__).resolve().parents[2]


def test_defaults_are_safe_for_an_unattended_install():
    settings = ObservabilitySettings()
    assert settings.model_dump() == {
        "log_level": "INFO",
        "log_format": "text",
        "sentry_dsn": None,
        "sentry_environment": "production",
        "metrics_host": "127.0.0.1",
        "metrics_port": 9464,
        "stuck_submission_seconds": 1800,
        "healthy_cycle_multiplier": 3.0,
        "max_consecutive_login_failures": 3,
        "health_source_failures": 3,
        "debug_loggers": [],
    }


def test_every_default_is_stated_in_its_description():
    for name, field in ObservabilitySettings.model_fields.items():
        default = field.default
        if default is None:
            assert "unset" in field.description, name
        else:
            shown = f"{default:g}" if isinstance(default, float) else str(default)
            assert f"Default {shown}" in field.description, name


def test_sentry_dsn_is_a_secret_resolved_from_a_reference(monkeypatch, tmp_path):
    dsn = "https://abc123@o1.ingest.sentry.io/42"
    monkeypatch.setenv("MYINVOIS_TEST_SENTRY_DSN", dsn)
    from_env = ObservabilitySettings(sentry_dsn="$env:MYINVOIS_TEST_SENTRY_DSN")
    assert isinstance(from_env.sentry_dsn, SecretStr) and from_env.sentry_dsn.get_secret_value() == dsn
    assert dsn not in repr(from_env)

    secret_file = tmp_path / "sentry-dsn"
    secret_file.write_text(dsn + "\n")
    from_file = ObservabilitySettings(sentry_dsn=f"$file:{secret_file}")
    assert from_file.sentry_dsn.get_secret_value() == dsn


def test_level_is_case_insensitive():
    assert ObservabilitySettings(log_level="debug").log_level == "DEBUG"


@pytest.mark.parametrize(
    "bad",
    [
        {"log_format": "xml"},
        {"log_level": "LOUD"},
        {"metrics_port": 70000},
        {"metrics_port": -1},
        {"healthy_cycle_multiplier": 1},
        {"max_consecutive_login_failures": 0},
        {"stuck_submission_seconds": 0},
        {"metrics_hots": "127.0.0.1"},  # a typo is an error, not a silently ignored key
    ],
)
def test_invalid_values_and_unknown_keys_are_refused(bad):
    with pytest.raises(ValidationError):
        ObservabilitySettings(**bad)


def test_deployment_guide_documents_every_key():
    guide = (REPO / "docs" / "deployment.md").read_text()
    for name in ObservabilitySettings.model_fields:
        assert f"`{name}`" in guide, f"docs/deployment.md does not describe observability.{name}"
