"""Client-side rate limits, shared by every process that uses the same backend.

LHDN limits each API per client id over a sliding window (a minute), and answers over-eager
clients with 429 — and with throttling of the client id when it keeps happening. So every call
takes a *slot* for ``(client_id, endpoint)`` before it is sent, and gives it back when its
answer (or its failure) is here. Several daemon processes or hosts working for one client id
share the slots through one backend:

* ``memory``: one process only;
* ``sqlite:///path/to/file.db``: processes on one host (``BEGIN IMMEDIATE`` makes count-then-insert
  atomic across processes);
* ``redis://host:port/db``: processes on several hosts (an atomic Lua count-then-insert);
* ``postgresql://...``: processes on several hosts (a transaction-scoped advisory lock per bucket).

**When a call counts.** LHDN counts a call when its request arrives, not when it is answered;
the answer comes later by the server's processing (most of a submission's second). We cannot see
the arrival, only the moment the request was completely written to our socket, so a slot is
stamped with the latest moment the call can have been counted:

* while the call is *in flight*, the slot counts in every window (it is stamped one window
  ahead, so that a process that dies mid-call frees it two windows after the grant at most);
* when the answer or the failure arrives, :meth:`RatePolicy.release` moves the stamp to the
  moment the request was completely sent (``sent_seconds_ago`` before now), plus a guard
  (``arrival_margin_seconds``, 0.25 s per minute) for the request's way to LHDN and for the
  clocks of hosts sharing a backend; never later than the answer plus the guard, since LHDN had
  the request by the time it answered. A call of which we never saw the request leave (a refused
  connection, a failure while sending) is stamped at its failure plus the guard, as late as it
  can have arrived;
* a new slot is granted only while fewer than ``limit`` stamps lie within the last window.

A call counted by LHDN at ``T`` was sent, completely, at ``S >= T - guard`` (the guard covers
its way there); its slot is stamped at ``S + guard >= T``, and a slot granted at
``G >= S + guard + window`` after it is counted at ``T' >= G``, so ``T' - T >= window``: LHDN's
window never holds more than ``limit`` of our calls, however the delays vary. What the rate gives
up per window is the time from a grant to its request's last byte, plus the guard: a few
hundredths of a second plus 0.25 of LHDN's 60 for Submit Documents, about 0.995 of the ceiling.

The waiting loop decides three more things, each *before* a slot is taken:

* a shared *cool-down* per ``(client_id, endpoint)``: when any process receives a 429 with
  ``Retry-After``, it writes "blocked until T" to the backend, and every process waits until T.
  A slot is only taken once the cool-down is over; a slot taken while one appeared is handed
  back unused (it would fire together with the fresh ones and double the load on LHDN's window
  right after the wait);
* a local floor: each policy also keeps its own slots in memory and never exceeds a limit
  counting those, so a backend that forgot its window (Redis restarted without persistence)
  cannot hand out a second full window on top of the calls just made;
* the backend's health: any failure of the backend raises :class:`.errors.RateBackendUnavailable`
  before anything is sent, and the next call simply tries the backend again.

The slot stores are our own, not pyrate-limiter's buckets: those stamp an item once, at the
grant, and cannot hold a slot for a call in flight nor move it, once answered, to when it was sent.
``safety_factor`` (default 1.0) stays for operators who want to leave part of LHDN's figure
unused, e.g. for another tool on the same client id.
"""

from __future__ import annotations

import hashlib
import logging
import math
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal
from urllib.parse import parse_qsl, urlsplit, urlunsplit

from pydantic import BaseModel, ConfigDict, Field, field_validator

if TYPE_CHECKING:
    from filelock import SoftFileLock

from connector_core.config_paths import resolve_sqlite_url

from .endpoints import LHDN_WINDOW_SECONDS, MIN_SPACING_SECONDS, PROFILES, Endpoint
from .errors import RateBackendUnavailable

log = logging.getLogger(__name__)

BACKEND_SCHEMES = ("memory", "sqlite:///", "redis://", "rediss://", "unix://", "postgresql://", "postgres://")

#: Extra sleep after a computed wait for a slot: a retry landing a hair before the stamp leaves
#: the window (timer resolution) would be refused and loop once more. Kept tiny: it is paid
#: once per slot at the window's edge, so it comes straight off the sustained rate.
_RETRY_SLACK_S = 0.002

#: A limit and the window it applies to, in seconds: (100, 60.0) = 100 calls per 60 s.
Rate = tuple[int, float]


class RateLimitSettings(BaseModel):
    """How hard the connector may call each MyInvois API."""

    model_config = ConfigDict(extra="forbid")

    profile: Literal["production", "sandbox", "off"] = Field(
        "production",
        description="LHDN's published production limits; 'sandbox' = our guess (half), 'off' = no client-side limit.",
    )
    # 1.0: a slot is counted in flight until its call's request has left, and a guard after, so
    # the grant-to-arrival delay that 0.97 used to absorb is accounted for; a lower figure only leaves part of LHDN's limit unused.
    safety_factor: float = Field(1.0, gt=0, le=1, description="Fraction of LHDN's limit we allow ourselves.")
    # 0.25 s: a request's last bytes reach Malaysia from most of the world in under 0.15 s, and
    # NTP keeps the hosts sharing a backend within a few hundredths of a second of each other.
    arrival_margin_seconds: float = Field(
        0.25,
        ge=0,
        description="Guard, in seconds per 60 s of window, added to the moment a call's request was completely sent "
        "before its slot may leave our window: covers the request's way to LHDN and the clock difference between "
        "hosts sharing a backend. Scaled with window_seconds.",
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
        """Length of our window: LHDN's (compressed alike in tests and benchmarks)."""
        return self.window_seconds

    def guard_seconds(self) -> float:
        """What is added to the moment a call's request was sent before its slot may leave the window."""
        return self.window_seconds * self.arrival_margin_seconds / LHDN_WINDOW_SECONDS


@dataclass(frozen=True)
class Slot:
    """One call's place in a window, from its grant until :meth:`RatePolicy.release`.

    ``bucket`` is None where no limit applies (nothing to hand back).
    """

    endpoint: Endpoint
    bucket: str | None
    id: str
    waited: float


def _safe_name(prefix: str, client_id: str, endpoint: Endpoint) -> str:
    # Client ids may hold any character; bucket names and keys must not. The digest keeps one
    # bucket per client id without putting the id itself in a key or a row.
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


def _wait_for(blocking_stamp: float, interval: float, now: float) -> float:
    """Seconds until the slot stamped ``blocking_stamp`` leaves a window of ``interval``.

    A slot still in flight (stamped ahead of now) is released at now at the earliest, and then
    stays in the window for a whole interval: waiting less would only ask again for nothing.
    """
    return min(blocking_stamp, now) + interval - now


def _take_in_sql(
    conn: Any, mark: str, bucket: str, slot: str, now: float, in_flight_until: float, rates: list[Rate]
) -> float:
    """The slot-table take shared by SQLite and PostgreSQL, inside the caller's write transaction
    (which serialises takers of the bucket); ``mark`` is the driver's placeholder."""
    longest = max(interval for _, interval in rates)
    conn.execute(f"DELETE FROM {_SQL_SLOT_TABLE} WHERE bucket = {mark} AND stamp <= {mark}", (bucket, now - longest))
    wait = 0.0
    for limit, interval in rates:
        row = conn.execute(
            f"SELECT stamp FROM {_SQL_SLOT_TABLE} WHERE bucket = {mark} AND stamp > {mark} "
            f"ORDER BY stamp DESC LIMIT 1 OFFSET {mark}",
            (bucket, now - interval, limit - 1),
        ).fetchone()
        if row is not None:
            wait = max(wait, _wait_for(float(row[0]), interval, now))
    if wait == 0:
        conn.execute(
            f"INSERT INTO {_SQL_SLOT_TABLE} (slot, bucket, stamp) VALUES ({mark}, {mark}, {mark})",
            (slot, bucket, in_flight_until),
        )
    return wait


class _Backend:
    """Where slots and cool-downs live. Times are epoch seconds (shared between hosts).

    Every slot store makes the same decision, atomically: a slot stamped ``in_flight_until`` is
    added unless, for some rate, ``limit`` slots already have a stamp within ``interval`` of
    ``now``; then it answers the seconds until the blocking one leaves (see :func:`_wait_for`).
    Stamps later than ``now`` count too: those are calls in flight, or granted by a process
    whose clock is a little ahead.

    Nothing here connects at construction: a backend that is down when the daemon starts is
    reported by the first call, like one that goes down later, and picked up when it comes back.
    """

    #: The driver's errors that mean "the backend cannot answer now".
    outage_errors: tuple[type[BaseException], ...] = ()

    def __init__(self, url: str, timeout: float) -> None:
        self.url = url
        self.timeout = timeout

    def take(self, bucket: str, slot: str, now: float, in_flight_until: float, rates: list[Rate]) -> float:
        """Add the slot: 0.0; or, when a window is full, the seconds until one may be free."""
        raise NotImplementedError

    def settle(self, bucket: str, slot: str, stamp: float) -> None:
        """Move the slot's stamp to ``stamp`` (when the call's request was sent, plus the guard)."""
        raise NotImplementedError

    def cancel(self, bucket: str, slot: str) -> None:
        """Remove a slot whose call was never sent."""
        raise NotImplementedError

    def count(self, bucket: str) -> int:
        """Slots the backend holds for ``bucket`` (expired ones not yet tidied included)."""
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
    """One process's slots; also each policy's local floor under a shared backend."""

    def __init__(self, url: str = "memory", timeout: float = 5.0) -> None:
        super().__init__(url, timeout)
        self._lock = threading.Lock()
        self._slots: dict[str, dict[str, float]] = {}
        self._cooldowns: dict[str, float] = {}

    def take(self, bucket: str, slot: str, now: float, in_flight_until: float, rates: list[Rate]) -> float:
        longest = max(interval for _, interval in rates)
        with self._lock:
            slots = self._slots.setdefault(bucket, {})
            for old in [name for name, stamp in slots.items() if stamp <= now - longest]:
                del slots[old]
            wait = 0.0
            for limit, interval in rates:
                in_window = sorted((s for s in slots.values() if s > now - interval), reverse=True)
                if len(in_window) >= limit:
                    wait = max(wait, _wait_for(in_window[limit - 1], interval, now))
            if wait > 0:
                return wait
            slots[slot] = in_flight_until
            return 0.0

    def settle(self, bucket: str, slot: str, stamp: float) -> None:
        with self._lock:
            slots = self._slots.get(bucket, {})
            if slot in slots:
                slots[slot] = stamp

    def cancel(self, bucket: str, slot: str) -> None:
        with self._lock:
            self._slots.get(bucket, {}).pop(slot, None)

    def count(self, bucket: str) -> int:
        with self._lock:
            return len(self._slots.get(bucket, {}))

    def get_cooldown(self, key: str) -> float | None:
        with self._lock:
            return self._cooldowns.get(key)

    def extend_cooldown(self, key: str, until: float) -> None:
        with self._lock:
            self._cooldowns[key] = max(until, self._cooldowns.get(key, 0.0))


_SQL_SLOT_TABLE = "myinvois_rate_slot"


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
                # Cool-down writes take this file lock, so processes extending one cool-down
                # never fight over SQLite's own locks; slots use SQLite's (BEGIN IMMEDIATE).
                file_lock = FileLock(self.path + ".lock", timeout=self.timeout)
                conn = sqlite3.connect(self.path, timeout=self.timeout, check_same_thread=False, isolation_level=None)
                try:
                    with file_lock:
                        conn.execute("PRAGMA journal_mode=WAL")
                        conn.execute("PRAGMA synchronous=NORMAL")
                        conn.execute(
                            "CREATE TABLE IF NOT EXISTS myinvois_rate_cooldown "
                            "(key TEXT PRIMARY KEY, until REAL NOT NULL)"
                        )
                        conn.execute(
                            f"CREATE TABLE IF NOT EXISTS {_SQL_SLOT_TABLE} "
                            "(slot TEXT PRIMARY KEY, bucket TEXT NOT NULL, stamp REAL NOT NULL)"
                        )
                        conn.execute(
                            f"CREATE INDEX IF NOT EXISTS {_SQL_SLOT_TABLE}_bucket_stamp ON {_SQL_SLOT_TABLE} (bucket, stamp)"
                        )
                except BaseException:
                    conn.close()
                    raise
                self._conn, self._file_lock = conn, file_lock
            return self._conn

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """One write transaction holding SQLite's write lock from its first statement: what it
        counts cannot change before it inserts, in this process or any other."""
        conn = self._ready()
        with self._thread_lock:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def take(self, bucket: str, slot: str, now: float, in_flight_until: float, rates: list[Rate]) -> float:
        with self._write() as conn:
            return _take_in_sql(conn, "?", bucket, slot, now, in_flight_until, rates)

    def settle(self, bucket: str, slot: str, stamp: float) -> None:
        with self._write() as conn:
            conn.execute(f"UPDATE {_SQL_SLOT_TABLE} SET stamp = ? WHERE slot = ?", (stamp, slot))

    def cancel(self, bucket: str, slot: str) -> None:
        with self._write() as conn:
            conn.execute(f"DELETE FROM {_SQL_SLOT_TABLE} WHERE slot = ?", (slot,))

    def count(self, bucket: str) -> int:
        conn = self._ready()
        with self._thread_lock:
            row = conn.execute(f"SELECT count(*) FROM {_SQL_SLOT_TABLE} WHERE bucket = ?", (bucket,)).fetchone()
        return int(row[0])

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


# One atomic count-then-insert per take. Every window counts the bucket's stamps above its start
# *up to +inf*: a slot stamped later than ours (a call in flight, or a host whose clock is ahead)
# is in our window too. Numbers travel as strings: Lua's own would round epoch seconds.
_REDIS_TAKE = """
local key = KEYS[1]
local now = tonumber(ARGV[1])
redis.call('ZREMRANGEBYSCORE', key, '-inf', ARGV[4])
local wait = 0
for i = 0, tonumber(ARGV[6]) - 1 do
    local limit = tonumber(ARGV[7 + 3 * i])
    local interval = tonumber(ARGV[8 + 3 * i])
    local blocking = redis.call('ZREVRANGEBYSCORE', key, '+inf', '(' .. ARGV[9 + 3 * i], 'WITHSCORES', 'LIMIT', limit - 1, 1)
    if blocking[2] then
        local stamp = math.min(tonumber(blocking[2]), now)
        wait = math.max(wait, stamp + interval - now)
    end
end
if wait > 0 then
    return tostring(wait)
end
redis.call('ZADD', key, ARGV[3], ARGV[2])
redis.call('PEXPIRE', key, ARGV[5])
return '0'
"""

_REDIS_EXTEND = """
local current = tonumber(redis.call('GET', KEYS[1]) or '0')
if tonumber(ARGV[1]) > current then
    redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 1
"""


class _RedisBackend(_Backend):
    def __init__(self, url: str, timeout: float) -> None:
        import redis

        super().__init__(url, timeout)
        self.outage_errors = (redis.exceptions.RedisError, OSError)
        # Timeouts given in the URL win over ours (redis-py applies the URL's options last).
        # The client reconnects by itself once Redis answers again.
        self._redis = redis.Redis.from_url(url, socket_timeout=timeout, socket_connect_timeout=timeout)
        # Scripts reload themselves on NOSCRIPT (a Redis restart or SCRIPT FLUSH forgets them),
        # and nothing is sent before the first call.
        self._take = self._redis.register_script(_REDIS_TAKE)
        self._extend = self._redis.register_script(_REDIS_EXTEND)
        self._epochs: dict[str, bytes | str | None] = {}

    def take(self, bucket: str, slot: str, now: float, in_flight_until: float, rates: list[Rate]) -> float:
        longest = max(interval for _, interval in rates)
        # The key outlives its latest possible stamp by a window, so Redis drops idle buckets.
        ttl_ms = max(1, math.ceil((in_flight_until - now + 2 * longest) * 1000))
        args: list[Any] = [repr(now), slot, repr(in_flight_until), repr(now - longest), ttl_ms, len(rates)]
        for limit, interval in rates:
            args += [limit, repr(interval), repr(now - interval)]
        return float(self._take(keys=[f"{bucket}:slots"], args=args))

    def settle(self, bucket: str, slot: str, stamp: float) -> None:
        # XX: only a slot Redis still holds (a restarted Redis lost it; the local floor has it).
        self._redis.zadd(f"{bucket}:slots", {slot: stamp}, xx=True)

    def cancel(self, bucket: str, slot: str) -> None:
        self._redis.zrem(f"{bucket}:slots", slot)

    def count(self, bucket: str) -> int:
        return int(self._redis.zcard(f"{bucket}:slots"))

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
        # Transactions stay on (no autocommit): a take's advisory lock lives as long as the
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
        self._tables_ready = False

    def _ready(self) -> None:
        if self._tables_ready:
            return
        with self._pool.connection() as conn:
            # CREATE ... IF NOT EXISTS still races on the catalog between processes.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext('myinvois_rate_cooldown'))")
            conn.execute(
                "CREATE TABLE IF NOT EXISTS myinvois_rate_cooldown "
                "(key TEXT PRIMARY KEY, until DOUBLE PRECISION NOT NULL)"
            )
            conn.execute(
                f"CREATE TABLE IF NOT EXISTS {_SQL_SLOT_TABLE} "
                "(slot TEXT PRIMARY KEY, bucket TEXT NOT NULL, stamp DOUBLE PRECISION NOT NULL)"
            )
            conn.execute(
                f"CREATE INDEX IF NOT EXISTS {_SQL_SLOT_TABLE}_bucket_stamp ON {_SQL_SLOT_TABLE} (bucket, stamp)"
            )
        self._tables_ready = True

    def take(self, bucket: str, slot: str, now: float, in_flight_until: float, rates: list[Rate]) -> float:
        self._ready()
        with self._pool.connection() as conn:
            # One taker per bucket at a time, in every process and host, until the commit.
            conn.execute("SELECT pg_advisory_xact_lock(hashtext(%s))", (bucket,))
            return _take_in_sql(conn, "%s", bucket, slot, now, in_flight_until, rates)

    def settle(self, bucket: str, slot: str, stamp: float) -> None:
        self._ready()
        with self._pool.connection() as conn:
            conn.execute(f"UPDATE {_SQL_SLOT_TABLE} SET stamp = %s WHERE slot = %s", (stamp, slot))

    def cancel(self, bucket: str, slot: str) -> None:
        self._ready()
        with self._pool.connection() as conn:
            conn.execute(f"DELETE FROM {_SQL_SLOT_TABLE} WHERE slot = %s", (slot,))

    def count(self, bucket: str) -> int:
        self._ready()
        with self._pool.connection() as conn:
            row = conn.execute(f"SELECT count(*) FROM {_SQL_SLOT_TABLE} WHERE bucket = %s", (bucket,)).fetchone()
        return int(row[0]) if row else 0

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


class RatePolicy:
    """Waits, before each call, until LHDN's limit and any shared cool-down allow it.

    A call takes a slot with :meth:`take` (or the :meth:`slot` context) before it is sent, and
    hands it back with :meth:`release` as soon as its answer or its failure is here.

    Thread-safe; one instance per process is enough for every client id. Processes sharing a
    ``backend`` share the limits. Every failure of the backend while taking a slot is raised as
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
        self._window = self.settings.counting_window_seconds()
        self._guard = self.settings.guard_seconds()
        self._endpoints: dict[str, Endpoint] = {}
        # This process's own slots: a floor under a shared backend that forgot its window. A
        # backend cannot forget what only this process knows; other processes' slots it cannot
        # see: for those the backend itself must survive restarts (Redis ``appendonly``).
        self._local = _MemoryBackend()
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
        rates: list[Rate] = [(limit, self._window)]
        spacing = MIN_SPACING_SECONDS.get(endpoint)
        if spacing and limit > 1 and self.settings.profile != "off":
            # Compressed like the window, so it keeps its shape (pointless when limit is 1).
            rates.insert(0, (1, spacing / LHDN_WINDOW_SECONDS * self._window))
        return rates

    def _name(self, client_id: str, endpoint: Endpoint) -> str:
        name = _safe_name(self.settings.key_prefix, client_id, endpoint)
        self._endpoints.setdefault(name, endpoint)
        return name

    def take(self, client_id: str, endpoint: Endpoint) -> Slot:
        """Block until a call of ``endpoint`` for ``client_id`` is allowed; the slot it may use.

        The slot counts as in flight until :meth:`release`. Raises
        :class:`.errors.RateBackendUnavailable` when the backend fails: nothing may be sent then.
        """
        started = time.monotonic()
        name = self._name(client_id, endpoint)
        slot_id = uuid.uuid4().hex
        with self._backend_calls(endpoint):
            if self.settings.limit_for(endpoint) is None:
                self._wait_cooldown(name)
                bucket = None
            else:
                self._take_slot(name, slot_id)
                bucket = name
        waited = time.monotonic() - started
        if waited > 0.5:
            log.debug("waited %.2f s for a %s slot", waited, endpoint.value)
        return Slot(endpoint, bucket, slot_id, waited)

    def release(self, slot: Slot, *, sent_seconds_ago: float | None = None) -> None:
        """The slot's call is answered (or failed): count it from when LHDN can have counted it.

        ``sent_seconds_ago``: how long ago the request's last byte was written to the socket;
        None when that was not seen (the call failed before, or while, sending), and then the
        call is counted from now. Either way plus the guard. Never raises: the call is made, and
        its answer matters more. Should the backend fail here, the slot stays stamped as in
        flight, which only holds it a window longer.
        """
        if slot.bucket is None:
            return
        now = self._clock()
        # Never later than now: LHDN had the request by the time its answer (or failure) is here.
        sent = now if sent_seconds_ago is None else now - max(0.0, sent_seconds_ago)
        stamp = sent + self._guard
        self._local.settle(slot.bucket, slot.id, stamp)
        try:
            with self._backend_calls(slot.endpoint):
                self._backend.settle(slot.bucket, slot.id, stamp)
        except RateBackendUnavailable as exc:
            log.debug("the %s slot stays counted as in flight: %s", slot.endpoint.value, exc)

    @contextmanager
    def slot(self, client_id: str, endpoint: Endpoint) -> Iterator[Slot]:
        """``with policy.slot(...)``: take a slot, make the call inside, release it on the way out."""
        taken = self.take(client_id, endpoint)
        try:
            yield taken
        finally:
            self.release(taken)

    def acquire(self, client_id: str, endpoint: Endpoint) -> float:
        """Take and release a slot at once, for a call answered as soon as it is sent; the seconds waited."""
        with self.slot(client_id, endpoint) as taken:
            return taken.waited

    def _take_slot(self, name: str, slot_id: str) -> None:
        rates = self._rates_for(name)
        self._wait_if_backend_forgot()
        while True:
            # First the cool-down, then the slot: a slot taken while LHDN asked us to wait would
            # be spent right after the wait, together with the fresh ones, doubling the load.
            self._wait_cooldown(name)
            now = self._clock()
            # Until released, the slot counts in every window: stamped a window ahead, it also
            # frees itself should this process die before the answer.
            in_flight_until = now + self._window
            wait = self._local.take(name, slot_id, now, in_flight_until, rates)
            if wait > 0:
                self._sleep(wait + _RETRY_SLACK_S)
                continue
            try:
                wait = self._backend.take(name, slot_id, now, in_flight_until, rates)
            except BaseException:
                self._local.cancel(name, slot_id)
                raise
            if wait > 0:
                self._local.cancel(name, slot_id)
                self._sleep(wait + _RETRY_SLACK_S)
                continue
            if self._cooldown_remaining(name) > 0:
                # A 429 was recorded while we took the slot. It is handed back unused: after the
                # cool-down we queue afresh rather than fire with the fresh ones.
                self._local.cancel(name, slot_id)
                self._backend.cancel(name, slot_id)
                continue
            return

    def _wait_if_backend_forgot(self) -> None:
        """After the shared backend restarted empty, nobody knows what the other processes sent
        in the window before: grant nothing for two whole windows and the guard. (Our own slots
        are still counted by the local floor; the other processes' are not.) One window is not
        enough: a call another process was granted just before the restart may still leave up to
        a window later (what an in-flight slot's stamp allows for, see ``take``), and arrive up
        to the guard after that; under load, two daemons sharing a Redis that forgot put 25
        calls into a window of 20 with a pause of one window."""
        if self._backend.forgot(self.settings.key_prefix):
            with self._lock:
                self._quiet_until = max(self._quiet_until, self._clock() + 2 * self._window + self._guard)
            log.warning(
                "the rate-limit backend %s restarted without its windows; no call for %.0f s so that no window "
                "of LHDN's is exceeded (keep Redis's append-only file on to avoid this pause)",
                self.backend_url,
                2 * self._window + self._guard,
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
        """Slots the shared backend holds for this bucket (for tests and diagnostics)."""
        name = self._name(client_id, endpoint)
        with self._backend_calls(endpoint):
            return self._backend.count(name)

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
        self._backend.close()

    def __enter__(self) -> RatePolicy:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
