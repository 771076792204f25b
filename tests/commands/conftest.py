"""The demo, run once for this package's tests against the in-process simulator, for the commands about one
invoice to be asked about: 11 invoices end valid, DEMO-INV-1007 and DEMO-INV-1008 are refused
before sending (a missing phone and a bad classification code; an unreadable unit price)."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest

# A fresh ledger on SQLite (whose state changes are checked against the state machine),
# PostgreSQL and MariaDB, as the exactly-once scenarios use.
from tests.exactly_once.conftest import ledger_url  # noqa: F401

CLI = [sys.executable, "-m", "connector_core.cli"]


def run_cli(*args: str, cwd: Path, timeout: float = 120) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items() if not k.startswith("MYINVOIS_")}
    return subprocess.run([*CLI, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)


@dataclass
class Demo:
    folder: Path
    config: Path

    def cli(self, *args: str) -> subprocess.CompletedProcess:
        return run_cli("--config", str(self.config), *args, cwd=self.folder)

    @property
    def outbox(self) -> Path:
        return self.folder / "var" / "outbox" / "results.csv"


def write_demo(folder: Path) -> Demo:
    written = run_cli("demo", str(folder), cwd=folder.parent)
    assert written.returncode == 0, written.stderr
    return Demo(folder=folder, config=folder / "demo.toml")


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Demo:
    demo = write_demo(tmp_path_factory.mktemp("commands") / "demo")
    run = demo.cli("run", "--once")
    # 3: the demo refuses two invoices on purpose.
    assert run.returncode == 3, run.stdout + run.stderr
    return demo
