"""Fixtures of the exactly-once scenarios: a fresh ledger on each database, a simulator on
loopback, an in-memory ERP, and connectors assembled in-process so a test can run their stages
one by one, in the order it wants, and interleave two of them on one ledger."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from contextlib import ExitStack
from pathlib import Path
from typing import Any

import httpx
import pytest
from sqlalchemy import create_engine

from connector_core.ledger import Ledger
from connector_core.ledger.schema import metadata
from connector_core.plugins import PluginHost
from connector_core.runtime import Connector
from connector_core.settings import Settings
from connector_core.simulator import SimulatorConfig, run_in_thread
from tests.conftest import MARIADB_ADMIN_URL, POSTGRES_ADMIN_URL, _drop_database, _scratch_database
from tests import state_log
from tests.document.factories import DEMO_TIN
from tests.exactly_once.erp import MemoryErp

LEDGERS = ["sqlite", "postgresql", "mariadb"]


def fresh_ledger_url(kind: str, tmp_path: Path, cleanup: ExitStack) -> str:
    """An empty ledger database of ``kind`` for one test (dropped afterwards)."""
    if kind == "sqlite":
        return f"sqlite:///{tmp_path / f'ledger-{uuid.uuid4().hex[:6]}.sqlite'}"
    admin, port, service = (
        (POSTGRES_ADMIN_URL, 5432, "PostgreSQL") if kind == "postgresql" else (MARIADB_ADMIN_URL, 3306, "MariaDB")
    )
    name = f"myinvois_eo_{uuid.uuid4().hex[:10]}"
    url = _scratch_database(admin, name, port, service)
    cleanup.callback(_drop_database, admin, name)
    return url


class ServerLedgers:
    """A module's PostgreSQL and MariaDB ledgers: one database of each kind, created with the
    schema when a test first asks for it and dropped after the module. A database created and
    migrated for every test was most of these tests' time (with both cores busy above all);
    each test still starts on a ledger without a row (see :func:`ledger_url`)."""

    def __init__(self, cleanup: ExitStack) -> None:
        self.cleanup = cleanup
        self.urls: dict[str, str] = {}

    def url(self, kind: str) -> str:
        if kind not in self.urls:
            url = fresh_ledger_url(kind, Path(), self.cleanup)  # no folder: a server database
            Ledger(url).close()  # the schema, as the first connector would create it
            self.urls[kind] = url
        return self.urls[kind]

    def empty(self, kind: str) -> None:
        """Delete every row, as a fresh ledger has none; a ledger that cannot be emptied (a
        test left a transaction open) is left to the module's end, and the next test gets a
        new one."""
        engine = create_engine(self.urls[kind])
        try:
            with engine.begin() as conn:
                for table in reversed(metadata.sorted_tables):
                    conn.execute(table.delete())
        except BaseException:
            del self.urls[kind]
            raise
        finally:
            engine.dispose()


_SERVER_LEDGERS = pytest.StashKey[ServerLedgers]()


def module_server_ledgers(request: pytest.FixtureRequest) -> ServerLedgers:
    """The :class:`ServerLedgers` of the requesting test's module, dropped after its last test.
    Kept on the module's node rather than in a fixture of its own, so that a module which
    imports :func:`ledger_url` (tests/core/test_status_by_invoice.py) needs nothing else."""
    module = request.node.getparent(pytest.Module)
    if _SERVER_LEDGERS not in module.stash:
        cleanup = ExitStack()
        module.stash[_SERVER_LEDGERS] = ServerLedgers(cleanup)
        module.addfinalizer(cleanup.close)
        module.addfinalizer(lambda: module.stash.__delitem__(_SERVER_LEDGERS))
    return module.stash[_SERVER_LEDGERS]


@pytest.fixture(params=LEDGERS)
def ledger_url(request, tmp_path) -> Iterator[str]:
    """A fresh ledger: the schema and no row. On SQLite, a file of the test's own, whose
    triggers record every state change the database sees; the test fails if any of them is not
    a move declared in connector_core/ledger/states.py."""
    if request.param != "sqlite":
        ledgers = module_server_ledgers(request)
        yield ledgers.url(request.param)
        ledgers.empty(request.param)
        return
    with ExitStack() as cleanup:
        url = fresh_ledger_url(request.param, tmp_path, cleanup)
        Ledger(url).close()  # create the schema, then watch it
        state_log.install(url)
        yield url
        assert state_log.undeclared(url) == set(), "state changes not declared in the state machine"


#: LHDN's limits per window, with the window compressed tenfold (as in tests/faults/harness.py):
#: the connectors of these scenarios count the same window (see :func:`make_connector`), so a
#: wait for a slot, above all Search Documents' "one every 5 s", is half a second, not five. The
#: scenarios are about the ledger's moves; pacing itself is tested in tests/api/test_ratelimit.py.
RATE_WINDOW_SECONDS = 6.0


@pytest.fixture()
def simulator() -> Iterator[Any]:
    config = SimulatorConfig(
        seed=11,
        rate_limits={"profile": "production", "window_seconds": RATE_WINDOW_SECONDS},
        validation={"delay_seconds": 0.0, "per_document_seconds": 0.0},
    )
    with run_in_thread(config) as running:
        yield running


def set_faults(sim, **faults: Any) -> None:
    """Change some of the simulator's faults while it runs, keeping the others (its
    /_simulator/faults endpoint replaces the whole set)."""
    current = httpx.get(f"{sim.base_url}/_simulator/faults", timeout=10).json()
    httpx.post(f"{sim.base_url}/_simulator/faults", json={**current, **faults}, timeout=10).raise_for_status()


def make_connector(
    tmp_path: Path,
    ledger_url: str,
    sim,
    erps: dict[str, MemoryErp],
    *,
    name: str = "a",
    cycles: dict[str, Any] | None = None,
    submission: dict[str, Any] | None = None,
    retry: dict[str, Any] | None = None,
    rate_backend: str = "memory",
    rate_limits: dict[str, Any] | None = None,
    observers: tuple = (),
) -> Connector:
    """A connector named ``name`` (its own state directory, hence its own sender name) on the
    shared ``ledger_url``, one source per ERP (the dict's keys), all on one profile."""
    settings = Settings(
        environment="simulator",
        api_base_url=sim.base_url,
        state_dir=tmp_path / f"connector-{name}",
        ledger={"url": ledger_url},
        rate_limits={"backend": rate_backend, **_window_of(sim), **(rate_limits or {})},
        retry={"read_timeout_s": 10, "base_delay_s": 0.05, "max_delay_s": 0.2, "read_max_attempts": 2, **(retry or {})},
        cycles={
            "first_poll_delay_seconds": 0.0,
            "first_poll_delay_per_document_seconds": 0.0,
            "poll_min_interval_seconds": 0.0,
            "poll_max_interval_seconds": 0.0,
            "reconcile_after_seconds": 0.0,
            **(cycles or {}),
        },
        submission={"concurrency": 1, **(submission or {})},
        profiles={"main": {"tin": DEMO_TIN, "client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret"}},
        sources={source: {"kind": erp.kind, "profile": "main"} for source, erp in erps.items()},
    )
    host = PluginHost(load_entry_points=False, extra_plugins=tuple({id(e): e for e in erps.values()}.values()))
    return Connector(settings, host=host, observers=observers)


def _window_of(sim) -> dict[str, float]:
    """The rate window of the simulator ``sim`` (none for a stand-in that is not one): the
    connector counts the window of the MyInvois it talks to, as it does LHDN's 60 s."""
    running = getattr(sim, "simulator", None)
    return {"window_seconds": running.config.rate_limits.window_seconds} if running is not None else {}


def valid_documents_at_myinvois(sim, number: str) -> list[Any]:
    return [d for d in list(sim.simulator.store.documents.values()) if d.internal_id == number and d.valid]


def documents_at_myinvois(sim, number: str) -> list[Any]:
    return [d for d in list(sim.simulator.store.documents.values()) if d.internal_id == number]
