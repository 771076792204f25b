"""Bring a ledger database to the newest schema with Alembic, from inside the package.

Users never run ``alembic`` themselves: every command that opens the ledger upgrades it first,
and ``doctor`` reports the revision.

Several connectors may share one ledger and start at the same moment, so the check "is the
schema at head?" and the upgrade that follows run under one lock per ledger; the connectors that
lose the race wait, then find the schema already at head and do nothing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import text
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.exc import OperationalError, SQLAlchemyError

MIGRATIONS = Path(__file__).with_name("migrations")

LOCK_NAME = "myinvois_ledger_migrate"
"""Names the migration lock on every backend: the MariaDB user lock (with the database name),
the PostgreSQL advisory key (derived from it), and the lock file next to a SQLite ledger."""

# PostgreSQL advisory locks are keyed by a bigint. A digest of the name (not Python's hash(),
# which differs per process) gives every connector the same key, unlikely to collide with
# another application's advisory locks on the same database.
PG_LOCK_KEY = int.from_bytes(hashlib.blake2b(LOCK_NAME.encode(), digest_size=8).digest(), "big", signed=True)

LOCK_TIMEOUT_SECONDS = 600.0
"""How long a connector waits for another one's migration. Long, because the other connector may
be rewriting a large table; a holder that dies releases the lock at once (connection closed, or
process gone for the lock file), so only a hung migration makes a connector wait this long."""


class MigrationInProgress(RuntimeError):
    """Another connector held the migration lock of this ledger for longer than the timeout."""

    def __init__(self, detail: str, timeout: float) -> None:
        super().__init__(
            f"another connector is migrating this ledger ({detail}; still held after {timeout:g} s); "
            "wait for its migration to finish, or stop the connector that is stuck in it, then start this one again"
        )


def _config() -> Config:
    cfg = Config()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    return cfg


def head_revision() -> str:
    head = ScriptDirectory.from_config(_config()).get_current_head()
    assert head is not None
    return head


def current_revision(engine: Engine) -> str | None:
    with engine.connect() as conn:
        return MigrationContext.configure(conn).get_current_revision()


def upgrade(engine: Engine, *, lock_timeout: float = LOCK_TIMEOUT_SECONDS) -> None:
    """Upgrade to head; a no-op on an up-to-date ledger.

    Raises :class:`MigrationInProgress` when another connector's migration holds the lock for
    longer than ``lock_timeout`` seconds."""
    head = head_revision()
    # Fast path, without the lock: an up-to-date ledger is the common case at every start.
    # Not on SQLite, where the lock is a local file lock that costs nothing, and where even this
    # check must wait for it: the first connection to a fresh file switches it to WAL (see the
    # ledger's engine), and SQLite answers "database is locked" to processes doing that at
    # once, without waiting out the busy timeout.
    if engine.dialect.name != "sqlite" and current_revision(engine) == head:
        return
    with migration_lock(engine, timeout=lock_timeout) as conn:
        # Checked again under the lock: a connector that waited finds the winner's work done.
        if MigrationContext.configure(conn).get_current_revision() == head:
            return
        cfg = _config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")


@contextmanager
def migration_lock(engine: Engine, *, timeout: float = LOCK_TIMEOUT_SECONDS) -> Iterator[Connection]:
    """A connection in a transaction, holding this ledger's migration lock until the transaction
    has committed (or rolled back). Whoever changes the schema must do it on this connection."""
    if timeout <= 0:
        # Zero means "never wait" to MariaDB and filelock but "wait forever" to PostgreSQL.
        raise ValueError("the migration lock timeout must be a positive number of seconds")
    backend = engine.dialect.name
    if backend == "postgresql":
        lock = _postgresql_locked
    elif backend in ("mysql", "mariadb"):
        lock = _mariadb_locked
    elif backend == "sqlite":
        lock = _sqlite_locked
    else:
        raise ValueError(f"ledger.url: the ledger runs on SQLite, PostgreSQL or MariaDB/MySQL, not {backend}")
    with lock(engine, timeout) as conn:
        yield conn


@contextmanager
def _postgresql_locked(engine: Engine, timeout: float) -> Iterator[Connection]:
    # A transaction-level lock on the transaction that runs the upgrade: it is released by the
    # very commit that makes the new schema visible, so a waiter can never see a half-done one.
    # PostgreSQL DDL is transactional, so nothing is committed before that.
    with engine.begin() as conn:
        previous = conn.execute(text("SELECT current_setting('lock_timeout')")).scalar_one()
        conn.execute(text("SELECT set_config('lock_timeout', :ms, true)"), {"ms": str(max(1, round(timeout * 1000)))})
        try:
            conn.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": PG_LOCK_KEY})
        except OperationalError as exc:
            orig = exc.orig
            if (getattr(orig, "sqlstate", None) or getattr(orig, "pgcode", None)) == "55P03":  # lock_not_available
                raise MigrationInProgress(f"PostgreSQL advisory lock {PG_LOCK_KEY}", timeout) from None
            raise
        # The wait limit is for the lock only: the migration's own DDL keeps the server's setting.
        conn.execute(text("SELECT set_config('lock_timeout', :previous, true)"), {"previous": previous})
        # Under READ COMMITTED (the default) every statement after the lock sees the winner's commit.
        yield conn


@contextmanager
def _mariadb_locked(engine: Engine, timeout: float) -> Iterator[Connection]:
    # MariaDB commits implicitly before and after every DDL statement, so a transaction cannot
    # keep others out; a user lock belongs to the session and survives those commits.
    with engine.connect() as conn:
        name = _mariadb_lock_name(conn.execute(text("SELECT DATABASE()")).scalar_one())
        got = conn.execute(text("SELECT GET_LOCK(:name, :timeout)"), {"name": name, "timeout": timeout}).scalar()
        # End the transaction SQLAlchemy began for GET_LOCK: the upgrade opens its own, whose
        # REPEATABLE READ snapshot must be taken after the lock, not before.
        conn.commit()
        if got != 1:  # 0 on timeout, NULL if the wait was killed
            raise MigrationInProgress(f"MariaDB lock '{name}'", timeout)
        try:
            # Released only after this commit: alembic_version is an ordinary InnoDB row, which a
            # waiter must see written before it re-checks the revision.
            with conn.begin():
                yield conn
        finally:
            try:
                conn.execute(text("SELECT RELEASE_LOCK(:name)"), {"name": name})
                conn.commit()
            except SQLAlchemyError:
                # Closing the session releases its locks: a pooled connection must never keep one.
                conn.invalidate()


def _mariadb_lock_name(database: str) -> str:
    """User locks are server-wide, unlike PostgreSQL's advisory locks: naming the database keeps
    ledgers that share a server from waiting on each other's migrations. MySQL caps a lock name
    at 64 characters, so a long database name is replaced by its digest."""
    name = f"{LOCK_NAME}.{database}"
    if len(name) > 64:
        name = f"{LOCK_NAME}.{hashlib.blake2b(database.encode(), digest_size=8).hexdigest()}"
    return name


@contextmanager
def _sqlite_locked(engine: Engine, timeout: float) -> Iterator[Connection]:
    database = engine.url.database
    if not database or database == ":memory:":
        # An in-memory database belongs to one process: nobody to race.
        with engine.begin() as conn:
            yield conn
        return
    from filelock import FileLock, Timeout

    # A file lock, not a SQLite transaction: Python's sqlite3 runs DDL outside any transaction,
    # and the OS releases the lock when its holder dies, even by SIGKILL. It sits next to the
    # database (the path SQLite itself opens), so every connector on that file finds it.
    lock = FileLock(f"{database}.{LOCK_NAME}.lock", timeout=timeout)
    try:
        lock.acquire()
    except Timeout:
        raise MigrationInProgress(f"lock file {lock.lock_file}", timeout) from None
    try:
        with engine.begin() as conn:
            yield conn
    finally:
        lock.release()
