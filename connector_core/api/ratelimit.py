"""Client-side rate limits, shared by every process that uses the same backend.

LHDN limits each API per client id and per minute, and answers over-eager clients with 429 — and
with throttling of the client id when it keeps happening. So before every call the client takes
a slot for ``(client_id, endpoint)`` from a sliding-window limiter (pyrate-limiter 4: we reuse
its tested buckets rather than hand-writing a limiter), blocking until one is free. Several
daemon processes or hosts working for one client id share the limiter through the same backend:

* ``memory``: one process only;
* ``sqlite:///path/to/file.db``: processes on one host (the bucket table is guarded by a file
  lock next to the database, ``<file>.lock``, so count-then-insert is atomic across processes);
* ``redis://host:port/db``: processes on several hosts (an atomic Lua check-and-insert);
* ``postgresql://...``: processes on several hosts (the bucket table is locked per insert).

On top of the limiter there is a shared *cool-down* per ``(client_id, endpoint)``: when any
process receives a 429 with ``Retry-After``, it writes "blocked until T" to the same backend, and
every process waits until T before its next call of that endpoint. The limiter alone cannot know
that LHDN's window disagrees with ours (clock skew, another tool using the same client id).

We stay under LHDN's figure by a ``safety_factor`` (default 0.9), because our window and LHDN's
do not start at the same instant.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator
from pyrate_limiter import AbstractBucket, BucketFactory, InMemoryBucket, Limiter, Rate, RateItem, validate_rate_list

from .endpoints import MIN_SPACING_SECONDS, PROFILES, Endpoint

log = logging.getLogger(__name__)

BACKEND_SCHEMES = ("memory", "sqlite:///", "redis://", "rediss://", "unix://", "postgresql://", "postgres://")


class RateLimitSettings(BaseModel):
    """How hard the connector may call each MyInvois API."""

    model_config = ConfigDict(extra="forbid")

    profile: Literal["production", "sandbox", "off"] = Field(
        "production",
        description="LHDN's published production limits; 'sandbox' = our guess (half), 'off' = no client-side limit.",
    )
    # 0.97: three requests of margin per 100 absorb arrival-time jitter against LHDN's own window,
    # while keeping the 95 %-of-ceiling throughput reachable (a stray 429 is still honoured).
    safety_factor: float = Field(0.97, gt=0, le=1, description="Fraction of LHDN's limit we allow ourselves.")
    window_seconds: float = Field(
        60.0, gt=0, description="Length of the limit window. LHDN's is 60 s; benchmarks compress it."
    )
    overrides: dict[Endpoint, int] = Field(
        default_factory=dict,
        description="Per-window limit for some endpoints, replacing the profile's (safety factor still applies).",
    )
    backend: str = Field("memory", description="memory | sqlite:///path | redis://... | postgresql://...")
    key_prefix: str = Field("myinvois", description="Prefix of the tables / keys in a shared backend.")

    @field_validator("backend")
    @classmethod
    def _known_backend(cls, value: str) -> str:
        value = value.strip()
        normalized = value.replace("postgresql+psycopg://", "postgresql://")
        if not normalized.startswith(BACKEND_SCHEMES):
            raise ValueError(
                f"rate limit backend '{value.split('://')[0]}' is not supported; use memory, "
                "sqlite:///path, redis://host:port/db or postgresql://user@host/db"
            )
        return value

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


def _safe_name(prefix: str, client_id: str, endpoint: Endpoint) -> str:
    # Client ids may hold any character; table names and keys must not. The digest keeps one
    # bucket per client id without putting the id itself in a SQL identifier.
    digest = hashlib.sha256(client_id.encode()).hexdigest()[:12]
    return f"{prefix}_{endpoint.value}_{digest}".lower()


class _Backend:
    """Where buckets and cool-downs live. Times in cool-downs are epoch seconds (shared between hosts)."""

    def make_bucket(self, name: str, rates: list[Rate]) -> AbstractBucket:
        raise NotImplementedError

    def get_cooldown(self, key: str) -> float | None:
        raise NotImplementedError

    def extend_cooldown(self, key: str, until: float) -> None:
        """Record "blocked until ``until``", never shortening a longer block already recorded."""
        raise NotImplementedError

    def close(self) -> None:
        pass


class _MemoryBackend(_Backend):
    def __init__(self) -> None:
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
    def __init__(self, path: str) -> None:
        from filelock import FileLock
        from pyrate_limiter import SQLiteBucket

        self._bucket_class = SQLiteBucket
        self.path = str(Path(path).expanduser())
        Path(self.path).parent.mkdir(parents=True, exist_ok=True)
        # The same lock file pyrate-limiter's SQLiteBucket uses, so cool-down writes and bucket
        # writes never fight over SQLite's own locks.
        self._file_lock = FileLock(self.path + ".lock")
        self._thread_lock = threading.Lock()
        self._conn = sqlite3.connect(self.path, timeout=30, check_same_thread=False, isolation_level=None)
        with self._thread_lock, self._file_lock:
            self._conn.execute("PRAGMA journal_mode=WAL")
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS myinvois_rate_cooldown (key TEXT PRIMARY KEY, until REAL NOT NULL)"
            )

    def make_bucket(self, name: str, rates: list[Rate]) -> AbstractBucket:
        return self._bucket_class.init_from_file(rates, table=name, db_path=self.path, use_file_lock=True)

    def get_cooldown(self, key: str) -> float | None:
        with self._thread_lock:
            row = self._conn.execute("SELECT until FROM myinvois_rate_cooldown WHERE key = ?", (key,)).fetchone()
        return None if row is None else float(row[0])

    def extend_cooldown(self, key: str, until: float) -> None:
        with self._thread_lock, self._file_lock:
            self._conn.execute(
                "INSERT INTO myinvois_rate_cooldown (key, until) VALUES (?, ?) "
                "ON CONFLICT(key) DO UPDATE SET until = max(until, excluded.until)",
                (key, until),
            )

    def close(self) -> None:
        with self._thread_lock:
            self._conn.close()


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


def _redis_bucket_class() -> type[AbstractBucket]:
    from pyrate_limiter import RedisBucket
    from redis.exceptions import NoScriptError

    class SafeRedisBucket(RedisBucket):
        """RedisBucket running the patched script, and loading it again if Redis forgot it.

        A Redis restart or ``SCRIPT FLUSH`` drops loaded scripts; the library's bucket would then
        fail every call with NOSCRIPT until the daemon restarts.
        """

        def _check_and_insert(self, item: RateItem):  # type: ignore[no-untyped-def]
            try:
                return super()._check_and_insert(item)
            except NoScriptError:
                self.script_hash = self.redis.script_load(_redis_put_script())
                return super()._check_and_insert(item)

    return SafeRedisBucket


class _RedisBackend(_Backend):
    def __init__(self, url: str) -> None:
        import redis

        self._redis = redis.Redis.from_url(url)
        self._extend = self._redis.register_script(_REDIS_EXTEND)
        self._bucket_class = _redis_bucket_class()
        self._put_script_hash = self._redis.script_load(_redis_put_script())

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

    def close(self) -> None:
        self._redis.close()


class _PostgresBackend(_Backend):
    def __init__(self, url: str) -> None:
        from psycopg_pool import ConnectionPool

        conninfo = url.replace("postgresql+psycopg://", "postgresql://")
        # Transactions stay on (no autocommit): PostgresBucket's table lock lives as long as the
        # transaction that the pool commits when the connection is handed back.
        self._pool = ConnectionPool(conninfo, min_size=1, max_size=4, open=True)
        with self._pool.connection() as conn:
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('myinvois_rate_cooldown'))")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS myinvois_rate_cooldown "
                "(key TEXT PRIMARY KEY, until DOUBLE PRECISION NOT NULL)"
            )

    def make_bucket(self, name: str, rates: list[Rate]) -> AbstractBucket:
        from pyrate_limiter import PostgresBucket

        return PostgresBucket(self._pool, name, rates)

    def get_cooldown(self, key: str) -> float | None:
        with self._pool.connection() as conn:
            row = conn.execute("SELECT until FROM myinvois_rate_cooldown WHERE key = %s", (key,)).fetchone()
        return None if row is None else float(row[0])

    def extend_cooldown(self, key: str, until: float) -> None:
        with self._pool.connection() as conn:
            conn.execute(
                "INSERT INTO myinvois_rate_cooldown (key, until) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET until = GREATEST(myinvois_rate_cooldown.until, EXCLUDED.until)",
                (key, until),
            )

    def close(self) -> None:
        # PostgresBucket.close() closes the shared pool too; closing twice is harmless.
        if not self._pool.closed:
            self._pool.close()


def _open_backend(url: str) -> _Backend:
    if url == "memory":
        return _MemoryBackend()
    if url.startswith("sqlite:///"):
        # sqlite:///relative.db and sqlite:////absolute/path.db, as in SQLAlchemy URLs.
        return _SQLiteBackend(url[len("sqlite:///") :])
    if url.startswith(("redis://", "rediss://", "unix://")):
        return _RedisBackend(url)
    return _PostgresBackend(url)


class _KeyedBucketFactory(BucketFactory):
    """One bucket per ``(client_id, endpoint)``, created on first use, leaked by a single thread."""

    def __init__(self, backend: _Backend, rates_for: Callable[[str], list[Rate]], leak_interval_ms: int) -> None:
        self._backend = backend
        self._rates_for = rates_for
        self._buckets: dict[str, AbstractBucket] = {}
        self._lock = threading.Lock()
        self.leak_interval = leak_interval_ms

    def bucket_for(self, name: str) -> AbstractBucket:
        with self._lock:
            bucket = self._buckets.get(name)
            if bucket is None:
                bucket = self._backend.make_bucket(name, self._rates_for(name))
                self._buckets[name] = bucket
                self.schedule_leak(bucket)
            return bucket

    def wrap_item(self, name: str, weight: int = 1) -> RateItem:
        # Each backend's clock (wall clock; PostgreSQL's own clock) so items written by several
        # processes are comparable.
        return RateItem(name, self.bucket_for(name).now(), weight=weight)

    def get(self, item: RateItem) -> AbstractBucket:
        return self.bucket_for(item.name)

    def owned_buckets(self) -> list[AbstractBucket]:
        with self._lock:
            return list(self._buckets.values())


class RatePolicy:
    """Waits, before each call, until LHDN's limit and any shared cool-down allow it.

    Thread-safe; one instance per process is enough for every client id. Processes sharing a
    ``backend`` share the limits.
    """

    def __init__(
        self,
        settings: RateLimitSettings | None = None,
        *,
        clock: Callable[[], float] = time.time,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.settings = settings or RateLimitSettings()
        self._clock = clock
        self._sleep = sleep
        self._backend = _open_backend(self.settings.backend)
        self._endpoints: dict[str, Endpoint] = {}
        window_ms = max(1, int(self.settings.window_seconds * 1000))
        self._window_ms = window_ms
        self._factory = _KeyedBucketFactory(
            self._backend, self._rates_for, leak_interval_ms=max(1000, min(10_000, window_ms))
        )
        self._limiter = Limiter(self._factory)
        self._closed = False

    def _rates_for(self, name: str) -> list[Rate]:
        endpoint = self._endpoints[name]
        limit = self.settings.limit_for(endpoint)
        assert limit is not None
        rates = [Rate(limit, self._window_ms)]
        spacing = MIN_SPACING_SECONDS.get(endpoint)
        if spacing and self.settings.profile != "off":
            # Scaled like the window, so a compressed benchmark keeps the same shape.
            spaced = Rate(1, max(1, int(spacing * 1000 * self._window_ms / 60_000)))
            if validate_rate_list([spaced, *rates]):  # pointless (and refused) when limit is 1
                rates.insert(0, spaced)
        return rates

    def _name(self, client_id: str, endpoint: Endpoint) -> str:
        name = _safe_name(self.settings.key_prefix, client_id, endpoint)
        self._endpoints.setdefault(name, endpoint)
        return name

    def acquire(self, client_id: str, endpoint: Endpoint) -> float:
        """Block until a call of ``endpoint`` for ``client_id`` is allowed; return the seconds waited."""
        started = time.monotonic()
        name = self._name(client_id, endpoint)
        self._wait_cooldown(name)
        if self.settings.limit_for(endpoint) is not None:
            if not self._limiter.try_acquire(name, blocking=True):
                raise RuntimeError(f"rate limit of {endpoint.value} can never admit one call; check the settings")
            # A 429 seen by another process while we queued for the slot still applies.
            self._wait_cooldown(name)
        waited = time.monotonic() - started
        if waited > 0.5:
            log.debug("waited %.2f s for a %s slot", waited, endpoint.value)
        return waited

    def _wait_cooldown(self, name: str) -> None:
        while True:
            until = self._backend.get_cooldown(name)
            remaining = 0.0 if until is None else until - self._clock()
            if remaining <= 0:
                return
            log.info("LHDN asked us to wait; pausing %.1f s before the next call", remaining)
            self._sleep(remaining)

    def record_retry_after(self, client_id: str, endpoint: Endpoint, seconds: float) -> None:
        """LHDN answered 429 with ``Retry-After: seconds``: every process sharing the backend waits."""
        name = self._name(client_id, endpoint)
        self._backend.extend_cooldown(name, self._clock() + max(0.0, seconds))

    def blocked_until(self, client_id: str, endpoint: Endpoint) -> float | None:
        """Epoch seconds until which ``endpoint`` is cooling down, or None."""
        until = self._backend.get_cooldown(self._name(client_id, endpoint))
        return until if until is not None and until > self._clock() else None

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        self._limiter.close()
        self._backend.close()

    def __enter__(self) -> "RatePolicy":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
