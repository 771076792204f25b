"""The SQL plugin's ``check_source`` hook, for ``myinvois-connector doctor``.

Connects, reads one page of pending invoices in a transaction that is rolled back, and checks
what write-back needs without writing: the status columns exist and (PostgreSQL, SQLite) the
user may update the header table. Nothing is created: a missing staging table that
``init_scripts`` would create is reported as such, not created.
"""

from __future__ import annotations

import os

from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection
from sqlalchemy.exc import SQLAlchemyError

from connector_core import hookimpl
from connector_core.contract import Source, SourceCheck
from myinvois_sql.columns import STATUS_COLUMNS
from myinvois_sql.engines import engine_for
from myinvois_sql.options import SqlSourceOptions
from myinvois_sql.store import QueryStore, StagingStore, _Store, store_for


@hookimpl
def check_source(source: Source) -> list[SourceCheck]:
    options = source.options
    assert isinstance(options, SqlSourceOptions), "the core hands a sql source its SqlSourceOptions"
    store = store_for(source.name, options, engine_for(options))
    try:
        with store.engine.connect() as conn:
            findings = [SourceCheck.passed(f"connected to {options.display_url()}")]
            if isinstance(store, StagingStore):
                findings += _check_staging(store, conn)
            else:
                findings += _check_queries(store, conn)
            conn.rollback()  # doctor reads only
    except SQLAlchemyError as exc:
        raise store._failure("checking the source", exc) from exc  # the plugin's own wording
    return findings


def _read_one_page(store: _Store, conn: Connection) -> str:
    headers = store._headers(conn, None, 1)  # the same read a cycle does
    if not headers:
        return "no invoice is pending"
    store._lines(conn, headers)
    return f"first pending invoice: key {headers[0]['_key']}, number {headers[0].get('invoice_number')}"


def _check_staging(store: StagingStore, conn: Connection) -> list[SourceCheck]:
    options = store.options
    inspector = inspect(conn)
    if not inspector.has_table(options.header_table, schema=options.db_schema):
        if options.init_scripts:
            unreadable = [
                str(script) for script in options.init_scripts if not os.access(script, os.R_OK) or not script.is_file()
            ]
            if unreadable:
                return [
                    SourceCheck.failed(
                        f"table {options.header_table} does not exist and setting init_scripts names file(s) that cannot be "
                        f"read: {', '.join(unreadable)}; correct the path(s)"
                    )
                ]
            return [
                SourceCheck.passed(
                    f"table {options.header_table} does not exist yet; the first run creates it with init_scripts"
                )
            ]
        return [
            SourceCheck.failed(
                f"table {options.header_table} does not exist; create the staging tables with config/sql/staging-*.sql "
                "(or set header_table to the table's name)"
            )
        ]
    findings = [SourceCheck.passed(f"read table {options.header_table}: {_read_one_page(store, conn)}")]
    columns = {column["name"] for column in inspector.get_columns(options.header_table, schema=options.db_schema)}
    missing = [name for name in STATUS_COLUMNS if name not in columns]
    if missing:
        findings.append(
            SourceCheck.failed(
                f"table {options.header_table} has no column(s) {', '.join(missing)}, where outcomes are written back; "
                "add them as in config/sql/staging-*.sql"
            )
        )
        return findings
    findings.append(_update_right(store, conn))
    return findings


def _update_right(store: StagingStore, conn: Connection) -> SourceCheck:
    options = store.options
    table = options.header_table
    dialect = conn.dialect.name
    if dialect == "postgresql":
        qualified = f"{options.db_schema}.{table}" if options.db_schema else table
        allowed = conn.execute(text("SELECT has_table_privilege(:table, 'UPDATE')"), {"table": qualified}).scalar()
        user = conn.execute(text("SELECT current_user")).scalar()
        if not allowed:
            return SourceCheck.failed(
                f"database user {user} may not UPDATE table {qualified}; GRANT UPDATE ON {qualified} TO {user}"
            )
        return SourceCheck.passed(f"write-back: user {user} may UPDATE table {qualified}")
    if dialect == "sqlite":
        database = conn.engine.url.database
        if database and database != ":memory:" and not os.access(database, os.W_OK):
            return SourceCheck.failed(f"write-back: the SQLite file {database} is not writable by this user")
        return SourceCheck.passed(f"write-back: table {table} has the status columns and the database file is writable")
    return SourceCheck.unknown(
        f"write-back: table {table} has the status columns; whether the user may UPDATE it shows on the first outcome"
    )


def _check_queries(store: QueryStore, conn: Connection) -> list[SourceCheck]:
    return [
        SourceCheck.passed(f"ran queries.pending_headers and queries.lines: {_read_one_page(store, conn)}"),
        SourceCheck.unknown(
            "write-back: queries.write_result is not run by doctor (it would write); it runs on the first outcome"
        ),
    ]
