"""Reading pending invoices and writing outcomes, for the staging tables and custom queries.

Both stores read a page of headers at a time by key (keyset pagination: ``key > last key
seen``, ordered by key), then that page's lines, and hand out invoices one by one. A page is
read in a short transaction of its own and the connection goes back to the pool before the
first invoice is handed out, so a slow consumer holds no connection or lock, and memory holds
at most one page whatever the backlog.
"""

from __future__ import annotations

import logging
import threading
from collections import defaultdict
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Boolean, and_, bindparam, inspect, or_, select, text, update
from sqlalchemy.engine import Connection, Engine, Result
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from connector_core.contract import DocumentOutcome, DocumentState
from connector_core.document.qr import qr_png
from connector_core.model import Invoice, RejectedRecord
from myinvois_sql.columns import (
    HEADER_DATA_COLUMNS,
    LIFECYCLE_COLUMNS,
    LINE_DATA_COLUMNS,
    QR_COLUMN,
    STATUS_COLUMNS,
    staging_tables,
)
from myinvois_sql.options import SqlSourceOptions
from myinvois_sql.rows import build_invoice

log = logging.getLogger("myinvois_sql")

#: Status values that mean "send this": the ERP's own NULL and an explicit re-send request.
PENDING_STATUS = "pending"
QUEUED_STATUS = "queued"
#: States of a document valid at MyInvois, whose row carries the QR code of its validation link.
QR_STATES = frozenset({DocumentState.VALID, DocumentState.REJECTION_REQUESTED})
#: Outcomes of a validated version: after Valid, the same version moves on to them.
AFTER_VALID_STATUSES = ("valid", "rejection_requested", "cancelled")
#: Stored statuses such an outcome is written over: those, and a cancel the connector took
#: (``cancelling``). Not ``cancel_requested``: the ERP's request waits until the connector reads it.
VALIDATED_STATUSES = (*AFTER_VALID_STATUSES, "cancelling")
#: Keys per UPDATE ... WHERE key IN (...): well under every database's parameter limit.
KEYS_PER_STATEMENT = 500


class SqlSourceError(RuntimeError):
    """A database problem, phrased with the source, the table or setting, and what happens next."""


def _now_for(engine: Engine) -> datetime:
    """The current UTC time as the column type accepts it (MariaDB DATETIME has no zone)."""
    now = datetime.now(UTC).replace(microsecond=0)
    return now if engine.dialect.name == "postgresql" else now.replace(tzinfo=None)


def _outcome_parameters(outcome: DocumentOutcome, engine: Engine) -> dict[str, Any]:
    final_at = outcome.final_at or datetime.now(UTC)
    if final_at.tzinfo is None:
        final_at = final_at.replace(tzinfo=UTC)
    final_at = final_at.astimezone(UTC).replace(microsecond=0)
    if engine.dialect.name != "postgresql":
        final_at = final_at.replace(tzinfo=None)
    return {
        "source_key": outcome.source_key,
        "number": outcome.number,
        "version": outcome.version,
        "status": outcome.state.value,
        "uuid": outcome.uuid,
        "long_id": outcome.long_id,
        "validation_link": outcome.validation_link,
        "errors": "\n".join(_errors(outcome)) or None,
        "submission_uid": outcome.submission_uid,
        "updated_at": final_at,
        "document_type": outcome.document_type,
        # After Valid: a rejection request's or cancellation's reason and time; until when a
        # valid invoice may be cancelled.
        "reason": outcome.reason,
        "event_at": _as_column_time(outcome.event_at, engine),
        "cancellable_until": _as_column_time(outcome.cancellable_until, engine),
    }


def _errors(outcome: DocumentOutcome) -> list[str]:
    return [*outcome.errors, *(f"cancel refused: {line}" for line in outcome.cancel_error)]


def _as_column_time(moment: datetime | None, engine: Engine) -> datetime | None:
    """UTC, whole seconds, without a zone where the column has none (MariaDB, SQLite)."""
    if moment is None:
        return None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    moment = moment.astimezone(UTC).replace(microsecond=0)
    return moment if engine.dialect.name == "postgresql" else moment.replace(tzinfo=None)


def qr_code_of(outcome: DocumentOutcome) -> bytes | None:
    """PNG bytes of the QR code of the outcome's validation link while the document stands
    valid at MyInvois (a rejection requested leaves it valid); None otherwise, so a cancelled
    invoice's row loses its code."""
    if outcome.state not in QR_STATES or not outcome.validation_link:
        return None
    return qr_png(outcome.validation_link)


def split_sql_script(script: str) -> list[str]:
    """Statements of a simple SQL file: '--' comments dropped, split where ';' ends a line.

    Enough for DDL and INSERT files like config/sql/*.sql; not a SQL parser (a ';' at the end
    of a line inside a string literal would split it).
    """
    statements, current = [], []
    for raw in script.splitlines():
        code = raw.partition("--")[0]
        # A '--' after a quote may sit inside a string literal: such a line is kept whole.
        line = raw.rstrip() if "'" in code else code.rstrip()
        current.append(line)
        if line.endswith(";"):
            statement = "\n".join(current).strip().rstrip(";").strip()
            if statement:
                statements.append(statement)
            current = []
    tail = "\n".join(current).strip()
    if tail:
        statements.append(tail)
    return statements


def _dicts(result: Result[Any]) -> list[dict[str, Any]]:
    """Each row as a dict of column name to value. The names are read once per result:
    ``dict(row)`` of each ``.mappings()`` row builds a key view of its own (about 3 µs a row
    here, and an invoice is a header and its lines)."""
    names = list(result.keys())
    return [dict(zip(names, row, strict=True)) for row in result]


def _chunks(items: Sequence[Any], size: int) -> Iterator[Sequence[Any]]:
    for start in range(0, len(items), size):
        yield items[start : start + size]


class _Store:
    def __init__(self, source_name: str, options: SqlSourceOptions, engine: Engine) -> None:
        self.source_name = source_name
        self.options = options
        self.engine = engine

    def _failure(self, action: str, exc: SQLAlchemyError) -> SqlSourceError:
        # str(exc.orig) is the driver's message (no password: drivers never echo it); the
        # statement and parameters stay out of the message but are chained for debugging.
        detail = str(getattr(exc, "orig", None) or exc).strip().splitlines()[0]
        lost = isinstance(exc, DBAPIError) and exc.connection_invalidated
        then = "the connection will be re-opened and the" if lost else "the"
        return SqlSourceError(
            f"source {self.source_name!r} ({self.options.display_url()}): {action} failed: {detail}; "
            f"{then} next cycle tries again"
        )

    def prepare(self) -> None:
        """Checks before the first read; nothing to do unless a store says otherwise."""

    def pending(self, limit: int) -> Iterator[Invoice | RejectedRecord]:
        try:
            self.prepare()
        except SQLAlchemyError as exc:
            raise self._failure(f"checking {self.where_headers}", exc) from exc
        handed_out = 0
        after: Any = None
        while handed_out < limit:
            page_size = min(self.options.page_size, limit - handed_out)
            try:
                with self.engine.connect() as conn:
                    headers = self._headers(conn, after, page_size)
                    lines = self._lines(conn, headers) if headers else {}
            except SQLAlchemyError as exc:
                raise self._failure(f"reading pending invoices from {self.where_headers}", exc) from exc
            for header in headers:
                yield self._invoice(header, lines)
                handed_out += 1
            if len(headers) < page_size:
                return
            after = headers[-1]["_key"]

    def _invoice(
        self, header: Mapping[str, Any], lines: Mapping[Any, Sequence[Mapping[str, Any]]]
    ) -> Invoice | RejectedRecord:
        raise NotImplementedError

    @property
    def where_headers(self) -> str:
        raise NotImplementedError

    def _headers(self, conn: Connection, after: Any, page_size: int) -> list[dict[str, Any]]:
        """One page of pending invoice headers after the key ``after``, in key order."""
        raise NotImplementedError

    def _lines(self, conn: Connection, headers: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
        """The lines of these headers, by invoice key."""
        raise NotImplementedError


class StagingStore(_Store):
    """The documented staging tables (config/sql/staging-*.sql)."""

    def __init__(self, source_name: str, options: SqlSourceOptions, engine: Engine) -> None:
        super().__init__(source_name, options, engine)
        self.header, self.line = staging_tables(options.header_table, options.line_table, options.db_schema)
        #: Whether the header table has the optional QR column; looked up on the first write-back.
        self._qr_column: bool | None = None
        #: Whether it has the optional reason and time columns (LIFECYCLE_COLUMNS), likewise.
        self._lifecycle_columns: bool | None = None

    def _has_qr_column(self) -> bool:
        """Whether the header table has ``myinvois_qr_png`` (config/sql/add-qr-column.sql).
        Looked up once per process: a column added later is used from the next start."""
        self._read_optional_columns()
        return bool(self._qr_column)

    def _has_lifecycle_columns(self) -> bool:
        """Whether the header table has ``myinvois_reason`` and ``myinvois_event_at``
        (config/sql/add-lifecycle-columns.sql); looked up once per process, as the QR column."""
        self._read_optional_columns()
        return bool(self._lifecycle_columns)

    def _read_optional_columns(self) -> None:
        if self._qr_column is not None:
            return
        try:
            with self.engine.connect() as conn:
                columns = inspect(conn).get_columns(self.options.header_table, schema=self.options.db_schema)
        except SQLAlchemyError as exc:
            raise self._failure(f"reading the columns of table {self.options.header_table}", exc) from exc
        names = {column["name"].lower() for column in columns}
        self._lifecycle_columns = set(LIFECYCLE_COLUMNS) <= names
        if not self._lifecycle_columns:
            log.warning(
                "source %r: table %s has no columns %s; rejection requests and cancellations after Valid are "
                "written as their status only: add them with config/sql/add-lifecycle-columns.sql to keep the "
                "reason and time too",
                self.source_name,
                self.options.header_table,
                " and ".join(LIFECYCLE_COLUMNS),
            )
        self._qr_column = QR_COLUMN in names
        if self._qr_column or self._lifecycle_columns:
            self.header, self.line = staging_tables(
                self.options.header_table,
                self.options.line_table,
                self.options.db_schema,
                qr_column=self._qr_column,
                lifecycle_columns=self._lifecycle_columns,
            )

    @property
    def where_headers(self) -> str:
        return f"table {self.options.header_table}"

    def prepare(self) -> None:
        """A missing header table is created by the init scripts, or reported with the fix."""
        with self.engine.connect() as conn:
            if inspect(conn).has_table(self.options.header_table, schema=self.options.db_schema):
                return
        if not self.options.init_scripts:
            ddl = {"postgresql": "postgres", "sqlite": "sqlite"}.get(self.engine.dialect.name, "mariadb")
            raise SqlSourceError(
                f"source {self.source_name!r} ({self.options.display_url()}): table {self.options.header_table} does not exist; "
                f"create the staging tables with config/sql/staging-{ddl}.sql (or set header_table to the table's name)"
            )
        statements = []
        for script in self.options.init_scripts:
            try:
                statements.extend(split_sql_script(script.read_text("utf-8")))
            except OSError as exc:
                raise SqlSourceError(
                    f"source {self.source_name!r}: setting init_scripts: cannot read {script}: {exc.strerror}"
                ) from None
        with self.engine.begin() as conn:
            for statement in statements:
                conn.exec_driver_sql(statement)
        log.info("source %r: ran %d statement(s) from init_scripts", self.source_name, len(statements))

    def _pending_condition(self):
        status = self.header.c.myinvois_status
        return or_(status.is_(None), status == PENDING_STATUS)

    def _headers(self, conn, after: Any, page_size: int) -> list[dict[str, Any]]:
        h = self.header
        query = select(h.c.id.label("_key"), *(h.c[name] for name in HEADER_DATA_COLUMNS)).where(
            self._pending_condition()
        )
        if after is not None:
            query = query.where(h.c.id > after)
        query = query.order_by(h.c.id).limit(page_size)
        return _dicts(conn.execute(query))

    def _lines(self, conn, headers: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
        ln = self.line
        keys = [header["_key"] for header in headers]
        query = (
            select(ln.c.id, ln.c.header_id, *(ln.c[name] for name in LINE_DATA_COLUMNS))
            .where(ln.c.header_id.in_(keys))
            .order_by(ln.c.header_id, ln.c.line_no, ln.c.id)
        )
        grouped: dict[Any, list[dict[str, Any]]] = defaultdict(list)
        for row in _dicts(conn.execute(query)):
            grouped[row["header_id"]].append(row)
        return grouped

    def _invoice(self, header, lines):
        key = header["_key"]
        rows = lines.get(key, [])
        return build_invoice(
            source_key=str(key),
            header=header,
            lines=rows,
            header_where=f"{self.options.header_table} id={key}",
            line_where=[f"{self.options.line_table} id={row['id']} (line_no {row['line_no']})" for row in rows],
            no_lines_hint=f"add rows to {self.options.line_table} with header_id={key}",
            retry_hint="After correcting the row, set its myinvois_status back to 'pending' (or empty) to have it sent again.",
        )

    def _int_keys(self, source_keys: Sequence[str]) -> list[int]:
        keys = []
        for key in source_keys:
            try:
                keys.append(int(key))
            except ValueError:
                log.warning(
                    "source %r: %r is not a key of %s; ignored", self.source_name, key, self.options.header_table
                )
        return keys

    def mark_queued(self, source_keys: Sequence[str]) -> None:
        h = self.header
        keys = self._int_keys(source_keys)
        try:
            with self.engine.begin() as conn:
                for chunk in _chunks(keys, KEYS_PER_STATEMENT):
                    conn.execute(
                        update(h)
                        .where(h.c.id.in_(chunk), self._pending_condition())
                        .values(myinvois_status=QUEUED_STATUS, myinvois_updated_at=_now_for(self.engine))
                    )
        except SQLAlchemyError as exc:
            raise self._failure(f"marking invoices queued in table {self.options.header_table}", exc) from exc

    def write_outcomes(self, outcomes: Sequence[DocumentOutcome]) -> None:
        with_qr = self._has_qr_column()
        with_lifecycle = self._has_lifecycle_columns()
        h = self.header
        # Written only over an older version (or none): repeating an outcome, or receiving an
        # old version's outcome after a newer one, changes nothing. After Valid, the same
        # version moves on (rejection requested, cancelled, a cancel refused): written over
        # a validated status of the same version.
        statement = (
            update(h)
            .where(
                and_(
                    h.c.id == bindparam("b_key"),
                    or_(
                        h.c.myinvois_version.is_(None),
                        h.c.myinvois_version < bindparam("b_version"),
                        and_(
                            h.c.myinvois_version == bindparam("b_version"),
                            # Equalities, not IN (...): an expanding IN cannot run as an executemany.
                            or_(*(h.c.myinvois_status == status for status in VALIDATED_STATUSES)),
                            bindparam("b_after_valid", type_=Boolean),
                        ),
                    ),
                )
            )
            .values(
                myinvois_status=bindparam("b_status"),
                myinvois_uuid=bindparam("b_uuid"),
                myinvois_long_id=bindparam("b_long_id"),
                myinvois_validation_link=bindparam("b_validation_link"),
                myinvois_errors=bindparam("b_errors"),
                myinvois_submission_uid=bindparam("b_submission_uid"),
                myinvois_updated_at=bindparam("b_updated_at"),
                myinvois_version=bindparam("b_version"),
                **({QR_COLUMN: bindparam("b_qr_png")} if with_qr else {}),
                **(
                    {"myinvois_reason": bindparam("b_reason"), "myinvois_event_at": bindparam("b_event_at")}
                    if with_lifecycle
                    else {}
                ),
            )
        )
        rows = []
        for outcome in outcomes:
            keys = self._int_keys([outcome.source_key])
            if not keys:
                continue
            params = _outcome_parameters(outcome, self.engine)
            rows.append(
                {
                    "b_" + name: value
                    for name, value in params.items()
                    if name not in ("number", "document_type", "reason", "event_at", "cancellable_until")
                }
                | {"b_key": keys[0], "b_after_valid": outcome.state.value in AFTER_VALID_STATUSES}
                | ({"b_qr_png": qr_code_of(outcome)} if with_qr else {})
                | ({"b_reason": params["reason"], "b_event_at": params["event_at"]} if with_lifecycle else {})
            )
        if not rows:
            return
        try:
            # One transaction: either every outcome of the batch is written or none is, and the
            # connector retries the whole batch; the version guard makes the retry exact.
            with self.engine.begin() as conn:
                conn.execute(statement, rows)
        except SQLAlchemyError as exc:
            raise self._failure(f"writing {len(rows)} outcome(s) to table {self.options.header_table}", exc) from exc


class QueryStore(_Store):
    """The ERP's own tables, read and written through the configured statements."""

    def __init__(self, source_name: str, options: SqlSourceOptions, engine: Engine) -> None:
        super().__init__(source_name, options, engine)
        assert options.queries is not None  # guaranteed by the options model
        self.queries = options.queries
        # The configured SELECT becomes a derived table so the connector can page through it
        # by key without the user writing paging clauses in each database's dialect.
        base = self.queries.pending_headers.rstrip().rstrip(";")
        self._base = base
        self._returns_source_key: bool | None = None
        self._first_page = text(f"SELECT * FROM ({base}) pending_headers ORDER BY source_key LIMIT :page_size")
        self._next_page = text(
            f"SELECT * FROM ({base}) pending_headers WHERE source_key > :after_key ORDER BY source_key LIMIT :page_size"
        )
        self._lines_statement = text(self.queries.lines.rstrip().rstrip(";"))
        self._write_statement = text(self.queries.write_result.rstrip().rstrip(";"))
        self._mark_statement = text(self.queries.mark_queued.rstrip().rstrip(";")) if self.queries.mark_queued else None

    @property
    def where_headers(self) -> str:
        return "setting queries.pending_headers"

    def _headers(self, conn, after: Any, page_size: int) -> list[dict[str, Any]]:
        if self._returns_source_key is None:
            # Asked once per store: without a source_key column the paging wrapper cannot work,
            # and the database's own error ("column source_key does not exist") names no setting.
            probe = conn.execute(text(f"SELECT * FROM ({self._base}) pending_headers WHERE 1 = 0"))
            self._returns_source_key = "source_key" in probe.keys()  # noqa: SIM118 - a result, not a dict: "in" would read rows
        if not self._returns_source_key:
            # Said on every call, not just the first: the store is kept for the process.
            raise SqlSourceError(
                f"source {self.source_name!r}: setting queries.pending_headers returns no source_key column; "
                "alias the ERP's invoice key as source_key (SELECT inv.id AS source_key, ...)"
            )
        if after is None:
            result = conn.execute(self._first_page, {"page_size": page_size})
        else:
            result = conn.execute(self._next_page, {"after_key": after, "page_size": page_size})
        headers = _dicts(result)
        for header in headers:
            header["_key"] = header["source_key"]
        if headers:
            missing = [name for name in HEADER_DATA_COLUMNS if name not in headers[0]]
            required_missing = [name for name in missing if name in ("invoice_number", "supplier_tin", "buyer_tin")]
            if required_missing:
                raise SqlSourceError(
                    f"source {self.source_name!r}: setting queries.pending_headers returns no column(s) "
                    f"{', '.join(required_missing)}; alias the ERP's columns to the names in docs/plugin-sql.md"
                )
        return headers

    def _lines(self, conn, headers: list[dict[str, Any]]) -> dict[Any, list[dict[str, Any]]]:
        grouped: dict[Any, list[dict[str, Any]]] = {}
        for header in headers:
            key = header["_key"]
            grouped[key] = _dicts(conn.execute(self._lines_statement, {"source_key": str(key)}))
        return grouped

    def _invoice(self, header, lines):
        key = header["_key"]
        rows = lines.get(key, [])
        return build_invoice(
            source_key=str(key),
            header=header,
            lines=rows,
            header_where=f"queries.pending_headers source_key={key}",
            line_where=[f"queries.lines source_key={key} row {position}" for position, _ in enumerate(rows, start=1)],
            no_lines_hint=f"setting queries.lines returned no rows for source_key={key}",
            retry_hint="After correcting the invoice in the ERP, make it pending again so that queries.pending_headers returns it.",
        )

    def mark_queued(self, source_keys: Sequence[str]) -> None:
        if self._mark_statement is None or not source_keys:
            return
        try:
            with self.engine.begin() as conn:
                conn.execute(self._mark_statement, [{"source_key": key} for key in source_keys])
        except SQLAlchemyError as exc:
            raise self._failure("running setting queries.mark_queued", exc) from exc

    def write_outcomes(self, outcomes: Sequence[DocumentOutcome]) -> None:
        if not outcomes:
            return
        used = set(self._write_statement._bindparams)
        rows = [
            {k: v for k, v in _outcome_parameters(outcome, self.engine).items() if k in used}
            # Rendered only for a statement that stores it.
            | ({"qr_png": qr_code_of(outcome)} if "qr_png" in used else {})
            for outcome in outcomes
        ]
        try:
            with self.engine.begin() as conn:
                conn.execute(self._write_statement, rows)
        except SQLAlchemyError as exc:
            raise self._failure(f"running setting queries.write_result for {len(rows)} outcome(s)", exc) from exc


#: The store of each source, made on its first hook call and reused: a store holds SQLAlchemy
#: MetaData and Table objects, and the engine's statement cache keeps every statement built on
#: them alive, so a store made per call grew the process by a MetaData per call.
_stores: dict[tuple[str, int, str], StagingStore | QueryStore] = {}
_stores_lock = threading.Lock()


def store_for(source_name: str, options: SqlSourceOptions, engine: Engine) -> StagingStore | QueryStore:
    """The one store of this source, its options and engine, made on first use."""
    # The options by value, not identity: a configuration read again gives equal options, and
    # must not make a new store (the secrets are masked in the JSON, but they are part of the
    # engine, and a store is kept per engine: it holds its engine, so the id stays that engine's).
    # Held in memory only, never logged.
    key = (source_name, id(engine), options.model_dump_json())
    with _stores_lock:
        store = _stores.get(key)
        if store is None:
            store = (
                QueryStore(source_name, options, engine)
                if options.mode == "queries"
                else StagingStore(source_name, options, engine)
            )
            _stores[key] = store
        return store


def forget_stores() -> None:
    """Drop every kept store (with :func:`myinvois_sql.engines.dispose_all`: their engines go too)."""
    with _stores_lock:
        _stores.clear()


__all__ = ["STATUS_COLUMNS", "SqlSourceError", "forget_stores", "store_for"]
