"""The ledger's database connection and the helpers every part of the ledger shares."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import overload

from sqlalchemy import Engine, create_engine, event, insert, select, update
from sqlalchemy.engine import make_url
from sqlalchemy.exc import IntegrityError, OperationalError

#: Rows per IN (...) list: well under every backend's bound-parameter limit.
CHUNK = 500


def utcnow() -> datetime:
    return datetime.now(UTC)


@overload
def as_utc(value: datetime) -> datetime: ...
@overload
def as_utc(value: None) -> None: ...
@overload
def as_utc(value: datetime | None) -> datetime | None: ...
def as_utc(value: datetime | None) -> datetime | None:
    # SQLite and MariaDB hand back naive datetimes; everything we store is UTC.
    if value is not None and value.tzinfo is None:
        return value.replace(tzinfo=UTC)
    return value


def iso(value: datetime | None) -> str | None:
    value = as_utc(value)
    return value.isoformat(timespec="seconds") if value else None


def chunks(values: list, size: int = CHUNK):
    for start in range(0, len(values), size):
        yield values[start : start + size]


def hold(conn, name: str) -> None:
    """Hold the lock ``name`` until this transaction ends: an UPDATE of its row, which every
    database serialises (a row lock on PostgreSQL and MariaDB, the write lock on SQLite). Reads
    made after it see what the previous holder committed. The row must exist: see
    :func:`create_lock`, called before the transaction (creating it inside would take gap
    locks on MariaDB, and two first-time holders would deadlock)."""
    from connector_core.ledger.schema import locks

    held = conn.execute(update(locks).where(locks.c.name == name).values(taken=locks.c.taken + 1)).rowcount
    if not held:
        raise RuntimeError(f"lock {name!r} has no row: call create_lock first")


def create_lock(engine: Engine, name: str) -> None:
    """Make sure the row of lock ``name`` exists, in a transaction of its own."""
    from connector_core.ledger.schema import locks

    for _ in range(5):
        try:
            with engine.begin() as conn:
                if conn.execute(select(locks.c.name).where(locks.c.name == name)).first() is None:
                    conn.execute(insert(locks).values(name=name, taken=0))
            return
        except (IntegrityError, OperationalError):  # created by another writer, or a deadlock on it
            continue
    raise RuntimeError(f"could not create the ledger lock {name!r}")


class LedgerPart:
    """One job of the ledger over the shared engine. Each public method is one transaction."""

    def __init__(self, engine: Engine, sender: str | None) -> None:
        self.engine = engine
        #: This connector instance's name on the rows it claims (see Ledger).
        self.sender = sender


def make_engine(url: str, *, echo: bool = False) -> Engine:
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).expanduser().parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, echo=echo, connect_args={"timeout": 30, "check_same_thread": False})

        @event.listens_for(engine, "connect")
        def _sqlite_pragmas(dbapi_conn, _record):  # pragma: no cover - trivial
            # WAL lets the poller read while the submitter writes; the busy timeout makes
            # concurrent writers (threads, or a second process) wait instead of failing.
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=30000")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        return engine
    return create_engine(url, echo=echo, pool_pre_ping=True)
