"""The ledger's state machine: the declared table, the one way states are written, and the
diagram in docs/architecture.md.

Three checks work together so that a transition added in code but not declared fails:
* every declared move is walked on a real database, from each of its source states (it moves)
  and from every other state (it does not);
* the code writes ``state`` only through ``states.move`` / ``states.insert_state`` (read from
  the source, so a raw ``UPDATE ... SET state`` anywhere fails here);
* the end-to-end demo runs on a ledger whose triggers record every state change the database
  saw, and each one must be declared (tests/exactly_once does the same for every scenario).
"""

from __future__ import annotations

import ast
import re
import shutil
from datetime import UTC, datetime
from pathlib import Path

import pytest
from sqlalchemy import insert, select, text

from connector_core.contract import DocumentState
from connector_core.ledger import Ledger, migrate, states
from connector_core.ledger.schema import documents, metadata, submissions
from connector_core.ledger.states import SubmissionState, UndeclaredTransition
from tests import state_log

REPO = Path(__file__).resolve().parents[2]
OWNER_SUBMISSION = 1
OWNER_SENDER = "owner"


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mariadb"])
def ledger_schema(request, tmp_path_factory):
    """A ledger's schema on each database, created once for this module's tests (no test here
    changes it: creating and dropping it for each of them was most of their time, on MariaDB
    above all), and dropped after them."""
    if request.param == "sqlite":
        url = f"sqlite:///{tmp_path_factory.mktemp('states') / 'ledger.sqlite'}"
    else:
        url = request.getfixturevalue("postgres_url" if request.param == "postgresql" else "mariadb_url")
    led = Ledger(url)
    yield led.engine
    metadata.drop_all(led.engine)
    with led.engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    led.close()


@pytest.fixture()
def engine(ledger_schema):
    """The ledger's engine, every table empty as a freshly created ledger's, and again after the test."""
    yield ledger_schema
    with ledger_schema.begin() as conn:
        for table in reversed(metadata.sorted_tables):
            conn.execute(table.delete())


def _submission(conn, state: str, sender: str | None = OWNER_SENDER, sub_id: int | None = None) -> int:
    now = datetime.now(UTC)
    values = dict(profile="p", state=state, payload_hash="", document_count=1, created_at=now, poll_count=0, reconcile_attempts=0, sender=sender)
    if sub_id is not None:
        values["id"] = sub_id
    return conn.execute(insert(submissions).values(**values)).inserted_primary_key[0]


def _document(conn, state: str, submission_id: int | None, key: str) -> int:
    now = datetime.now(UTC)
    return conn.execute(
        insert(documents).values(
            source="s", source_key=key, version=1, fingerprint="f" * 64, profile="p", number=key, state=state,
            submission_id=submission_id, attempts=0, fetched_at=now, updated_at=now, refused_as_batch=False, report_attempts=0,
        )
    ).inserted_primary_key[0]  # fmt: skip


def _states_of(table: str) -> list[str]:
    return [s.value for s in (DocumentState if table == "documents" else SubmissionState)]


@pytest.mark.parametrize("transition", [t for t in states.TRANSITIONS if t.sources], ids=lambda t: f"{t.table}.{t.name}")
def test_each_declared_move_moves_from_its_sources_only_and_only_for_its_owner(engine, transition):
    table = documents if transition.table == "documents" else submissions
    with engine.begin() as conn:
        owner_sub = _submission(conn, SubmissionState.SENDING.value)
        for n, state in enumerate(_states_of(transition.table)):
            if transition.table == "documents":
                row = _document(conn, state, owner_sub, f"k{n}")
            else:
                row = _submission(conn, state)
            owner = (owner_sub if transition.table == "documents" else OWNER_SENDER) if transition.owned else ...
            # A move to REMOVED deletes its row (a compare-and-set delete): walked the same way.
            make = states.remove if transition.target == states.REMOVED else states.move
            moved = make(conn, transition, table.c.id == row, owner=owner, expected=1)
            assert moved.won == (state in transition.sources), (transition.name, state)
            after = conn.execute(select(table.c.state).where(table.c.id == row)).scalar()
            target = None if transition.target == states.REMOVED else transition.target
            assert after == (target if state in transition.sources else state)
            if transition.owned and state in transition.sources:
                # Held by someone else: the move does not happen.
                if transition.table == "documents":
                    stranger = _document(conn, state, _submission(conn, SubmissionState.SENDING.value), f"x{n}")
                    lost = make(conn, transition, table.c.id == stranger, owner=owner_sub, expected=1)
                else:
                    stranger = _submission(conn, state, sender="someone-else")
                    lost = make(conn, transition, table.c.id == stranger, owner=OWNER_SENDER, expected=1)
                assert lost.lost
                assert conn.execute(select(table.c.state).where(table.c.id == stranger)).scalar() == state


def test_moves_that_are_not_declared_cannot_be_written(engine):
    forged = states.Transition("resurrect", "documents", ("valid",), "pending", (states.Stage.FETCH,), False, "")
    with engine.begin() as conn, pytest.raises(UndeclaredTransition):
        states.move(conn, forged, documents.c.id == 1)
    with engine.begin() as conn, pytest.raises(UndeclaredTransition):
        states.move(conn, states.doc("accepted"), documents.c.id == 1)  # owned: the owner must be named
    with engine.begin() as conn, pytest.raises(UndeclaredTransition):
        states.insert_state(conn, states.doc("claim"), [{}])  # not a move that creates rows
    with engine.begin() as conn, pytest.raises(UndeclaredTransition):
        states.remove(conn, states.sub("answered_not_sent"), submissions.c.id == 1, owner=None)  # not a removal
    with engine.begin() as conn, pytest.raises(UndeclaredTransition):
        states.move(conn, states.sub("withdrawn"), submissions.c.id == 1, owner=None)  # a removal: use remove


def test_every_state_is_reachable_and_every_open_state_can_be_left():
    for table in ("documents", "submissions"):
        transitions = [t for t in states.TRANSITIONS if t.table == table]
        targets = {t.target for t in transitions}
        sources = {s for t in transitions for s in t.sources}
        for state in _states_of(table):
            assert state in targets, f"{table}: no declared move reaches {state!r}"
        final = {s.value for s in DocumentState if s.is_final} if table == "documents" else {s.value for s in SubmissionState if s.is_final}
        # Escalated submissions wait for an operator; every other open state has a way out.
        for state in set(_states_of(table)) - final - {SubmissionState.ESCALATED.value}:
            assert state in sources, f"{table}: nothing moves a row out of {state!r}"


def _state_writes_outside_the_state_machine(root: Path = REPO) -> list[str]:
    """Source locations under ``root``'s connector_core that write a ``state`` column without
    going through states.py."""
    offenders = []
    for path in sorted((root / "connector_core").rglob("*.py")):
        if "simulator" in path.parts or path.name == "states.py" or "migrations" in path.parts:
            continue
        tree = ast.parse(path.read_text("utf-8"))
        for node in ast.walk(tree):
            if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "values":
                keys = [k.arg for k in node.keywords] + [
                    k.value for arg in node.args if isinstance(arg, ast.Dict) for k in arg.keys if isinstance(k, ast.Constant)
                ]
                if "state" in keys:
                    offenders.append(f"{path.relative_to(root)}:{node.lineno}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and re.search(r"\bSET\s+state\b", node.value, re.I):
                offenders.append(f"{path.relative_to(root)}:{node.lineno}")
    return offenders


def test_states_are_written_only_through_the_state_machine():
    assert _state_writes_outside_the_state_machine() == []


def test_the_source_check_would_see_a_raw_state_write(tmp_path):
    # The check above is only worth something if it can fail: plant a raw write in a copy of
    # the package and look. (A copy, never the checkout: the other test worker scans, imports
    # and packages the checkout meanwhile.)
    copy = tmp_path / "connector_core"
    shutil.copytree(REPO / "connector_core", copy, ignore=shutil.ignore_patterns("__pycache__"))
    assert _state_writes_outside_the_state_machine(tmp_path) == []
    planted = copy / "ledger" / "_planted_for_test.py"
    planted.write_text('from sqlalchemy import update\nX = update(None).values(state="pending")\n', "utf-8")
    assert _state_writes_outside_the_state_machine(tmp_path) == ["connector_core/ledger/_planted_for_test.py:2"]


def test_the_demo_makes_only_declared_moves(tmp_path, monkeypatch):
    """The whole demo (fetch, submit, poll, write-back) on a SQLite ledger watched by triggers."""
    from connector_core.runtime import Connector
    from connector_core.settings import load_settings

    monkeypatch.chdir(tmp_path)
    # The demo's configuration in a folder of its own: its paths ("../var/demo", "demo/invoices")
    # are relative to that folder, so the state lands in tmp_path.
    (tmp_path / "config").mkdir()
    shutil.copy(REPO / "config" / "demo.toml", tmp_path / "config" / "demo.toml")
    (tmp_path / "config" / "demo").symlink_to(REPO / "config" / "demo")
    settings = load_settings(tmp_path / "config" / "demo.toml")
    assert settings.state_dir.resolve() == (tmp_path / "var" / "demo").resolve()
    url = settings.ledger_url()
    Ledger(url).close()
    state_log.install(url)
    with Connector(settings) as connector:
        summary = connector.run_once()
    assert summary.finished and summary.counts.get("valid", 0) > 0
    seen = state_log.seen(url)
    # Valid documents are watched for their cancellation window (72 h in the demo): watching, not done.
    assert ("documents", "submitting", "submitted") in seen and ("submissions", "accepted", "watching") in seen
    assert seen - state_log.DECLARED == set()


def test_the_architecture_diagram_is_the_declared_table():
    doc = (REPO / "docs" / "architecture.md").read_text("utf-8")
    assert states.mermaid_diagram() in doc, "regenerate it: python -c 'from connector_core.ledger import states; print(states.mermaid_diagram())'"


def test_the_schema_revision_has_the_state_machine_columns(engine):
    assert migrate.current_revision(engine) == migrate.head_revision()
    assert {"claimed_at", "first_sent_at"} <= set(submissions.c.keys())
