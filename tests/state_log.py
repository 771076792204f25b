"""Watch every state change a SQLite ledger sees, whoever makes it, with triggers.

The state machine (connector_core/ledger/states.py) declares every allowed move; the code is
meant to move states only through it. Triggers record what the database actually saw, so a
move written any other way, or a move nobody declared, shows up in a test run."""

from __future__ import annotations

from sqlalchemy import create_engine, text

from connector_core.ledger.states import TRANSITIONS

DECLARED = {(t.table, source, t.target) for t in TRANSITIONS for source in (t.sources or (None,))}


def install(url: str) -> None:
    engine = create_engine(url)
    with engine.begin() as conn:
        conn.execute(text("CREATE TABLE IF NOT EXISTS test_state_log (tbl TEXT, old TEXT, new TEXT)"))
        for table in ("documents", "submissions"):
            conn.execute(
                text(
                    f"CREATE TRIGGER IF NOT EXISTS log_{table}_update AFTER UPDATE OF state ON {table} "
                    f"WHEN OLD.state IS NOT NEW.state BEGIN "
                    f"INSERT INTO test_state_log VALUES ('{table}', OLD.state, NEW.state); END"
                )
            )
            conn.execute(
                text(
                    f"CREATE TRIGGER IF NOT EXISTS log_{table}_insert AFTER INSERT ON {table} BEGIN "
                    f"INSERT INTO test_state_log VALUES ('{table}', NULL, NEW.state); END"
                )
            )
    engine.dispose()


def seen(url: str) -> set[tuple[str, str | None, str]]:
    engine = create_engine(url)
    with engine.connect() as conn:
        rows = {(r.tbl, r.old, r.new) for r in conn.execute(text("SELECT DISTINCT tbl, old, new FROM test_state_log"))}
    engine.dispose()
    return rows


def undeclared(url: str) -> set[tuple[str, str | None, str]]:
    return seen(url) - DECLARED
