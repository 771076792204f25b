"""The ``[observability]`` table of ``connector.toml``: logs, Sentry, metrics and health.

Embedded in the main settings as ``observability``. Every default is stated in its field's
description, which is also what the documentation shows.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from connector_core.secrets import Secret, is_placeholder


class ObservabilitySettings(BaseModel):
    model_config = ConfigDict(extra="forbid")

    log_level: Literal["DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"] = Field(
        default="INFO",
        description="Lowest level logged: DEBUG, INFO, WARNING, ERROR or CRITICAL (any case). Default INFO.",
    )
    log_format: Literal["auto", "text", "json"] = Field(
        default="text",
        description="'text' (human-readable), 'json' (one JSON object per line, for log collectors: on request) or "
        "'auto': text on a terminal, JSON otherwise. Default text.",
    )
    sentry_dsn: Secret | None = Field(
        default=None,
        description="Sentry DSN; errors are reported to Sentry only when set. A secret: may be '$env:NAME' or "
        "'$file:/path'. Default: unset (no reporting).",
    )
    sentry_environment: str = Field(
        default="production", min_length=1, description="Sentry environment events are filed under. Default production."
    )
    metrics_host: str = Field(
        default="127.0.0.1",
        min_length=1,
        description="Address of the /metrics and /healthz server. Default 127.0.0.1 (this machine only); "
        "a non-loopback address such as 0.0.0.0 publishes them to the network and is meant for containers.",
    )
    metrics_port: int = Field(
        default=9464,
        ge=0,
        le=65535,
        description="Port of the /metrics and /healthz server; 0 turns it off. Default 9464.",
    )
    stuck_submission_seconds: float = Field(
        default=1800,
        gt=0,
        description="A submission MyInvois has not finished validating after this many seconds is reported as stuck "
        "(log line and Sentry event). Default 1800 (30 minutes).",
    )
    healthy_cycle_multiplier: float = Field(
        default=3.0,
        gt=1,
        description="/healthz turns unhealthy when a scheduled cycle has not succeeded for this many times its "
        "interval. Default 3.",
    )
    max_consecutive_login_failures: int = Field(
        default=3,
        ge=1,
        description="/healthz turns unhealthy after this many failed logins in a row for one profile. Default 3.",
    )
    health_source_failures: int = Field(
        default=3,
        ge=1,
        description="/healthz says 'degraded', naming the source, after this many fetch cycles in a row in which one "
        "source's fetch or write-back failed. Default 3.",
    )

    debug_loggers: list[str] = Field(
        default=[],
        description="Loggers of libraries to hear in full (DEBUG), e.g. ['httpx', 'sqlalchemy.engine', 'filelock']; "
        "otherwise libraries log only their warnings. Default [] (none).",
    )

    @field_validator("sentry_dsn")
    @classmethod
    def _sentry_dsn(cls, value):  # a SecretStr, after the Secret validators
        """A malformed DSN is a configuration error found when the file is read, not a crash
        when Sentry starts. The DSN is never quoted: its key lets anyone post events."""
        if value is None or is_placeholder(value):
            return value
        from sentry_sdk.utils import BadDsn, Dsn

        try:
            Dsn(value.get_secret_value())
        except (BadDsn, ValueError):
            raise ValueError(
                "is not a Sentry DSN; copy it from Sentry's project settings (Client Keys), "
                "e.g. https://<key>@o0.ingest.sentry.io/<project number>"
            ) from None
        return value

    @field_validator("log_level", mode="before")
    @classmethod
    def _upper_case_level(cls, value: object) -> object:
        return value.upper() if isinstance(value, str) else value
