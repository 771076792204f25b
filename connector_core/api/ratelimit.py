"""Client-side rate limits, shared by every process that uses the same backend.

LHDN limits each API per client id and per minute, and answers over-eager clients with 429 — and
with throttling of the client id when it keeps happening. So before every call the client takes
a slot for ``(client_id, endpoint)`` from a sliding-window bucket (pyrate-limiter 4: we reuse its
tested buckets rather than hand-writing the atomic check-and-insert of each backend). Several
daemon processes or hosts working for one client id share the buckets through one backend:

* ``memory``: one process only;
* ``sqlite:///path/to/file.db``: processes on one host (the bucket table is guarded by a file
  lock next to the database, ``<file>.lock``, so count-then-insert is atomic across processes);
* ``redis://host:port/db``: processes on several hosts (an atomic Lua check-and-insert);
* ``postgresql://...``: processes on several hosts (the bucket table is locked per insert).

The waiting loop is ours, not the library's, because three more things decide when a slot may
be taken, and each must be checked *before* the slot is taken:

* a shared *cool-down* per ``(client_id, endpoint)``: when any process receives a 429 with
  ``Retry-After``, it writes "blocked until T" to the backend, and every process waits until T.
  A slot is only taken once the cool-down is over; a slot taken before one appeared is never
  used after it (it would fire together with the fresh ones and double the load on LHDN's
  window right after the wait);
* a local floor: each policy also remembers its own grants of the window in memory and never
  exceeds a limit counting those, so a backend that forgot its window (Redis restarted without
  persistence) cannot hand out a second full window on top of the calls just made;
* the backend's health: any failure of the backend raises :class:`.errors.RateBackendUnavailable`
  before anything is sent, and the next call simply tries the backend again.

LHDN counts a call when it *arrives*, we count it when we *grant* it; the time between (sending,
a busy machine, the network) varies from call to call. So our window is longer than LHDN's by
``arrival_margin_seconds`` (1 s in 60 by default): any ``limit`` grants then span at least 61 s,
and their arrivals still span more than LHDN's 60 s unless one call takes a full second longer
to arrive than another. ``safety_factor`` (default 1.0) stays for operators who want to leave
part of LHDN's figure unused, e.g. for another tool on the same client id.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections import deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, cast
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pyrate_limiter import AbstractBucket, InMemoryBucket, Rate, RateItem, validate_rate_list

if TYPE_CHECKING:
    from filelock import SoftFileLock

from connector_core.config_paths import resolve_sqlite_url

from .endpoints import LHDN_WINDOW_SECONDS, MIN_SPACING_SECONDS, PROFILES, Endpoint
from .errors import RateBackendUnavailable

log = logging.getLogger(__name__)

BACKEND_SCHEMES = ("memory", "sqlite:///", "redis://", "rediss://", "unix://", "postgresql://", "postgres://")

#: Extra sleep after a computed wait for a slot, as pyrate-limiter's own loop had: a retry landing
#: on the very millisecond the slot frees would be refused and spin, and where windows are
#: compressed (tests, benchmarks) and the arrival margin with them to tens of milliseconds, it
#: keeps the grant at a window's edge clear of scheduling jitter. At 60 s it costs nothing.
_RETRY_SLACK_S = 0.05

#: How often a bucket's expired entries are deleted. Counting ignores them anyway; this only
#: keeps the tables and keys small.
_TIDY_EVERY_S = 10.0


class RateLimitSettings(BaseModel):
    """How hard the connector may call each MyInvois API."""

    model_config = ConfigDict(extra="forbid")

    profile: Literal["production", "sandbox", "off"] = Field(
        "production",
        description="LHDN's published production limits; 'sandbox' = our guess (half), 'off' = no client-side limit.",
    )
    # 1.0: the arrival margin below now absorbs the grant-to-arrival jitter that 0.97 used to;
    # a lower figure only leaves part of LHDN's limit unused on purpose.
    safety_factor: float = Field(1.0, gt=0, le=1, description="Fraction of LHDN's limit we allow ourselves.")
    arrival_margin_seconds: float = Field(
        1.0,
        ge=0,
        description="Seconds by which our window is longer than LHDN's, per 60 s of window: LHDN counts calls "
        "when they arrive, we when we grant them. Scaled with window_seconds.",
    )
    window_seconds: float = Field(
        LHDN_WINDOW_SECONDS, gt=0, description="Length of LHDN's limit window. LHDN's is 60 s; benchmarks compress it."
    )
    overrides: dict[Endpoint, int] = Field(
        default_factory=dict,
        description="Per-window limit for some endpoints, replacing the profile's (safety factor still applies).",
    )
    backend: str | None = Field(
        None,
        description="memory | sqlite:///path | redis://... | postgresql://... Unset: the connector keeps the windows in "
        "state_dir/rate-limits.sqlite (a RatePolicy used on its own: in memory).",
    )
    key_prefix: str = Field("myinvois", description="Prefix of the tables / keys in a shared backend.")
    backend_timeout_seconds: float = Field(
        5.0, gt=0, description="Longest wait for the shared backend (connect, lock, answer) before it counts as down."
    )

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str | None) -> str | None:
        if value is None:
            return value
        value = value.strip()
        normalized = value.replace("postgresql+psycopg://", "postgresql://")
        if not normalized.startswith(BACKEND_SCHEMES):
            raise ValueError(
                f"rate limit backend '{value.split('://')[0]}' is not supported; use memory, "
                "sqlite:///path, redis://host:port/db or postgresql://user@host/db"
            )
        problem = _backend_url_problem(normalized)
        if problem:
            raise ValueError(problem)
        # A relative SQLite file is relative to the configuration file's folder.
        return resolve_sqlite_url(value)

    @field_validator("overrides")
    @classmethod
    def _positive(cls, value: dict[Endpoint, int]) -> dict[Endpoint, int]:
        for endpoint, limit in value.items():
            if limit < 1:
                raise ValueError(f"rate limit override for {endpoint.value} must be at least 1")
        return value

    def limit_for(self, endpoint: Endpoint) -> int | None:
        """Calls we allow ourselves per window for ``endpoint``; None = unlimited.

        An override applies even under profile ``off``: an explicit figure is explicit intent.
        """
        if endpoint in self.overrides:
            published = self.overrides[endpoint]
        elif self.profile == "off":
            return None
        else:
            published = PROFILES[self.profile][endpoint]
        return max(1, math.floor(published * self.safety_factor))

    def counting_window_seconds(self) -> float:
        """Length of our window: LHDN's plus the arrival margin, both compressed alike in benchmarks."""
        return self.window_seconds * (1 + self.arrival_margin_seconds / LHDN_WINDOW_SECONDS)


def _safe_name(prefix: str, client_id: str, endpoint: Endpoint) -> str:
    # Client ids may hold any character; table names and keys must not. The digest keeps one
    # bucket per client id without putting the id itself in a SQL identifier.
    digest = hashlib.sha256(client_id.encode()).hexdigest()[:12]
    return f"{prefix}_{endpoint.value}_{digest}".lower()


def _url_without_secrets(url: str) -> str:
    """The backend URL as it may be printed: no user, password or query (which can carry one)."""
    if "://" not in url or url.startswith("sqlite:"):
        return url
    parts = urlsplit(url)
    host = parts.netloc.rpartition("@")[2]
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


def _secrets_in(url: str) -> list[str]:
    """Every password the URL carries, so a driver's message quoting one can be scrubbed."""
    if "://" not in url:
        return []
    parts = urlsplit(url)
    found = [parts.password] if parts.password else []
    found += [value for key, value in parse_qsl(parts.query) if "pass" in key.lower() and value]
    return found


class _Backend:
    """Where buckets and cool-downs live. Times in cool-downs are epoch seconds (shared between hosts).

    Nothing here connects at construction: a backend that is down when the daemon starts is
    reported by the first call, like one that goes down later, and picked up when it comes back.
    """

    #: The driver's errors that mean "the backend cannot answer now".
    outage_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    def make_bucket(self, name: str, rates: list[Rate]) -> AbstractBucket:
        raise NotImplementedError

    def get_cooldown(self, key: str) -> float | None:
        raise NotImplementedError

    def extend_cooldown(self, key: str, until: float) -> None:
        """Record "blocked until ``until``", never shortening a longer block already recorded."""
        raise NotImplementedError

    def ping(self) -> None:
        """One cheap round trip; raises one of :attr:`outage_errors` when the backend is down."""

    def forgot(self, prefix: str) -> bool:
        """Whether the backend lost what it knew since this process last asked (a restart
        without persistence). Only a backend that can forget answers True."""
        return False

    def how_to_fix(self) -> str:
        """What the operator checks or does when the backend is down."""
        return "check the rate-limit backend"

    def close(self) -> None:
        pass


class _MemoryBackend(_Backend):
    def __init__(self, url: str, timeout: float) -> None:
        super().__init__(url, timeout)
        self._lock = threading.Lock()
        self._cooldowns: dict[str, float] = {}

    def make_bucket(self, name: str, rates: list[Rate]) -> AbstractBucket:
        return InMemoryBucket(rates)

    def get_cooldown(self, key: str) -> float | None:
        with self._lock:
            return self._cooldowns.get(key)

    def extend_cooldown(self, key: str, until: float) -> None:
        with self._lock:
            self._cooldowns[key] = max(until, self._cooldowns.get(key, 0.0))


class _SQLiteBackend(_Backend):
    def __init__(self, url: str, timeout: float) -> None:
        from filelock import Timeout

        super().__init__(url, timeout)
        # sqlite:///relative.db and sqlite:////absolute/path.db, as in SQLAlchemy URLs.
        self.path = str(Path(url[len("sqlite:///") :]).expanduser())
        # A lock held by another program ends as "database is locked" or a file-lock timeout.
        self.outage_errors = (sqlite3.Error, Timeout, OSError)
        self._thread_lock = threading.Lock()
        self._conn: sqlite3.Connection | None = None
        self._file_lock: SoftFileLock | None = None

    def _ready(self) -> sqlite3.Connection:
        with self._thread_lock:
            if self._conn is None:
                from filelock import FileLock

                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
                # The same lock file the buckets use, so cool-down writes and bucket writes never
                # fight over SQLite's own locks.
                file_lock = FileLock(self.path + ".lock", timeout=self.timeout)
                conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None)
                try:
                    with file_lock:
                        conn.execute("PRAGMA journal_mode=WAL")
                        conn.execute(
                            "CREATE TABLE IF NOT EXISTS myinvois_rate_cooldown "
                            "(key TEXT PRIMARY KEY, until REAL NOT NULL)"
                        )
                except BaseException:
                    conn.close()
                    raise
                self._conn, self._file_lock = conn, file_lock
            return self._conn

    def make_bucket(self, name: str, rates: list[Rate]) -> AbstractBucket:
        from filelock import FileLock
        from pyrate_limiter import SQLiteBucket
        from pyrate_limiter.buckets.sqlite_bucket import Queries

        self._ready()
        # What SQLiteBucket.init_from_file does, but with timeouts on the file lock and on
        # SQLite's busy wait: the library's wait forever for a lock another program may never free.
        file_lock = FileLock(self.path + ".lock", timeout=self.timeout)
        conn = sqlite3.connect(self.path, timeout=self.timeout, isolation_level="DEFERRED", check_same_thread=False)
        try:
            with file_lock:
                conn.execute("PRAGMA journal_mode=WAL")
                conn.execute("PRAGMA synchronous=NORMAL")
                conn.execute(Queries.CREATE_BUCKET_TABLE.format(table=name))
                index = f"idx_{name}_rate_item_timestamp"
                conn.execute(Queries.CREATE_INDEX_ON_TIMESTAMP.format(index_name=index, table_name=name))
                conn.commit()
        except BaseException:
            conn.close()
            raise
        return SQLiteBucket(rates, conn, table=name, lock=file_lock)

    def get_cooldown(self, key: str) -> float | None:
        conn = self._ready()
        with self._thread_lock:
            row = conn.execute("SELECT until FROM myinvois_rate_cooldown WHERE key = ?", (key,)).fetchone()
        return None if row is None else float(row[0])

    def extend_cooldown(self, key: str, until: float) -> None:
        conn = self._ready()
        assert self._file_lock is not None
        with self._thread_lock, self._file_lock:
            conn.execute(
                "INSERT INTO myinvois_rate_cooldown (key, until) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET until = max(until, excluded.until)",
                (key, until),
            )

    def ping(self) -> None:
        conn = self._ready()
        with self._thread_lock:
            conn.execute("SELECT count(*) FROM myinvois_rate_cooldown").fetchone()

    def how_to_fix(self) -> str:
        return (
            f"another program may hold a lock on {self.path} or {self.path}.lock, or the disk or directory "
            "is full or not writable; free it"
        )

    def close(self) -> None:
        with self._thread_lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None


_REDIS_EXTEND = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


# pyrate-limiter's Redis script counts the window's items up to the caller's own timestamp
# (ZCOUNT window_start now). Two processes race: B stamps its item, A stamps later but its script
# runs first, then B's count stops before A's item and admits one call too many (CI saw 5 grants
# under a limit of 4). An item stamped after ours is in our window too, so we count up to +inf,
# as the library's SQLite and PostgreSQL buckets already do.
_LIBRARY_COUNT = "redis.call('ZCOUNT', bucket, window_start, now)"
_SAFE_COUNT = "redis.call('ZCOUNT', bucket, window_start, '+inf')"


def _redis_put_script() -> str:
    from pyrate_limiter.buckets.redis_bucket import LuaScript

    if _LIBRARY_COUNT not in LuaScript.PUT_ITEM:
        # A pyrate-limiter release changed the script: look at it again rather than run
        # an unpatched (possibly racy) or a wrongly patched one.
        raise RuntimeError("pyrate-limiter's Redis script changed; review connector_core/api/ratelimit.py")
    return LuaScript.PUT_ITEM.replace(_LIBRARY_COUNT, _SAFE_COUNT)


def _redis_bucket_class() -> Any:  # a RedisBucket subclass, built when Redis is configured
    from pyrate_limiter import RedisBucket
    from redis.exceptions import NoScriptError

    class SafeRedisBucket(RedisBucket):
        """RedisBucket running the patched script, and loading it again if Redis forgot it.

        A Redis restart or ``SCRIPT FLUSH`` drops loaded scripts; the library's bucket would then
        fail every call with NOSCRIPT until the daemon restarts.
        """

        def _check_and_insert(self, item: RateItem):
            try:
                return super()._check_and_insert(item)
            except NoScriptError:
                self.script_hash = cast(str, self.redis.script_load(_redis_put_script()))  # a sync client
                return super()._check_and_insert(item)

    return SafeRedisBucket


class _RedisBackend(_Backend):
    def __init__(self, url: str, timeout: float) -> None:
        import redis

        super().__init__(url, timeout)
        self.outage_errors = (redis.exceptions.RedisError, OSError)
        # Timeouts given in the URL win over ours (redis-py applies the URL's options last).
        # The client reconnects by itself once Redis answers again.
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        self._extend = self._redis.register_script(_REDIS_EXTEND)  # reloads itself on NOSCRIPT
        self._bucket_class = _redis_bucket_class()
        # SCRIPT LOAD answers the script's SHA-1: computed here, nothing is sent before the first
        # call, and a Redis that does not know the script yet is taught it on NOSCRIPT.
        self._put_script_hash = hashlib.sha1(_redis_put_script().encode()).hexdigest()
        self._epochs: dict[str, bytes | str | None] = {}

    def make_bucket(self, name: str, rates: list[Rate]) -> AbstractBucket:
        # The constructor, not RedisBucket.init(), so the bucket runs our script instead of loading the library's.
        return self._bucket_class(rates, self._redis, bucket_key=f"{name}:bucket", script_hash=self._put_script_hash)

    def get_cooldown(self, key: str) -> float | None:
        value = self._redis.get(f"{key}:cooldown")
        return None if value is None else float(value)

    def extend_cooldown(self, key: str, until: float) -> None:
        # The key expires with the block (plus a minute), so Redis does not collect dead keys.
        ttl_ms = max(1, int((until - time.time() + 60) * 1000))
        self._extend(keys=[f"{key}:cooldown"], args=[repr(until), ttl_ms])

    def ping(self) -> None:
        self._redis.ping()

    def forgot(self, prefix: str) -> bool:
        # A marker key, set by the first process that finds it missing. Every process remembers
        # the value it saw; a missing or different marker means Redis restarted empty since, and
        # with it every window the processes shared.
        key = f"{prefix}:epoch"
        seen = self._epochs.get(key)
        current = self._redis.get(key)
        if current is None:
            self._redis.set(key, uuid.uuid4().hex, nx=True)
            current = self._redis.get(key)
        self._epochs[key] = current
        return seen is not None and current != seen

    def how_to_fix(self) -> str:
        parts = urlsplit(self.url)
        where = f" -h {parts.hostname} -p {parts.port or 6379}" if parts.hostname else ""
        return f"start Redis or make it reachable from this host (redis-cli{where} ping must answer PONG)"

    def close(self) -> None:
        self._redis.close()


class _PostgresBackend(_Backend):
    def __init__(self, url: str, timeout: float) -> None:
        import psycopg
        from psycopg_pool import ConnectionPool

        super().__init__(url, timeout)
        self.outage_errors = (psycopg.Error, OSError)  # PoolTimeout is a psycopg.OperationalError
        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        # Transactions stay on (no autocommit): PostgresBucket's table lock lives as long as the
        # transaction that the pool commits when the connection is handed back. The pool opens
        # its connections in the background and replaces broken ones by itself.
        self._pool = ConnectionPool(
            conninfo,
            min_size=1,
            max_size=4,
            open=True,
            timeout=timeout,
            kwargs={"connect_timeout": max(2, math.ceil(timeout))},  # libpq's smallest is 2 s
        )
        self._table_ready = False

    def _ready(self) -> None:
        if self._table_ready:
            return
        with self._pool.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('myinvois_rate_cooldown'))")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS myinvois_rate_cooldown "
                "(key TEXT PRIMARY KEY, until DOUBLE PRECISION NOT NULL)"
            )
        self._table_ready = True

    def make_bucket(self, name: str, rates: list[Rate]) -> AbstractBucket:
        from pyrate_limiter import PostgresBucket

        return PostgresBucket(self._pool, name, rates)

    def get_cooldown(self, key: str) -> float | None:
        self._ready()
        with self._pool.connection() as conn:
            row = conn.execute("SELECT until FROM myinvois_rate_cooldown WHERE key = %s", (key,)).fetchone()
        return None if row is None else float(row[0])

    def extend_cooldown(self, key: str, until: float) -> None:
        self._ready()
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO myinvois_rate_cooldown (key, until) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET until = GREATEST(myinvois_rate_cooldown.until, EXCLUDED.until)",
                (key, until),
            )

    def ping(self) -> None:
        with self._pool.connection() as conn:
            conn.execute("SELECT 1").fetchone()

    def how_to_fix(self) -> str:
        parts = urlsplit(self.url)
        where = f" -h {parts.hostname} -p {parts.port or 5432}" if parts.hostname else ""
        return f"start PostgreSQL or make it reachable and accept the configured user (pg_isready{where})"

    def close(self) -> None:
        # PostgresBucket.close() closes the shared pool too; closing twice is harmless.
        if not self._pool.closed:
            self._pool.close()


def _backend_url_problem(url: str) -> str | None:
    """Why a redis:// or postgresql:// backend URL cannot be used, or None; found when the
    configuration is read rather than at the first call. Never quotes the URL (a password)."""
    if url.startswith(("redis://", "rediss://")):
        from urllib.parse import urlsplit

        try:
            parts = urlsplit(url)
            parts.port  # noqa: B018 - raises ValueError on a port that is not a number
        except ValueError:
            return "is not a valid Redis URL (a port that is not a number?); expected e.g. redis://host:6379/0"
        database = parts.path.strip("/")
        if not parts.hostname or (database and not database.isdigit()):
            return "is not a valid Redis URL; expected redis://host:port/N, N the database number, e.g. redis://host:6379/0"
    elif url.startswith(("postgresql://", "postgres://")):
        from sqlalchemy.engine import make_url
        from sqlalchemy.exc import ArgumentError

        try:
            parsed = make_url(url)
        except (ArgumentError, ValueError):
            return "is not a valid PostgreSQL URL; expected e.g. postgresql://user@host/dbname"
        if not parsed.host or not parsed.database:
            return "names no host or database; expected e.g. postgresql://user@host/dbname"
    return None


def _open_backend(url: str, timeout: float = 5.0) -> _Backend:
    if url == "memory":
        return _MemoryBackend(url, timeout)
    if url.startswith("sqlite:///"):
        return _SQLiteBackend(url, timeout)
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _RedisBackend(url, timeout)
    return _PostgresBackend(url, timeout)


class _Buckets:
    """One bucket per ``(client_id, endpoint)``, created on first use and tidied now and then.

    Tidying (deleting expired entries) is done by the acquiring thread rather than by
    pyrate-limiter's background leaker: an exception in that thread ends it for good, so one
    backend outage would leave the tables and keys growing for the rest of the process's life.
    """

    def __init__(self, backend: _Backend, rates_for: Callable[[str], list[Rate]]) -> None:
        self._backend = backend
        self._rates_for = rates_for
        self._buckets: dict[str, tuple[AbstractBucket, threading.Lock]] = {}
        self._tidied_at: dict[str, float] = {}
        self._lock = threading.Lock()

    def _bucket(self, name: str) -> tuple[AbstractBucket, threading.Lock]:
        with self._lock:
            entry = self._buckets.get(name)
            if entry is None:
                # A failure here leaves nothing cached: the next call tries again.
                entry = (self._backend.make_bucket(name, self._rates_for(name)), threading.Lock())
                self._buckets[name] = entry
            return entry

    def take(self, name: str) -> float:
        """Take a slot; 0.0 when taken, else the seconds until one may be free."""
        bucket, lock = self._bucket(name)
        # The bucket remembers its last verdict for waiting(): put and waiting under one lock.
        with lock:
            item = RateItem(name, bucket.now())
            if bucket.put(item):
                self._tidy(name, bucket, item.timestamp)
                return 0.0
            wait_ms = cast(int, bucket.waiting(item))  # our buckets are synchronous
        if wait_ms == -1:
            raise RuntimeError(f"rate limit of bucket {name} can never admit one call; check the settings")
        return max(0, wait_ms) / 1000 + _RETRY_SLACK_S

    def _tidy(self, name: str, bucket: AbstractBucket, now_ms: int) -> None:
        if now_ms / 1000 - self._tidied_at.get(name, 0.0) < _TIDY_EVERY_S:
            return
        self._tidied_at[name] = now_ms / 1000
        try:
            bucket.leak(now_ms)
        except self._backend.outage_errors as exc:
            # The slot is taken; expired entries wait for the next tidy.
            log.debug("could not tidy rate bucket %s: %s", name, type(exc).__name__)

    def count(self, name: str) -> int:
        """Entries the backend holds for ``name`` (expired ones not yet tidied included)."""
        return int(self._bucket(name)[0].count())  # type: ignore[arg-type]

    def close(self) -> None:
        with self._lock:
            buckets = [bucket for bucket, _ in self._buckets.values()]
            self._buckets.clear()
        for bucket in buckets:
            try:
                bucket.close()
            except Exception as exc:
                log.debug("closing rate bucket: %s", exc)


class _LocalGrants:
    """This process's own grants per bucket, in memory: a floor under the shared backend's count.

    A shared backend can forget its window (Redis restarted without persistence, keys flushed)
    and would then grant a whole new window on top of the calls just made: a peak of 63 against
    a limit of 60 followed one Redis restart. A policy therefore never grants beyond a limit
    counting its own grants alone. Other processes' grants it cannot see: for those the backend
    itself must survive restarts (Redis ``appendonly``, see docs/operations.md).
    """

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._grants: dict[str, deque[float]] = {}

    def reserve(self, name: str, rates: list[tuple[int, float]]) -> tuple[float | None, float]:
        """Note a grant now: (its stamp, 0.0); or (None, seconds until one would fit)."""
        with self._lock:
            now = self._clock()
            grants = self._grants.setdefault(name, deque())
            longest = max(interval for _, interval in rates)
            while grants and grants[0] <= now - longest:
                grants.popleft()
            wait = 0.0
            for limit, interval in rates:
                in_window = [stamp for stamp in grants if stamp > now - interval]
                if len(in_window) >= limit:
                    wait = max(wait, in_window[-limit] + interval - now)
            if wait > 0:
                return None, wait
            grants.append(now)
            return now, 0.0

    def confirm(self, name: str, stamp: float) -> None:
        """The backend granted the slot reserved at ``stamp``: count it from now, when it was granted."""
        with self._lock:
            grants = self._grants[name]
            self._remove(grants, stamp)
            grants.append(self._clock())

    def cancel(self, name: str, stamp: float) -> None:
        """The backend refused (or failed) the slot reserved at ``stamp``."""
        with self._lock:
            self._remove(self._grants[name], stamp)

    @staticmethod
    def _remove(grants: deque[float], stamp: float) -> None:
        try:
            grants.remove(stamp)
        except ValueError:  # already trimmed as expired
            pass


class RatePolicy:
    """Waits, before each call, until LHDN's limit and any shared cool-down allow it.

    Thread-safe; one instance per process is enough for every client id. Processes sharing a
    ``backend`` share the limits. Every failure of the backend is raised as
    :class:`.errors.RateBackendUnavailable`; the policy tries the backend again on the next call.
    """

    def __init__(
        self,
        settings: RateLimitSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or RateLimitSettings()
        # Unset outside a connector, which picks a file (see the settings): this process alone.
        self._backend_spec: str = self.settings.backend or "memory"
        self.settings = self.settings.model_copy(update={"backend": self._backend_spec})
        self._clock = clock
        self._sleep = sleep
        self._backend = _open_backend(self._backend_spec, self.settings.backend_timeout_seconds)
        self._window_ms = max(1, int(self.settings.counting_window_seconds() * 1000))
        self._endpoints: dict[str, Endpoint] = {}
        self._buckets = _Buckets(self._backend, self._rates_for)
        self._local = _LocalGrants()
        # Cool-downs this process recorded, kept even when the backend could not store them.
        self._cooldowns: dict[str, float] = {}
        self._lock = threading.Lock()
        self._backend_down = False
        self._quiet_until = 0.0
        self._closed = False

    @property
    def backend_url(self) -> str:
        """The backend's URL as it may be printed (no credentials)."""
        return _url_without_secrets(self._backend_spec)

    def _rates_for(self, name: str) -> list[Rate]:
        endpoint = self._endpoints[name]
        limit = self.settings.limit_for(endpoint)
        assert limit is not None
        rates = [Rate(limit, self._window_ms)]
        spacing = MIN_SPACING_SECONDS.get(endpoint)
        if spacing and self.settings.profile != "off":
            # Stretched like the window (compression and arrival margin), so it keeps its shape.
            spaced = Rate(1, max(1, int(spacing / LHDN_WINDOW_SECONDS * self._window_ms)))
            if validate_rate_list([spaced, *rates]):  # pointless (and refused) when limit is 1
                rates.insert(0, spaced)
        return rates

    def _name(self, client_id: str, endpoint: Endpoint) -> str:
        name = _safe_name(self.settings.key_prefix, client_id, endpoint)
        self._endpoints.setdefault(name, endpoint)
        return name

    def acquire(self, client_id: str, endpoint: Endpoint) -> float:
        """Block until a call of ``endpoint`` for ``client_id`` is allowed; return the seconds waited.

        Raises :class:`.errors.RateBackendUnavailable` when the backend fails: nothing may be sent then.
        """
        started = time.monotonic()
        name = self._name(client_id, endpoint)
        with self._backend_calls(endpoint):
            if self.settings.limit_for(endpoint) is None:
                self._wait_cooldown(name)
            else:
                self._take_slot(name)
        waited = time.monotonic() - started
        if waited > 0.5:
            log.debug("waited %.2f s for a %s slot", waited, endpoint.value)
        return waited

    def _take_slot(self, name: str) -> None:
        local_rates = [(rate.limit, rate.interval / 1000) for rate in self._rates_for(name)]
        self._wait_if_backend_forgot()
        while True:
            # First the cool-down, then the slot: a slot taken while LHDN asked us to wait would
            # be spent right after the wait, together with the fresh ones, doubling the load.
            self._wait_cooldown(name)
            stamp, wait = self._local.reserve(name, local_rates)
            if stamp is None:
                self._sleep(wait)
                continue
            try:
                wait = self._buckets.take(name)
            except BaseException:
                self._local.cancel(name, stamp)
                raise
            if wait > 0:
                self._local.cancel(name, stamp)
                self._sleep(wait)
                continue
            self._local.confirm(name, stamp)
            if self._cooldown_remaining(name) > 0:
                # A 429 was recorded while we took the slot. The slot stays counted (a backend
                # cannot hand it back) but is not used: after the cool-down we queue afresh.
                continue
            return

    def _wait_if_backend_forgot(self) -> None:
        """After the shared backend restarted empty, nobody knows what the other processes sent
        in the window before: grant nothing for one whole window. (Our own grants are still
        counted by the local floor; the other processes' are not.)"""
        if self._backend.forgot(self.settings.key_prefix):
            with self._lock:
                self._quiet_until = max(self._quiet_until, self._clock() + self._window_ms / 1000)
            log.warning(
                "the rate-limit backend %s restarted without its windows; no call for %.0f s so that no window "
                "of LHDN's is exceeded (keep Redis's append-only file on to avoid this pause)",
                self.backend_url,
                self._window_ms / 1000,
            )
        with self._lock:
            remaining = self._quiet_until - self._clock()
        if remaining > 0:
            self._sleep(remaining)

    def _cooldown_until(self, name: str) -> float:
        with self._lock:
            local = self._cooldowns.get(name, 0.0)
        return max(local, self._backend.get_cooldown(name) or 0.0)

    def _cooldown_remaining(self, name: str) -> float:
        return self._cooldown_until(name) - self._clock()

    def _wait_cooldown(self, name: str) -> None:
        while True:
            remaining = self._cooldown_remaining(name)
            if remaining <= 0:
                return
            log.info("LHDN asked us to wait; pausing %.1f s before the next call", remaining)
            self._sleep(remaining)

    def record_retry_after(self, client_id: str, endpoint: Endpoint, seconds: float) -> None:
        """LHDN answered 429 with ``Retry-After: seconds``: every process sharing the backend waits.

        This process waits in any case; should the backend fail to store the cool-down, the
        next :meth:`acquire` reports the backend as unavailable.
        """
        name = self._name(client_id, endpoint)
        until = self._clock() + max(0.0, seconds)
        with self._lock:
            self._cooldowns[name] = max(until, self._cooldowns.get(name, 0.0))
        try:
            with self._backend_calls(endpoint):
                self._backend.extend_cooldown(name, until)
        except RateBackendUnavailable as exc:
            log.warning("the cool-down of %s could not be shared with other processes: %s", endpoint.value, exc)

    def blocked_until(self, client_id: str, endpoint: Endpoint) -> float | None:
        """Epoch seconds until which ``endpoint`` is cooling down, or None."""
        name = self._name(client_id, endpoint)
        with self._backend_calls(endpoint):
            until = self._cooldown_until(name)
        return until if until > self._clock() else None

    def check_backend(self, endpoint: Endpoint | None = None) -> None:
        """Raise :class:`.errors.RateBackendUnavailable` while a backend that failed still does.

        Costs nothing while the backend works (no round trip); after a failure it asks the
        backend once per call, so callers can tell "still down" before doing anything else.
        """
        if not self._backend_down:
            return
        with self._backend_calls(endpoint):
            self._backend.ping()

    def granted_in_backend(self, client_id: str, endpoint: Endpoint) -> int:
        """Entries the shared backend holds for this bucket (for tests and diagnostics)."""
        name = self._name(client_id, endpoint)
        with self._backend_calls(endpoint):
            return self._buckets.count(name)

    @contextmanager
    def _backend_calls(self, endpoint: Endpoint | None) -> Iterator[None]:
        """Turn the driver's errors into RateBackendUnavailable; note when the backend is back."""
        try:
            yield
        except self._backend.outage_errors as exc:
            error = self._unavailable(exc, endpoint)
            if not self._backend_down:
                log.warning("%s", error)
            self._backend_down = True
            raise error from None
        if self._backend_down:
            self._backend_down = False
            log.info("rate-limit backend %s answers again", self.backend_url)

    def _unavailable(self, exc: BaseException, endpoint: Endpoint | None) -> RateBackendUnavailable:
        said = f"{type(exc).__name__}: {exc}".strip()
        for secret in _secrets_in(self._backend_spec):
            said = said.replace(secret, "***")
        what = f" for {endpoint.value}" if endpoint is not None else ""
        return RateBackendUnavailable(
            f"the rate-limit backend {self.backend_url} is unavailable ({said}); nothing was sent to MyInvois{what}. "
            f"Fix: {self._backend.how_to_fix()}, or set rate_limits.backend to one that works. "
            "Sending resumes by itself once the backend answers.",
            endpoint=endpoint,
            backend=self.backend_url,
        )

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._buckets.close()
        self._backend.close()

    def __enter__(self) -> RatePolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
