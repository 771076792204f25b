"""Fixtures shared by the whole suite: real services on loopback, and the official samples.

A test that needs PostgreSQL, MariaDB or Redis skips with the reason when the service is not
there, unless MYINVOIS_REQUIRE_SERVICES=1 (as in CI), where a missing service fails the test.
Each test session gets databases of its own, dropped at the end, so runs never see each
other's rows.
"""

from __future__ import annotations

import json
import os
import socket
import uuid
from pathlib import Path

import pytest

FIXTURES = Path(__file__).parent / "fixtures"
SAMPLES = FIXTURES / "samples"

REQUIRE_SERVICES = os.environ.get("MYINVOIS_REQUIRE_SERVICES") == "1"

POSTGRES_ADMIN_URL = os.environ.get("MYINVOIS_TEST_POSTGRES", "postgresql+psycopg://postgres@127.0.0.1:5432/postgres")
MARIADB_ADMIN_URL = os.environ.get("MYINVOIS_TEST_MARIADB", "mysql+pymysql://root@127.0.0.1:3306/")
REDIS_URL = os.environ.get("MYINVOIS_TEST_REDIS", "redis://127.0.0.1:6379/0")

_RESTART_HINT = {
    "PostgreSQL": "pg_ctlcluster --skip-systemctl-redirect $(ls /etc/postgresql) main start",
    "MariaDB": "start-stop-daemon --start --oknodo --background --exec /usr/sbin/mariadbd",
    "Redis": "redis-server --daemonize yes --bind 127.0.0.1 --port 6379 --save '' --appendonly no",
}


#: Tests that start several processes (daemons, a simulator server, redis-servers) and load
#: both cores by themselves. They form one unit of work for pytest-xdist, so they run one after
#: another on one worker, never two at once, while the other worker takes the rest of the suite.
HEAVY = ("tests/faults/", "tests/test_benchmark_smoke.py")
#: Modules whose tests share one costly fixture (a wheel build, a pip install, a demo run),
#: scoped to the session: each such module is one unit too, so the fixture is made once.
SHARED_FIXTURE = ("tests/test_packaging.py", "tests/test_out_of_tree_plugin.py", "tests/commands/")


def xdist_unit(nodeid: str) -> str:
    """The unit of work a test belongs to: ``heavy``, a shared-fixture module, or itself."""
    if nodeid.startswith(HEAVY):
        return "heavy"
    return next((prefix for prefix in SHARED_FIXTURE if nodeid.startswith(prefix)), nodeid)


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """``--dist loadgroup`` (pyproject's addopts) with the units above.

    Not by ``xdist_group`` markers: pytest-xdist 3.8 groups them by rewriting ``item._nodeid``,
    which pytest 9.2 no longer reads, so marked tests were spread over both workers (seen:
    the benchmark smoke test's fixture ran on each). The scheduler groups by node id itself."""
    if config.getvalue("dist") != "loadgroup":
        return None
    from xdist.scheduler import LoadScopeScheduling

    class SuiteUnits(LoadScopeScheduling):
        # Units are queued largest first (xdist's default reordering), so the heavy unit
        # starts at once and the other worker drains the many small ones beside it.
        def _split_scope(self, nodeid: str) -> str:
            return xdist_unit(nodeid)

    return SuiteUnits(config, log)


def _port_open(port: int) -> bool:
    with socket.socket() as s:
        s.settimeout(0.5)
        return s.connect_ex(("127.0.0.1", port)) == 0


def service_unavailable(name: str, detail: str) -> None:
    """Skip, or fail when services are required, naming the service and how to start it."""
    message = f"{name} is not reachable on loopback ({detail}); start it with: {_RESTART_HINT[name]}"
    if REQUIRE_SERVICES:
        pytest.fail(f"MYINVOIS_REQUIRE_SERVICES=1 but {message}")
    pytest.skip(message)


def _scratch_database(admin_url: str, name: str, port: int, service: str) -> str:
    """Create a throw-away database and return its SQLAlchemy URL."""
    if not _port_open(port):
        service_unavailable(service, f"nothing listens on 127.0.0.1:{port}")
    from sqlalchemy import create_engine, make_url, text

    try:
        admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
        with admin.connect() as conn:
            conn.execute(text(f"CREATE DATABASE {name}"))
        admin.dispose()
    except Exception as exc:  # noqa: BLE001 - any driver error means the service is unusable
        service_unavailable(service, f"{type(exc).__name__}: {exc}")
    return make_url(admin_url).set(database=name).render_as_string(hide_password=False)


def _drop_database(admin_url: str, name: str) -> None:
    from sqlalchemy import create_engine, text

    admin = create_engine(admin_url, isolation_level="AUTOCOMMIT")
    with admin.connect() as conn:
        if admin.dialect.name == "postgresql":
            conn.execute(text(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)"))
        else:
            conn.execute(text(f"DROP DATABASE IF EXISTS {name}"))
    admin.dispose()


@pytest.fixture(scope="session")
def postgres_url():
    """URL of an empty PostgreSQL database of this test session (psycopg 3 driver)."""
    name = f"myinvois_test_{uuid.uuid4().hex[:10]}"
    url = _scratch_database(POSTGRES_ADMIN_URL, name, 5432, "PostgreSQL")
    yield url
    _drop_database(POSTGRES_ADMIN_URL, name)


@pytest.fixture(scope="session")
def mariadb_url():
    """URL of an empty MariaDB database of this test session (PyMySQL driver)."""
    name = f"myinvois_test_{uuid.uuid4().hex[:10]}"
    url = _scratch_database(MARIADB_ADMIN_URL, name, 3306, "MariaDB")
    yield url
    _drop_database(MARIADB_ADMIN_URL, name)


@pytest.fixture()
def redis_url():
    """URL of the loopback Redis, checked with a PING. Tests must use a unique key prefix."""
    if not _port_open(6379):
        service_unavailable("Redis", "nothing listens on 127.0.0.1:6379")
    import redis

    try:
        redis.Redis.from_url(REDIS_URL).ping()
    except Exception as exc:  # noqa: BLE001
        service_unavailable("Redis", f"{type(exc).__name__}: {exc}")
    return REDIS_URL


@pytest.fixture()
def throwaway_redis(tmp_path):
    """A running redis-server of this test only (never the shared one), to stop and restart at will."""
    import shutil

    from tests.api._throwaway_redis import ThrowawayRedis

    if shutil.which("redis-server") is None:
        service_unavailable("Redis", "redis-server is not on PATH, so no throw-away server can be started")
    server = ThrowawayRedis(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture()
def unique_prefix() -> str:
    return f"myinvois-test-{uuid.uuid4().hex[:12]}"


def load_sample(name: str) -> dict:
    """One of LHDN's official 1.0 JSON samples, parsed."""
    return json.loads((SAMPLES / name).read_text("utf-8"))


@pytest.fixture()
def official_samples() -> dict[str, dict]:
    return {p.name: json.loads(p.read_text("utf-8")) for p in sorted(SAMPLES.glob("*.json"))}
