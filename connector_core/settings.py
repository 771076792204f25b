"""Configuration: a TOML file plus environment variables (pydantic-settings).

Precedence, highest first: environment variables (prefix ``MYINVOIS_``, nesting with ``__``,
e.g. ``MYINVOIS_PROFILES__DEMO__CLIENT_SECRET``), then the TOML file given with ``--config`` or
``MYINVOIS_CONFIG``, then the defaults documented in ``docs/configuration.md``. Relative paths
are relative to the configuration file's folder (see :mod:`connector_core.config_paths`), or to
the working directory when there is no file.

Every problem is reported at once, each naming its key, and never quoting a value (a value
might be a secret).
"""

from __future__ import annotations

import os
import tomllib
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, PydanticBaseSettingsSource, SettingsConfigDict

from connector_core.api.ratelimit import RateLimitSettings
from connector_core.api.retry import RetrySettings
from connector_core.config_paths import resolve_path, resolve_sqlite_url, resolving_against
from connector_core.observability.settings import ObservabilitySettings
from connector_core.secrets import Secret, is_placeholder

CONFIG_ENV_VAR = "MYINVOIS_CONFIG"


class Environment(str, Enum):
    PRODUCTION = "production"
    SANDBOX = "sandbox"
    SIMULATOR = "simulator"


#: (API base, identity base, portal base) per environment, from API.md §1.
ENVIRONMENT_URLS: dict[Environment, tuple[str, str, str]] = {
    Environment.PRODUCTION: (
        "https://api.myinvois.hasil.gov.my",
        "https://api.myinvois.hasil.gov.my",
        "https://myinvois.hasil.gov.my",
    ),
    Environment.SANDBOX: (
        "https://preprod-api.myinvois.hasil.gov.my",
        "https://preprod-api.myinvois.hasil.gov.my",
        "https://preprod.myinvois.hasil.gov.my",
    ),
}


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ProfileSettings(_Section):
    """One taxpayer the daemon submits for."""

    tin: str = Field(description="The taxpayer's TIN: the supplier TIN (issuer TIN for self-billed) of its documents.")
    client_id: str = Field(
        description="ERP client id from the MyInvois portal (the intermediary's own when on_behalf_of is set)."
    )
    client_secret: Secret = Field(description="Client secret; use '$env:NAME' or '$file:PATH' rather than the value.")
    on_behalf_of: str | None = Field(
        default=None,
        description="Intermediary login: the represented taxpayer's TIN, or 'TIN:BRN'. Leave unset for a taxpayer's own credentials.",
    )

    @field_validator("client_id")
    @classmethod
    def _no_placeholder_id(cls, value: str) -> str:
        if is_placeholder(value):
            raise ValueError(
                "is empty or a placeholder; set the client id shown in the MyInvois portal ('View and Register ERP')"
            )
        return value

    @field_validator("client_secret")
    @classmethod
    def _no_placeholder_secret(cls, value):
        if is_placeholder(value):
            raise ValueError("is empty or a placeholder; set it, ideally as '$env:NAME' or '$file:PATH'")
        return value


class SourceSettings(_Section):
    """One ERP source: which plugin kind reads it, and for which profile."""

    kind: str = Field(description="Source kind provided by a plugin: csv, sql, odoo, or a third-party kind.")
    profile: str = Field(description="Name of the [profiles.NAME] table whose credentials submit these invoices.")
    enabled: bool = Field(
        default=True, description="Set to false to stop reading this source without deleting its table."
    )
    options: dict[str, Any] = Field(
        default_factory=dict, description="The plugin's own options; see the plugin's page."
    )


class LedgerSettings(_Section):
    url: Secret | None = Field(
        default=None,
        description="SQLAlchemy URL of the ledger. Default: a SQLite file 'ledger.sqlite' in state_dir. "
        "PostgreSQL: 'postgresql+psycopg://user@host/db'.",
    )
    keep_bodies_days: float = Field(
        default=30.0,
        ge=3.0,
        description="Days a final document's invoice JSON and sent bytes are kept in the ledger before they are "
        "pruned (the hash, uuid, longId, times and errors stay for good). At least 3: MyInvois's cancellation "
        "window is 72 hours after validation.",
    )

    @field_validator("url")
    @classmethod
    def _database_url(cls, value):  # a SecretStr, after the Secret validators
        if value is None:
            return value
        problem = database_url_problem(value.get_secret_value())
        if problem:
            raise ValueError(problem)
        # A relative SQLite file lives next to the configuration file, like state_dir.
        return type(value)(resolve_sqlite_url(value.get_secret_value()))


class CycleSettings(_Section):
    fetch_interval_seconds: float = Field(default=60.0, gt=0, description="How often the fetch-and-submit cycle runs.")
    poll_interval_seconds: float = Field(
        default=2.0, gt=0, description="How often the poll cycle wakes to poll submissions that are due."
    )
    fetch_limit: int = Field(
        default=20000,
        ge=1,
        description="Most invoices taken from one source per cycle (above the 10,000 a minute LHDN allows).",
    )
    fetch_concurrency: int = Field(
        default=4,
        ge=1,
        description="Most sources fetched at the same time; one slow or failing ERP never holds back another.",
    )
    first_poll_delay_seconds: float = Field(
        default=3.0, ge=0, description="Wait before the first Get Submission of a submission..."
    )
    first_poll_delay_per_document_seconds: float = Field(
        # 3 s + 10 ms per document: about when a 100-document submission has been validated
        # (we take LHDN to need about 2 s + 10 ms per document), inside LHDN's 3-5 s polling advice.
        default=0.01,
        ge=0,
        description="...plus this much per document in it (validation time grows with size).",
    )
    poll_min_interval_seconds: float = Field(
        default=3.0, ge=0, description="Never poll one submission more often (LHDN: 3-5 s)."
    )
    poll_max_interval_seconds: float = Field(
        default=5.0, ge=0, description="Back-off ceiling while validation is young."
    )
    poll_backoff_factor: float = Field(
        default=1.25, ge=1.0, description="Each poll of an unfinished submission waits this much longer."
    )
    slow_poll_after_seconds: float = Field(
        default=300.0, ge=0, description="A submission unfinished after this long..."
    )
    slow_poll_interval_seconds: float = Field(default=60.0, ge=0, description="...is polled only this often.")
    watch_interval_seconds: float = Field(
        # Odoo's MyInvois module re-checks valid documents hourly too; at 1,000 submissions a
        # day that is about 51 Get Submission calls a minute, well inside LHDN's 300.
        default=3600.0,
        gt=0,
        description="A submission whose documents are Valid but still inside their cancellation window is polled "
        "this often, to learn of a buyer's rejection request or a cancellation on the portal.",
    )
    watch_margin_seconds: float = Field(
        default=7200.0,
        ge=0,
        description="The watch lasts this long past the end of the cancellation window (72 h + 2 h = Odoo's 74 h).",
    )
    reconcile_after_seconds: float = Field(
        default=15.0,
        ge=0,
        description="Wait this long after an in-doubt submit before searching for it (a slow server may still be storing it).",
    )
    reconcile_max_attempts: int = Field(
        default=12,
        ge=1,
        description=(
            "An in-doubt submission still unresolved after this many reconciliations (searches MyInvois "
            "answered) is escalated to an operator."
        ),
    )
    reconcile_give_up_after_hours: float = Field(
        # Well inside the 72 h after which MyInvois refuses the stored bytes anyway (their issue
        # time is too old), so an escalated submission is never left for the window to decide.
        default=6.0,
        gt=0,
        lt=72,
        description="...or when its first send is older than this: no more Search calls are spent on it.",
    )
    rebuild_after_hours: float = Field(
        default=48.0,
        gt=0,
        lt=72,
        description="A built but never-sent document older than this is rebuilt with a fresh issue time (MyInvois refuses 72 h).",
    )
    once_timeout_seconds: float = Field(
        default=3600.0, gt=0, description="'run --once' gives up after this long with a non-zero exit."
    )
    once_outage_give_up_seconds: float = Field(
        default=300.0,
        gt=0,
        description="'run --once' stops waiting for a profile whose MyInvois has been unreachable this long without a break "
        "(exit 5); the daemon keeps trying.",
    )


class SubmissionSettings(_Section):
    max_documents: int = Field(
        default=100, ge=1, le=100, description="Documents per submission (MyInvois: at most 100)."
    )
    max_bytes: int = Field(
        default=5 * 1024 * 1024,
        ge=1024,
        le=5 * 1024 * 1024,
        description="Request size per submission (MyInvois: 5 MB).",
    )
    concurrency: int = Field(
        default=4, ge=1, le=32, description="Submissions in flight at once; the rate policy still caps the rate."
    )
    poll_concurrency: int = Field(default=4, ge=1, le=32, description="Get Submission calls in flight at once.")
    abandoned_after_seconds: float = Field(
        # Far above any real send: a rate-limit wait (one window), a Retry-After and the HTTP timeout.
        default=900.0,
        ge=60,
        description="A submission another connector sharing the ledger has held (sending, re-sending, reconciling) this long is treated as interrupted.",
    )


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_prefix="MYINVOIS_",
        env_nested_delimiter="__",
        extra="forbid",
        nested_model_default_partial_update=True,
    )

    environment: Environment = Field(default=Environment.SIMULATOR, description="production, sandbox or simulator.")
    api_base_url: str | None = Field(default=None, description="Override the environment's API base URL.")
    identity_base_url: str | None = Field(default=None, description="Override the identity (login) base URL.")
    portal_base_url: str | None = Field(default=None, description="Override the portal URL used in validation links.")
    verify_tls: bool = Field(default=True, description="Verify TLS certificates. Cannot be turned off for production.")
    state_dir: Path = Field(
        default=Path("var"), description="Where the SQLite ledger, token cache and rate-limit state live."
    )
    token_cache: Path | None = Field(
        default=None, description="Token cache file (0600). Default: state_dir/token-cache.json."
    )
    ledger: LedgerSettings = Field(default_factory=LedgerSettings)
    profiles: dict[str, ProfileSettings] = Field(default_factory=dict)
    sources: dict[str, SourceSettings] = Field(default_factory=dict)
    cycles: CycleSettings = Field(default_factory=CycleSettings)
    submission: SubmissionSettings = Field(default_factory=SubmissionSettings)
    rate_limits: RateLimitSettings = Field(default_factory=RateLimitSettings)
    retry: RetrySettings = Field(default_factory=RetrySettings)
    observability: ObservabilitySettings = Field(default_factory=ObservabilitySettings)
    simulator: dict[str, Any] = Field(
        default_factory=dict,
        description="Settings of the in-process simulator (environment 'simulator' without api_base_url); see docs/simulator.md.",
    )

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        # The TOML file arrives as init kwargs (see load_settings); the environment wins over it.
        return (env_settings, init_settings)

    _config_dir: Path | None = PrivateAttr(default=None)

    @field_validator("api_base_url", "identity_base_url", "portal_base_url")
    @classmethod
    def _http_url(cls, value: str | None) -> str | None:
        if value is None:
            return value
        problem = http_url_problem(value)
        if problem:
            raise ValueError(problem)
        return value

    @field_validator("state_dir", "token_cache")
    @classmethod
    def _relative_to_config_file(cls, value: Path | None) -> Path | None:
        return resolve_path(value) if value is not None else None

    @model_validator(mode="after")
    def _check_references(self) -> Settings:
        problems = []
        if self.environment is Environment.PRODUCTION and not self.verify_tls:
            problems.append(
                "verify_tls: cannot be false in the production environment; install the CA certificate instead"
            )
        for name, source in self.sources.items():
            if source.profile not in self.profiles:
                known = ", ".join(sorted(self.profiles)) or "none"
                problems.append(f"sources.{name}.profile: no profile named {source.profile!r} (profiles: {known})")
        if problems:
            raise ValueError("; ".join(problems))
        return self

    # --- derived values -------------------------------------------------------------------

    @property
    def uses_inprocess_simulator(self) -> bool:
        return self.environment is Environment.SIMULATOR and not self.api_base_url

    def base_urls(self) -> tuple[str | None, str | None, str | None]:
        """(api, identity, portal) for the environment, with overrides applied. In the
        simulator environment without overrides all three are unknown until it starts."""
        api, identity, portal = ENVIRONMENT_URLS.get(self.environment, (None, None, None))
        api = self.api_base_url or api
        identity = self.identity_base_url or self.api_base_url or identity
        portal = self.portal_base_url or portal or api
        return api, identity, portal

    def ledger_url(self) -> str:
        if self.ledger.url is not None:
            return self.ledger.url.get_secret_value()
        return f"sqlite:///{self.state_dir / 'ledger.sqlite'}"

    def token_cache_path(self) -> Path:
        return self.token_cache or self.state_dir / "token-cache.json"

    def rate_limit_backend(self) -> str:
        """``rate_limits.backend``; unset, a file next to the ledger rather than memory: a daemon
        restarted at once (systemd after a crash, an upgrade) then still knows what it sent in
        the current window, where in memory every restart brought a fresh burst of up to a
        full window's calls, and LHDN answered with 429s. "memory", written, is used as given."""
        return self.rate_limits.backend or f"sqlite:///{self.state_dir / 'rate-limits.sqlite'}"

    @property
    def config_dir(self) -> Path | None:
        """Folder of the configuration file read, against which relative paths (plugin
        options included) resolve; None without a file."""
        return self._config_dir


def http_url_problem(url: str) -> str | None:
    """Why ``url`` is not an http(s) base URL, or None. Never quotes it."""
    import httpx

    try:
        parsed = httpx.URL(url)
    except (httpx.InvalidURL, TypeError, ValueError):
        return "is not a valid URL; expected e.g. https://api.myinvois.hasil.gov.my or http://127.0.0.1:8085"
    if parsed.scheme not in ("http", "https") or not parsed.host:
        return "must be an http:// or https:// URL with a host, e.g. https://api.myinvois.hasil.gov.my or http://127.0.0.1:8085"
    return None


#: Ledger databases the connector is tested on (SQLAlchemy backend names).
LEDGER_BACKENDS = ("sqlite", "postgresql", "mysql", "mariadb")


def database_url_problem(url: str) -> str | None:
    """Why ``url`` is not a usable ledger URL, or None. Never quotes it: it may hold a password."""
    from sqlalchemy.engine import make_url
    from sqlalchemy.exc import ArgumentError

    try:
        parsed = make_url(url)
    except (ArgumentError, ValueError):
        return "is not a SQLAlchemy database URL; expected e.g. postgresql+psycopg://user@host/dbname or sqlite:///var/ledger.sqlite"
    if parsed.get_backend_name() not in LEDGER_BACKENDS:
        return f"database {parsed.get_backend_name()!r} is not supported for the ledger; use sqlite, postgresql, mysql or mariadb"
    if parsed.get_backend_name() != "sqlite" and not parsed.host:
        return "names no database host; expected e.g. postgresql+psycopg://user@host/dbname"
    return None


class ConfigError(Exception):
    """The configuration cannot be used. ``problems`` lists each one, naming its key."""

    def __init__(self, problems: list[str], path: Path | None = None) -> None:
        self.problems = problems
        self.path = path
        where = f" in {path}" if path else ""
        super().__init__(
            f"{len(problems)} configuration problem(s){where}:\n" + "\n".join(f"  - {p}" for p in problems)
        )


def format_validation_error(exc: ValidationError, prefix: str = "") -> list[str]:
    """One line per problem, naming the key; never the value, which may be a secret."""
    lines: list[str] = []
    for err in exc.errors(include_input=False, include_url=False):
        loc = ".".join(str(part) for part in err["loc"]) or "(top level)"
        message = err["msg"]
        if err["type"] == "extra_forbidden":
            message = "unknown key; check its spelling against docs/configuration.md"
        elif err["type"] == "missing":
            message = "is required"
        elif message.startswith("Value error, "):
            message = message[len("Value error, ") :]
        if loc == "(top level)" and ";" in message:
            lines.extend(f"{prefix}{part.strip()}" for part in message.split(";"))
        else:
            lines.append(f"{prefix}{loc}: {message}")
    return lines


def read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError([f"configuration file {path} does not exist"], path) from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError([f"{path} is not valid TOML: {exc}"], path) from None


def load_settings(path: Path | str | None = None, **overrides: Any) -> Settings:
    """Read the TOML file (``path``, else ``$MYINVOIS_CONFIG``, else defaults only) and the
    environment. Raises :class:`ConfigError` listing every problem."""
    if path is None and os.environ.get(CONFIG_ENV_VAR):
        path = os.environ[CONFIG_ENV_VAR]
    config_path = Path(path) if path is not None else None
    data = read_toml(config_path) if config_path is not None else {}
    data.update(overrides)
    config_dir = Path(os.path.normpath(config_path.expanduser().absolute().parent)) if config_path is not None else None
    try:
        with resolving_against(config_dir):
            settings = Settings(**data)
    except ValidationError as exc:
        raise ConfigError(format_validation_error(exc), config_path) from None
    settings._config_dir = config_dir
    return settings
