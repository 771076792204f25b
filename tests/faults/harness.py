"""What the fault and crash tests share: an ERP (SQL staging tables on SQLite), a connector
configuration pointing at a separately started simulator, the connector as a real process,
and the checks that end every run.

Everything talks over loopback HTTP; nothing is mocked. Windows are compressed (a few seconds
instead of 60) with the real per-window limits, so a test of a few minutes crosses dozens of
windows at full production load.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, select, text

from connector_core.simulator import SimulatorConfig, run_in_thread
from tests.plugins.sql_staging import StagingErp, recreate_staging_tables

#: The installed command, next to the interpreter running the tests.
CLI = [str(Path(sys.executable).parent / "myinvois-connector")]
REPO = Path(__file__).resolve().parents[2]

#: The compressed window; the connector's rate_limits.window_seconds is set to the same value.
WINDOW_SECONDS = 3.0
CLIENT_ID = "demo-taxpayer"
CLIENT_SECRET = "demo-taxpayer-secret"
TIN = "C25845632020"

#: Every fault on at once. Rates are per call; the draws are seeded, so a run repeats.
ALL_FAULTS: dict[str, Any] = {
    "latency_ms": 3,
    "latency_jitter_ms": 25,
    "error_rate": 0.03,
    "spurious_429_rate": 0.03,
    # A lost response is a processed call whose answer never arrives: on submit that is the
    # dangerous case (MyInvois holds the documents, the connector does not know their uuids).
    "lost_response_rate": {"submit": 0.12, "get_submission": 0.02, "search": 0.05, "login": 0.03},
    "revoke_rate": 0.01,
    "slow_validation_rate": 0.15,
    "slow_validation_seconds": 2.5,
}
FAULT_KINDS = ("latency", "error_500", "error_503", "spurious_429", "lost_response", "revoke", "slow_validation")

FINAL_ERP_STATUSES = {"valid", "invalid", "rejected", "cancelled", "locally_invalid"}


def start_simulator(
    faults: dict[str, Any] | None = None,
    seed: int = 4,
    rate_overrides: dict[str, int] | None = None,
    *,
    duplicate_submission_window_seconds: float | None = None,
):
    """A simulator on loopback with the production limits per compressed window.

    ``duplicate_submission_window_seconds`` shortens MyInvois's 10 minutes in which an identical
    payload is answered 422: a re-send after it is accepted, and its documents end DS302."""
    extra: dict[str, Any] = {}
    if duplicate_submission_window_seconds is not None:
        extra["duplicate_submission_window_seconds"] = duplicate_submission_window_seconds
    config = SimulatorConfig(
        seed=seed,
        faults=faults or {},
        rate_limits={"profile": "production", "window_seconds": WINDOW_SECONDS, "overrides": rate_overrides or {}},
        validation={"delay_seconds": 0.3, "per_document_seconds": 0.002},
        **extra,
    )
    return run_in_thread(config)


def stats(base_url: str) -> dict[str, Any]:
    return httpx.get(f"{base_url}/_simulator/stats", timeout=30).json()


# --- the ERP -----------------------------------------------------------------------------------


class Erp:
    """SQL staging tables in a SQLite file, filled with ``count`` invoices numbered from ``first``."""

    def __init__(self, path: Path, *, first: int, count: int, invalid: int = 0) -> None:
        self.path = path
        self.url = f"sqlite:///{path}"
        self.engine = create_engine(self.url)
        recreate_staging_tables(self.engine)
        self.staging = StagingErp(self.engine)
        self.staging.next_key = first
        valid = count - invalid
        self.keys = self.staging.add(valid)
        # Two kinds of invalid invoice: a TIN too short, which the connector's own checks refuse
        # (locally invalid, never sent), and an individual's TIN with too few digits, which
        # only MyInvois refuses (TX301: sent, accepted on arrival, then Invalid).
        self.invalid_keys = self.staging.add(invalid // 2, buyer_tin="C1234") if invalid // 2 else []
        remote = invalid - invalid // 2
        self.invalid_keys += self.staging.add(remote, buyer_tin="IG123") if remote else []
        self.keys += self.invalid_keys

    def rows(self) -> dict[str, dict[str, Any]]:
        h = self.staging.header.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(h.id, h.invoice_number, h.myinvois_status, h.myinvois_uuid, h.myinvois_errors, h.myinvois_version)
            ).mappings()
            return {r["invoice_number"]: dict(r) for r in rows}

    def add(self, count: int, **overrides: Any) -> list[str]:
        """More valid invoices, as the ERP keeps producing them (``overrides``: header columns)."""
        keys = self.staging.add(count, **overrides)
        self.keys += keys
        return keys

    def rows_by_key(self) -> dict[str, dict[str, Any]]:
        """The staging rows by ERP key: unlike :meth:`rows`, two rows with one number both show."""
        h = self.staging.header.c
        with self.engine.connect() as conn:
            rows = conn.execute(
                select(h.id, h.invoice_number, h.myinvois_status, h.myinvois_uuid, h.myinvois_errors, h.myinvois_version)
            ).mappings()
            return {str(r["id"]): dict(r) for r in rows}

    def close(self) -> None:
        self.engine.dispose()


# --- the connector -----------------------------------------------------------------------------


def write_config(
    directory: Path,
    *,
    api_url: str,
    erp: Erp,
    rate_backend: str | None,
    max_documents: int = 10,
    once_timeout: float = 150.0,
    key_prefix: str = "faults",
    source_name: str = "erp",
) -> Path:
    """A connector configuration with small intervals, the compressed window and a shared limiter."""
    state = directory / "state"
    text = f"""
environment = "simulator"
api_base_url = "{api_url}"
state_dir = "{state}"

[observability]
log_level = "WARNING"
log_format = "text"
metrics_port = 0

[cycles]
fetch_interval_seconds = 1.0
poll_interval_seconds = 0.5
first_poll_delay_seconds = 0.4
first_poll_delay_per_document_seconds = 0.005
poll_min_interval_seconds = 0.5
poll_max_interval_seconds = 1.5
reconcile_after_seconds = 1.0
once_timeout_seconds = {once_timeout}

[submission]
max_documents = {max_documents}
concurrency = 4
poll_concurrency = 4

[rate_limits]
profile = "production"
window_seconds = {WINDOW_SECONDS}
{f'backend = "{rate_backend}"' if rate_backend else "# backend: the default"}
key_prefix = "{key_prefix}"
# 0.2 s of the 3 s window (the guard is given per 60 s of window): the guard stands for a
# request's way to MyInvois, which here is the simulator's event loop noting the arrival on a
# machine whose two cores are busy (tens to a couple of hundred ms), as the default 0.25 s of 60
# stands for the internet's way to LHDN. With the default scaled to 0.0125 s, two connectors
# put 104 submits into one window as the simulator counted it, under load.
arrival_margin_seconds = 4.0

[retry]
read_timeout_s = 10
base_delay_s = 0.1
max_delay_s = 1.0
default_retry_after_s = 1.0
# The outage back-off compressed like the window: LHDN's 5 s to 300 s would park a 3 s-window
# run for longer than it lasts after a few rounds of injected faults.
outage_initial_delay_s = 0.5
outage_max_delay_s = 5.0
outage_summary_interval_s = 10.0

[profiles.main]
tin = "{TIN}"
client_id = "{CLIENT_ID}"
client_secret = "{CLIENT_SECRET}"

[sources.{source_name}]
kind = "sql"
profile = "main"

[sources.{source_name}.options]
url = "{erp.url}"
page_size = 500
"""
    path = directory / "connector.toml"
    path.write_text(text, "utf-8")
    return path


def connector_env() -> dict[str, str]:
    env = dict(os.environ)
    env["PYTHONPATH"] = str(REPO) + os.pathsep + env.get("PYTHONPATH", "")
    # The scheduler and the CLI must not pick up a developer's settings from the environment.
    for name in list(env):
        if name.startswith("MYINVOIS_") and not name.startswith("MYINVOIS_TEST"):
            env.pop(name)
    return env


def start_connector(config: Path, *args: str, log: Path) -> subprocess.Popen:
    out = log.open("ab")
    return subprocess.Popen(
        [*CLI, "--config", str(config), "run", *args],
        cwd=REPO,
        env=connector_env(),
        stdout=out,
        stderr=subprocess.STDOUT,
    )


def run_once(config: Path, *, log: Path, timeout: float) -> dict[str, Any]:
    proc = start_connector(config, "--once", "--json", log=log)
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
        raise AssertionError(f"run --once did not finish within {timeout} s; see {log}") from None
    output = log.read_text("utf-8", "replace")
    # Done: 0, or 3 when some invoices ended invalid (ExitCode.NEEDS_ATTENTION); never a failure.
    assert proc.returncode in (0, 3), f"run --once exited {proc.returncode}:\n{output[-4000:]}"
    start = output.rfind('\n{\n  "finished"')
    summary = json.loads(output[start:] if start >= 0 else output[output.index("{") :])
    assert summary.get("exit_code", proc.returncode) == proc.returncode
    return summary


def run_together(configs: list[Path], *, timeout: float) -> list[dict[str, Any]]:
    """``run --once`` of several connector processes at the same time; their summaries."""
    results: list[Any] = [None] * len(configs)

    def run(n: int) -> None:
        try:
            results[n] = run_once(configs[n], log=configs[n].parent / "connector.log", timeout=timeout)
        except BaseException as exc:  # noqa: BLE001 - re-raised by the caller's thread
            results[n] = exc

    threads = [threading.Thread(target=run, args=(n,)) for n in range(len(configs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=timeout + 30)
    for result in results:
        if isinstance(result, BaseException):
            raise result
    return results


def status(config: Path) -> dict[str, Any]:
    return json.loads(status_text(config, "--json"))


def status_text(config: Path, *args: str) -> str:
    """What an operator reads from ``myinvois-connector status``."""
    result = subprocess.run(
        [*CLI, "--config", str(config), "status", *args],
        cwd=REPO,
        env=connector_env(),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stderr
    return result.stdout


# --- the end-of-run checks ---------------------------------------------------------------------


def peaks_against_limits(sim_stats: dict[str, Any], client_id: str = CLIENT_ID) -> dict[str, tuple[int, int | None]]:
    """(highest requests seen in any window, the limit) for every endpoint the client called;
    the limit is None for an API LHDN publishes no figure for (Get Document Types)."""
    peaks = sim_stats["max_requests_per_window"].get(client_id, {})
    return {endpoint: (peak, sim_stats["limits"].get(endpoint)) for endpoint, peak in sorted(peaks.items())}


def assert_within_limits(sim_stats: dict[str, Any], client_id: str = CLIENT_ID) -> dict[str, tuple[int, int | None]]:
    peaks = peaks_against_limits(sim_stats, client_id)
    over = {e: p for e, p in peaks.items() if p[1] is not None and p[0] > p[1]}
    assert not over, f"over the limit in some window (peak, limit): {over}"
    return peaks


def simulator_documents(running) -> dict[str, tuple[str, str]]:
    """uuid -> (internal id, status) of every document the simulator holds, read in-process."""
    now = time.time()
    return {uuid: (d.internal_id, d.status(now)) for uuid, d in list(running.simulator.store.documents.items())}


def assert_exactly_once(running, erps: list[Erp]) -> dict[str, int]:
    """Nothing lost, nothing duplicated, the ERP agrees with MyInvois. Returns the figures."""
    sim_stats = stats(running.base_url)
    assert sim_stats["duplicate_documents"] == 0
    valid_by_invoice: dict[str, int] = sim_stats["valid_by_invoice"]
    accepted_by_invoice: dict[str, int] = sim_stats["accepted_by_invoice"]
    assert all(n == 1 for n in valid_by_invoice.values()), {k: n for k, n in valid_by_invoice.items() if n != 1}
    documents = simulator_documents(running)
    by_number: dict[str, list[Any]] = {}
    for document in list(running.simulator.store.documents.values()):
        by_number.setdefault(document.internal_id, []).append(document)

    figures: Counter[str] = Counter()
    for erp in erps:
        rows = erp.rows()
        assert len(rows) == len(erp.keys)
        invalid_numbers = {f"INV-{int(k):06d}" for k in erp.invalid_keys}
        for number, row in rows.items():
            key = f"{TIN}|{number}"
            state = row["myinvois_status"]
            assert state in FINAL_ERP_STATUSES, f"invoice {number} was not written back as final: {row}"
            figures[state] += 1
            # A second acceptance is only allowed when MyInvois refused it as a DS302 duplicate.
            twins = [d for d in by_number.get(number, []) if d.uuid != row["myinvois_uuid"]]
            if number not in invalid_numbers:
                assert all("DS302" in {p.code for p in d.problems} for d in twins), (
                    f"invoice {number} was accepted {accepted_by_invoice.get(key)} times, not only as DS302 duplicates"
                )
            figures["accepted_twice_then_ds302"] += len(twins)
            if number in invalid_numbers:
                assert state in ("invalid", "locally_invalid"), row
                assert row["myinvois_errors"], row
                assert valid_by_invoice.get(key, 0) == 0
                if state == "invalid":
                    assert documents[row["myinvois_uuid"]] == (number, "Invalid"), row
                continue
            assert state == "valid", f"invoice {number} ended {state}: {row['myinvois_errors']}"
            assert valid_by_invoice.get(key) == 1, f"invoice {number} is valid {valid_by_invoice.get(key, 0)} times"
            assert documents.get(row["myinvois_uuid"]) == (number, "Valid"), (
                f"the ERP holds uuid {row['myinvois_uuid']} for {number}; MyInvois has "
                f"{documents.get(row['myinvois_uuid'])}"
            )
    # Every valid document at MyInvois belongs to exactly one ERP row that names its uuid.
    erp_uuids = {row["myinvois_uuid"] for erp in erps for row in erp.rows().values()}
    stray = [u for u, (_, s) in documents.items() if s == "Valid" and u not in erp_uuids]
    assert not stray, f"valid documents at MyInvois that no ERP row names: {stray[:5]}"
    total = sum(len(erp.keys) for erp in erps)
    figures["lost"] = total - sum(figures[s] for s in FINAL_ERP_STATUSES)
    assert figures["lost"] == 0
    figures["duplicates"] = sim_stats["duplicate_documents"]
    return dict(figures)


def wait_until(predicate, timeout: float, interval: float = 0.2) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval)
    return predicate()


# --- changing things while they run -------------------------------------------------------------


def update_faults(base_url: str, **changes: Any) -> dict[str, Any]:
    """Change some of the simulator's faults at run time and keep the others: its
    ``/_simulator/faults`` replaces the whole set, so read it first and merge."""
    current = httpx.get(f"{base_url}/_simulator/faults", timeout=30).json()
    answer = httpx.post(f"{base_url}/_simulator/faults", json={**current, **changes}, timeout=30)
    answer.raise_for_status()
    return answer.json()


def clear_faults(base_url: str) -> None:
    """Every fault off, search lag included: MyInvois behaves from now on."""
    httpx.post(f"{base_url}/_simulator/faults", json={}, timeout=30).raise_for_status()


def _toml_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (int, float)):
        return repr(value)
    if isinstance(value, dict):
        return "{ " + ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.items()) + " }"
    return json.dumps(str(value))  # a TOML basic string for what these tests write


def set_option(config: Path, section: str, key: str, value: Any) -> None:
    """Set ``key = value`` in ``[section]`` of a configuration from :func:`write_config`,
    replacing the key when the section has it, adding the section at the end when missing."""
    lines = config.read_text("utf-8").splitlines()
    header = f"[{section}]"
    line = f"{key} = {_toml_value(value)}"
    if header not in lines:
        lines += ["", header, line]
    else:
        start = lines.index(header) + 1
        end = next((n for n in range(start, len(lines)) if lines[n].startswith("[")), len(lines))
        at = next((n for n in range(start, end) if lines[n].split("=", 1)[0].strip() == key), None)
        if at is None:
            lines.insert(start, line)
        else:
            lines[at] = line
    config.write_text("\n".join(lines) + "\n", "utf-8")


def add_source(config: Path, name: str, erp: Erp, *, profile: str = "main") -> None:
    """A second SQL source (another staging database) submitting with the same profile."""
    with config.open("a", encoding="utf-8") as out:
        out.write(
            f'\n[sources.{name}]\nkind = "sql"\nprofile = "{profile}"\n\n'
            f'[sources.{name}.options]\nurl = "{erp.url}"\npage_size = 500\n'
        )


class Daemon:
    """One connector daemon (``run``, not ``--once``) that a test kills with SIGKILL at any
    moment and starts again, as systemd would; every life appends to the same log."""

    def __init__(self, config: Path, name: str) -> None:
        self.config = config
        self.name = name
        self.log = config.parent / "connector.log"
        self.process: subprocess.Popen | None = None
        self.lives = 0
        self.kills = 0

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    def start(self) -> None:
        assert not self.running, f"{self.name} is already running"
        self.process = start_connector(self.config, log=self.log)
        self.lives += 1

    def kill(self) -> None:
        """SIGKILL: no clean-up of any kind, wherever it falls."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.kills += 1
        self.process.wait(timeout=30)

    def stop(self, timeout: float = 60) -> int:
        """SIGTERM, as an operator stops it; its exit status."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise AssertionError(f"{self.name} did not stop within {timeout} s of SIGTERM; see {self.log}") from None

    def exited_by_itself(self) -> str | None:
        """Why the daemon is not running when nobody stopped it (None while it runs)."""
        if self.process is None or self.process.poll() is None:
            return None
        return f"{self.name} exited by itself with {self.process.returncode}:\n{self.log_tail()}"

    def log_tail(self, chars: int = 3000) -> str:
        return self.log.read_text("utf-8", "replace")[-chars:] if self.log.exists() else "(no log)"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class ThrowawayRedis:
    """A redis-server of one test on a free loopback port, that the test kills and starts again
    (never the shared one on 6379). Without persistence a restart forgets every key, the
    rate windows included: the worst case of an operator who kept the default redis.conf."""

    def __init__(self, workdir: Path, *, persistent: bool = False) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.persistent = persistent
        self.process: subprocess.Popen | None = None
        self.restarts = 0

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self, timeout: float = 30) -> None:
        if shutil.which("redis-server") is None:
            from tests.conftest import service_unavailable

            service_unavailable("Redis", "redis-server is not installed, so no throw-away Redis can be started")
        persistence = ["--appendonly", "yes", "--appendfsync", "always"] if self.persistent else ["--appendonly", "no"]
        self.process = subprocess.Popen(
            ["redis-server", "--port", str(self.port), "--bind", "127.0.0.1", "--save", "", *persistence,
             "--dir", str(self.workdir), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        import redis

        client = redis.Redis(host="127.0.0.1", port=self.port, socket_connect_timeout=1)
        deadline = time.monotonic() + timeout
        try:
            while True:
                try:
                    client.ping()
                    return
                except redis.exceptions.RedisError:
                    if self.process.poll() is not None or time.monotonic() > deadline:
                        raise RuntimeError(f"the throw-away redis-server on port {self.port} did not start") from None
                    time.sleep(0.02)
        finally:
            client.close()

    def kill(self) -> None:
        """SIGKILL, as a crash or an OOM kill stops it."""
        if self.process is not None and self.process.poll() is None:
            self.process.send_signal(signal.SIGKILL)
            self.process.wait(timeout=30)
        self.process = None

    def restart(self, down_seconds: float) -> None:
        self.kill()
        time.sleep(down_seconds)
        self.start()
        self.restarts += 1

    def stop(self) -> None:
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()
        self.process = None


def rate_limit_answers(sim_stats: dict[str, Any]) -> dict[str, int]:
    """429 answers per endpoint, whatever their cause."""
    return {e: s["429"] for e, s in sorted(sim_stats["requests"].items()) if s.get("429")}


def assert_no_429_from_a_real_limit(sim_stats: dict[str, Any]) -> None:
    """Every 429 MyInvois gave was an injected spurious one (answered before the limit is
    checked): none came from a window the connectors overfilled."""
    answers = rate_limit_answers(sim_stats)
    spurious = sim_stats["faults_injected"].get("spurious_429", 0)
    assert sum(answers.values()) == spurious, f"429 answers {answers}, of which {spurious} injected"


# --- every state change a PostgreSQL ledger sees -------------------------------------------------
# tests/state_log.py does this for SQLite with triggers; the same on PostgreSQL, for connectors
# that share one ledger there.


def install_pg_state_log(url: str) -> None:
    """Record every state change of ``documents`` and ``submissions`` (the schema must exist)."""
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS test_state_log (tbl TEXT, old TEXT, new TEXT)"))
        conn.execute(
            text(
                "CREATE OR REPLACE FUNCTION test_log_state() RETURNS trigger AS $$ BEGIN "
                "IF TG_OP = 'INSERT' THEN INSERT INTO test_state_log VALUES (TG_TABLE_NAME, NULL, NEW.state); "
                "ELSIF OLD.state IS DISTINCT FROM NEW.state THEN "
                "INSERT INTO test_state_log VALUES (TG_TABLE_NAME, OLD.state, NEW.state); END IF; "
                "RETURN NEW; END $$ LANGUAGE plpgsql"
            )
        )
        for table in ("documents", "submissions"):
            conn.execute(
                text(
                    f"CREATE TRIGGER test_log_{table} AFTER INSERT OR UPDATE OF state ON {table} "
                    "FOR EACH ROW EXECUTE FUNCTION test_log_state()"
                )
            )
    engine.dispose()


def pg_state_changes(url: str) -> set[tuple[str, str | None, str]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = {(r.tbl, r.old, r.new) for r in conn.execute(text("SELECT DISTINCT tbl, old, new FROM test_state_log"))}
    engine.dispose()
    return rows


@contextmanager
def scratch_postgres_ledger() -> Iterator[str]:
    """A fresh PostgreSQL database for a ledger that connectors share, its schema created and
    every state change recorded (see :func:`install_pg_state_log`); dropped afterwards. Skips
    (fails with MYINVOIS_REQUIRE_SERVICES=1) when PostgreSQL is not there."""
    from connector_core.ledger import Ledger
    from tests.conftest import POSTGRES_ADMIN_URL, _drop_database, _scratch_database

    name = f"myinvois_faults_{uuid.uuid4().hex[:10]}"
    url = _scratch_database(POSTGRES_ADMIN_URL, name, 5432, "PostgreSQL")
    try:
        Ledger(url).close()  # the schema, so that the state log can watch it
        install_pg_state_log(url)
        yield url
    finally:
        _drop_database(POSTGRES_ADMIN_URL, name)


def instance_id(daemon: Daemon) -> str:
    """The name a daemon's installation writes on the submissions it sends."""
    return (daemon.config.parent / "state" / "instance-id").read_text("ascii").strip()
