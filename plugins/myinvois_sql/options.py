"""The settings of a ``kind = "sql"`` source, as written under ``[sources.<name>.options]``."""

from __future__ import annotations

import re
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator
from sqlalchemy import text
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError

from connector_core.config_paths import resolve_sqlite_url
from connector_core.secrets import Secret

#: Table and schema names are put into SQL as identifiers, never as data, so they must be plain
#: names: a letter or underscore, then letters, digits and underscores (at most 63 characters,
#: PostgreSQL's limit). Anything else (quotes, dots, spaces, semicolons) is refused.
IDENTIFIER = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")

#: Drivers this plugin is tested with, per database family. A URL without a driver gets this one.
DEFAULT_DRIVERS = {
    "sqlite": "sqlite",
    "postgresql": "postgresql+psycopg",
    "mysql": "mysql+pymysql",
    "mariadb": "mariadb+pymysql",
}

#: Named bind parameters each custom statement may use, and the ones it must use.
QUERY_PARAMETERS: dict[str, tuple[frozenset[str], frozenset[str]]] = {
    "pending_headers": (frozenset(), frozenset()),
    "lines": (frozenset({"source_key"}), frozenset({"source_key"})),
    "mark_queued": (frozenset({"source_key"}), frozenset({"source_key"})),
    "write_result": (
        frozenset(
            {
                "source_key",
                "number",
                "version",
                "status",
                "uuid",
                "long_id",
                "validation_link",
                "errors",
                "submission_uid",
                "updated_at",
                "document_type",
                # PNG bytes of the validation link's QR code (valid documents; NULL otherwise).
                "qr_png",
                # After valid: a rejection request's or cancellation's reason and time, and
                # until when a valid invoice may still be cancelled.
                "reason",
                "event_at",
                "cancellable_until",
            }
        ),
        frozenset({"source_key"}),
    ),
    "cancel_requests": (frozenset(), frozenset()),
    "mark_cancel_taken": (frozenset({"source_key"}), frozenset({"source_key"})),
}


def bind_parameter_names(sql: str) -> set[str]:
    """The ``:name`` parameters SQLAlchemy will bind in ``sql`` (``::type`` casts are not ones)."""
    return set(text(sql)._bindparams)


class CustomQueries(BaseModel):
    """Statements that replace the staging tables when the ERP's own tables are read directly.

    Every statement uses named bind parameters only (``:source_key``); the connector never
    pastes data into SQL. ``docs/plugin-sql.md`` lists the columns each must return.
    """

    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)

    pending_headers: str = Field(description="SELECT of pending invoice headers; must return a source_key column.")
    lines: str = Field(description="SELECT of one invoice's lines, bound by :source_key.")
    mark_queued: str | None = Field(default=None, description="Optional UPDATE marking :source_key as recorded.")
    write_result: str = Field(description="UPDATE writing an outcome, bound by :source_key, :version, :status, ...")
    cancel_requests: str | None = Field(
        default=None,
        description="Optional SELECT of the ERP's requests to cancel validated invoices: columns source_key and reason.",
    )
    mark_cancel_taken: str | None = Field(
        default=None, description="Optional UPDATE marking the cancel request of :source_key as recorded."
    )

    @model_validator(mode="after")
    def _check_parameters(self) -> CustomQueries:
        for name, (allowed, required) in QUERY_PARAMETERS.items():
            sql = getattr(self, name)
            if sql is None:
                continue
            used = bind_parameter_names(sql)
            unknown = sorted(used - allowed)
            if unknown:
                offered = ", ".join(f":{p}" for p in sorted(allowed)) or "none"
                raise ValueError(
                    f"queries.{name} uses unknown bind parameter(s) {', '.join(':' + p for p in unknown)}; "
                    f"this statement may use: {offered}"
                )
            missing = sorted(required - used)
            if missing:
                raise ValueError(f"queries.{name} must use the bind parameter(s) {', '.join(':' + p for p in missing)}")
        return self


class SqlSourceOptions(BaseModel):
    """Options of a SQL source. Unknown keys are refused so a misspelt setting is reported."""

    # hide_input_in_errors: a rejected URL would otherwise be echoed with its password.
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True, hide_input_in_errors=True)

    url: Secret = Field(
        description="SQLAlchemy URL, e.g. postgresql+psycopg://erp@db/erp. Kept secret because it may hold a password."
    )
    password: Secret | None = Field(
        default=None, description="Database password, if not in the URL ($env:/$file: references work)."
    )
    mode: Literal["staging", "queries"] = Field(
        default="staging", description="Read the staging tables, or run the queries table."
    )
    db_schema: str | None = Field(
        default=None, description="Schema (PostgreSQL) or database (MariaDB) holding the staging tables."
    )
    header_table: str = Field(default="einvoice_header", description="Staging table of invoice headers.")
    line_table: str = Field(default="einvoice_line", description="Staging table of invoice lines.")
    page_size: int = Field(default=500, ge=1, le=10_000, description="Invoices read per query; bounds memory use.")
    connect_timeout_seconds: int = Field(default=10, ge=1, le=300, description="Give up connecting after this long.")
    queries: CustomQueries | None = Field(default=None, description="The custom statements (mode = 'queries').")
    init_scripts: list[Path] = Field(
        default_factory=list,
        description="SQL files run once, in order, when the header table does not exist yet (staging mode): "
        "e.g. the shipped DDL and demo rows. Statements are split at ';' ending a line.",
    )

    @field_validator("db_schema", "header_table", "line_table")
    @classmethod
    def _plain_identifier(cls, value: str | None) -> str | None:
        if value is not None and not IDENTIFIER.fullmatch(value):
            raise ValueError(
                f"{value!r} is not a plain table or schema name: use letters, digits and underscores, "
                "starting with a letter or underscore, at most 63 characters"
            )
        return value

    @field_validator("url")
    @classmethod
    def _supported_database(cls, value):
        try:
            url = make_url(value.get_secret_value())
        except ArgumentError:
            # The message would repeat the URL, password included.
            raise ValueError(
                "is not a SQLAlchemy database URL; expected e.g. postgresql+psycopg://user@host/dbname"
            ) from None
        if url.get_backend_name() not in DEFAULT_DRIVERS:
            raise ValueError(
                f"database {url.get_backend_name()!r} is not supported; use sqlite, postgresql, mysql or mariadb"
            )
        # A relative SQLite file is relative to the configuration file's folder, like every path in it.
        return type(value)(resolve_sqlite_url(value.get_secret_value()))

    @model_validator(mode="after")
    def _mode_matches_queries(self) -> SqlSourceOptions:
        if self.mode == "queries" and self.queries is None:
            raise ValueError(
                "mode = 'queries' needs a [sources.<name>.options.queries] table (pending_headers, lines, write_result)"
            )
        if self.mode == "staging" and self.queries is not None:
            raise ValueError(
                "a queries table is set but mode is 'staging'; set mode = 'queries' to use it, or remove it"
            )
        return self

    def engine_url(self) -> URL:
        """The URL to connect with: the tested driver filled in, the password option applied."""
        url = make_url(self.url.get_secret_value())
        if "+" not in url.drivername:
            url = url.set(drivername=DEFAULT_DRIVERS[url.get_backend_name()])
        if self.password is not None:
            url = url.set(password=self.password.get_secret_value())
        return url

    def display_url(self) -> str:
        """The URL for messages and logs: never with the password."""
        return self.engine_url().render_as_string(hide_password=True)
