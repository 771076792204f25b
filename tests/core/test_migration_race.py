"""Connectors started together on a fresh shared ledger: the schema is migrated once, and every
one of them starts (issue "Exactly once for every invoice…", scenario I).

Each case gets a database of its own, created empty and dropped after, because the race is only
there while the schema does not exist yet. The connectors are real OS processes, as in production:
threads would share one interpreter and the SQLite file lock would not be exercised across
processes.
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import create_engine, inspect, text

from connector_core.ledger import migrate
from connector_core.ledger.schema import metadata
from tests.conftest import MARIADB_ADMIN_URL, POSTGRES_ADMIN_URL, _drop_database, _scratch_database

CONNECTORS = 4

# Imports first, then waits at the rendezvous for the "go" file, so that every process reaches
# Ledger(url) - and its migration - at the same moment rather than one import time apart.
# The URL comes through the environment, not argv, where `ps` would show it to everyone.
CONNECTOR = """
import os, sys, time
from pathlib import Path
from connector_core.ledger import Ledger

rendezvous = Path(sys.argv[1])
(rendezvous / f"ready-{sys.argv[2]}").touch()
while not (rendezvous / "go").exists():
    time.sleep(0.001)
Ledger(os.environ["MYINVOIS_RACE_LEDGER_URL"]).close()
"""

# Only a guard against a child that hangs: the test never asserts how long anything takes.
STARTUP_GRACE_SECONDS = 120


@pytest.fixture(
    params=["sqlite", pytest.param("postgresql", marks=pytest.mark.services), pytest.param("mariadb", marks=pytest.mark.services)]
)
def fresh_ledger_url(request, tmp_path):
    """URL of an empty database that no test has touched yet."""
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'ledger.sqlite'}"
        return
    admin_url, port, service = {
        "postgresql": (POSTGRES_ADMIN_URL, 5432, "PostgreSQL"),
        "mariadb": (MARIADB_ADMIN_URL, 3306, "MariaDB"),
    }[request.param]
    name = f"myinvois_race_{uuid.uuid4().hex[:10]}"
    url = _scratch_database(admin_url, name, port, service)
    yield url
    _drop_database(admin_url, name)


def _start_connectors_together(url: str, rendezvous: Path, count: int) -> list[subprocess.CompletedProcess]:
    env = {**os.environ, "MYINVOIS_RACE_LEDGER_URL": url}
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", CONNECTOR, str(rendezvous), str(i)],
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for i in range(count)
    ]
    try:
        deadline = time.monotonic() + STARTUP_GRACE_SECONDS
        while len(list(rendezvous.glob("ready-*"))) < count:
            # A child that died before the rendezvous is reported below with its stderr.
            if any(p.poll() is not None for p in procs) or time.monotonic() > deadline:
                break
            time.sleep(0.01)
        (rendezvous / "go").touch()
        results = []
        for p in procs:
            out, err = p.communicate(timeout=STARTUP_GRACE_SECONDS)
            results.append(subprocess.CompletedProcess(p.args, p.returncode, out, err))
        return results
    finally:
        for p in procs:
            if p.poll() is None:
                p.kill()
                p.wait()


def test_connectors_started_together_on_a_fresh_ledger_all_start_and_migrate_it_once(fresh_ledger_url, tmp_path):
    rendezvous = tmp_path / "rendezvous"
    rendezvous.mkdir()

    results = _start_connectors_together(fresh_ledger_url, rendezvous, CONNECTORS)

    failed = [f"connector {i} exited {r.returncode}:\n{r.stderr[-3000:]}" for i, r in enumerate(results) if r.returncode != 0]
    assert not failed, "\n\n".join(failed)
    engine = create_engine(fresh_ledger_url)
    try:
        with engine.connect() as conn:
            versions = conn.execute(text("SELECT version_num FROM alembic_version")).scalars().all()
        assert versions == [migrate.head_revision()]
        assert set(metadata.tables) <= set(inspect(engine).get_table_names())
    finally:
        engine.dispose()


def test_a_connector_kept_waiting_by_another_ones_migration_says_so_and_changes_nothing(fresh_ledger_url):
    holder, waiter = create_engine(fresh_ledger_url), create_engine(fresh_ledger_url)
    try:
        with migrate.migration_lock(holder):
            with pytest.raises(migrate.MigrationInProgress, match="another connector is migrating this ledger"):
                migrate.upgrade(waiter, lock_timeout=0.5)
        assert migrate.current_revision(waiter) is None
        # Once the other connector is done (here: gone without migrating), the lock is free again.
        migrate.upgrade(waiter, lock_timeout=0.5)
        assert migrate.current_revision(waiter) == migrate.head_revision()
    finally:
        holder.dispose()
        waiter.dispose()
