"""Invoice JSON and sent bytes in ``document_bodies``: moved there by migration 0004 on every
backend, written once, read by whoever needs them, pruned once final and past the retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from alembic import command
from sqlalchemy import create_engine, inspect, select, text, update

from connector_core.ledger import BuiltDocument, DocumentStatusUpdate, FetchedItem, Ledger, migrate
from connector_core.ledger.bodies import BodyPruned
from connector_core.ledger.schema import document_bodies, documents, metadata
from connector_core.contract import DocumentState


@pytest.fixture(scope="module", params=["sqlite", "postgresql", "mariadb"])
def database_url(request, tmp_path_factory):
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path_factory.mktemp('bodies') / 'ledger.sqlite'}"
        return
    url = request.getfixturevalue("postgres_url" if request.param == "postgresql" else "mariadb_url")
    yield url
    _drop_everything(url)


def _drop_everything(url: str) -> None:
    engine = create_engine(url)
    metadata.drop_all(engine)
    with engine.begin() as conn:
        conn.execute(text("DROP TABLE IF EXISTS alembic_version"))
    engine.dispose()


@pytest.fixture()
def ledger(database_url):
    _drop_everything(database_url)
    led = Ledger(database_url)
    yield led
    led.close()


def item(key: str, body: str = '{"invoice": 1}', fingerprint: str = "a") -> FetchedItem:
    return FetchedItem(source_key=key, number=key, fingerprint=fingerprint * 64, invoice_json=body, document_type="01")


def claim(led: Ledger, content: str = '{"doc": 1}') -> int:
    pending = led.sends.pending_documents("p", 100)
    now = datetime.now(UTC).replace(microsecond=0)
    built = [BuiltDocument(d.id, d.number, d.fingerprint, content, "h" * 64, now, fresh=True) for d in pending]
    result = led.sends.claim(profile="p", built=built)
    assert result.submission_id is not None
    return result.submission_id


def validate(led: Ledger, sub_id: int, accepted: list[str], valid: list[str]) -> None:
    """MyInvois accepts ``accepted`` and validates ``valid`` of them; the rest stay submitted."""
    if accepted:
        led.sends.submission_accepted(
            sub_id, submission_uid="SUB", accepted=[(k, f"U-{k}") for k in accepted], rejected=[], next_poll_at=None
        )
    led.polls.record_poll(
        sub_id,
        overall_status="InProgress",
        updates=[DocumentStatusUpdate(uuid=f"U-{k}", state=DocumentState.VALID) for k in valid],
        next_poll_at=None,
    )


# --- the migration ------------------------------------------------------------------------


def test_migration_0004_moves_every_body_and_keeps_every_row(database_url):
    """A ledger at 0003 with real rows: a pending one with its JSON, a sent one with its bytes
    too, and a locally invalid one with neither. After the upgrade the bytes are identical, in
    the side table, and the old columns are gone."""
    _drop_everything(database_url)
    engine = create_engine(database_url)
    with migrate.migration_lock(engine) as conn:
        cfg = migrate._config()
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "0003")
    big = '{"Invoice": "' + "é" * 70_000 + '"}'  # over MariaDB's 64 KB TEXT, not ASCII
    now = datetime(2026, 12, 1, tzinfo=UTC)
    common = {"source": "s", "version": 1, "profile": "p", "fetched_at": now, "updated_at": now, "attempts": 0}
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO documents (source, source_key, version, fingerprint, profile, number, state, "
                "invoice_json, document, document_hash, attempts, fetched_at, updated_at, refused_as_batch, "
                "report_attempts) VALUES (:source, :key, :version, :fp, :profile, :key, :state, :invoice, :document, "
                ":hash, :attempts, :fetched_at, :updated_at, :false, 0)"
            ),
            [
                {**common, "key": "A", "fp": "a" * 64, "state": "pending", "invoice": big, "document": None,
                 "hash": None, "false": False},
                {**common, "key": "B", "fp": "b" * 64, "state": "valid", "invoice": '{"b": 1}', "document": big,
                 "hash": "h" * 64, "false": False},
                {**common, "key": "C", "fp": "c" * 64, "state": "locally_invalid", "invoice": None, "document": None,
                 "hash": None, "false": False},
            ],
        )  # fmt: skip
    engine.dispose()

    led = Ledger(database_url)  # upgrades to head
    try:
        assert led.schema_revision() == migrate.head_revision()
        columns = {c["name"] for c in inspect(led.engine).get_columns("documents")}
        assert "invoice_json" not in columns and "document" not in columns
        rows = {d["source_key"]: d for d in led.status.find_documents(source="s")}
        assert [(k, rows[k]["state"], rows[k]["invoice_json"], rows[k]["document"]) for k in "ABC"] == [
            ("A", "pending", big, None),
            ("B", "valid", '{"b": 1}', big),
            ("C", "locally_invalid", None, None),
        ]
        with led.engine.connect() as conn:
            assert len(conn.execute(select(document_bodies.c.document_id)).all()) == 2
        # The migrated pending row is built and claimed like any other.
        (pending,) = led.sends.pending_documents("p", 10)
        assert pending.invoice_json == big
    finally:
        led.close()


# --- written once, read by whoever needs them ----------------------------------------------


def test_the_claim_stores_the_exact_bytes_and_a_resend_reads_them(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A", '{"a": "ü"}')])
    (pending,) = ledger.sends.pending_documents("p", 10)
    assert pending.invoice_json == '{"a": "ü"}' and pending.document is None
    sub_id = claim(ledger, '{"exact": "bytes ü"}')
    ledger.sends.submission_in_doubt(sub_id, "answer lost")
    # What reconciliation re-sends: the stored bytes, identical.
    (sub,) = ledger.sends.unresolved_submissions("p")
    assert [d.document for d in sub.documents] == ['{"exact": "bytes ü"}']
    assert ledger.polls.document_content(sub.documents[0].id) == ('{"exact": "bytes ü"}', "h" * 64)


def test_an_edit_before_the_claim_replaces_the_json_and_drops_the_bytes(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A", '{"v": 1}')])
    (pending,) = ledger.sends.pending_documents("p", 10)
    # Bytes built earlier and kept (as a claim lost to a not-sent answer leaves them).
    with ledger.engine.begin() as conn:
        conn.execute(update(document_bodies).values(document='{"old": 1}'))
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A", '{"v": 2}', fingerprint="b")])
    (edited,) = ledger.sends.pending_documents("p", 10)
    assert (edited.id, edited.invoice_json, edited.document) == (pending.id, '{"v": 2}', None)


def test_a_row_without_a_body_still_keeps_the_bytes_it_was_claimed_with(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item("A")])
    with ledger.engine.begin() as conn:
        conn.execute(document_bodies.delete())
    sub_id = claim(ledger, '{"kept": 1}')
    assert [d.document for d in ledger.polls.documents_of(sub_id)] == ['{"kept": 1}']


# --- retention ----------------------------------------------------------------------------


def test_pruning_drops_only_bodies_of_documents_final_for_longer_than_the_retention(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item(k) for k in ("OLD", "NEW", "SENT")])
    first = claim(ledger)
    validate(ledger, first, ["OLD", "NEW", "SENT"], ["OLD", "NEW"])  # "SENT" in flight: never pruned
    ledger.intake.record_fetched(source="s", profile="p", items=[item("WAIT")])  # pending: never pruned
    ten_days_ago = datetime.now(UTC) - timedelta(days=10)
    with ledger.engine.begin() as conn:
        conn.execute(update(documents).where(documents.c.source_key == "OLD").values(final_at=ten_days_ago))
    ids = {d["source_key"]: d["id"] for d in ledger.status.find_documents(source="s")}

    assert ledger.bodies.prune(keep_days=7) == 1
    assert ledger.bodies.prune(keep_days=7) == 0  # nothing twice
    with pytest.raises(BodyPruned, match="final and its invoice JSON and built bytes were pruned"):
        ledger.bodies.content(ids["OLD"])
    assert ledger.bodies.content(ids["NEW"]) == ('{"invoice": 1}', '{"doc": 1}')
    assert ledger.bodies.content(ids["SENT"])[1] == '{"doc": 1}'
    assert ledger.bodies.content(ids["WAIT"]) == ('{"invoice": 1}', None)
    old = next(d for d in ledger.status.find_documents(source="s") if d["source_key"] == "OLD")
    # What an audit needs stays on the row.
    assert (old["state"], old["uuid"], old["document_hash"], old["invoice_json"], old["document"]) == (
        "valid", "U-OLD", "h" * 64, None, None,
    )  # fmt: skip
    assert ledger.polls.document_content(ids["OLD"]) == (None, "h" * 64)
    assert ledger.bodies.stored() == {"kept": 3}

    # Later, past the retention for the other one too; one batch at a time.
    assert ledger.bodies.prune(keep_days=7, now=datetime.now(UTC) + timedelta(days=8), batch=1) == 1
    assert ledger.bodies.stored() == {"kept": 2}


def test_pruning_continues_where_it_stopped_and_still_finds_documents_final_since(ledger):
    ledger.intake.record_fetched(source="s", profile="p", items=[item(f"K{i}") for i in range(5)])
    sub_id = claim(ledger)
    validate(ledger, sub_id, [f"K{i}" for i in range(5)], [f"K{i}" for i in range(3)])
    later = datetime.now(UTC) + timedelta(days=31)
    assert ledger.bodies.prune(keep_days=30, now=later, batch=2) == 3
    assert ledger.bodies.prune(keep_days=30, now=later) == 0
    # Two more become final after that pruning: the next run past their retention finds them.
    validate(ledger, sub_id, [], ["K3", "K4"])
    assert ledger.bodies.prune(keep_days=30, now=later + timedelta(days=31)) == 2
    assert ledger.bodies.stored() == {"kept": 0}


def test_the_daemons_pruning_runs_at_most_once_a_minute_and_counts_what_it_removed(ledger, monkeypatch):
    from connector_core.ledger import bodies

    ledger.intake.record_fetched(source="s", profile="p", items=[item("A"), item("B")])
    sub_id = claim(ledger)
    validate(ledger, sub_id, ["A", "B"], ["A"])
    with ledger.engine.begin() as conn:
        conn.execute(
            update(documents).where(documents.c.final_at.is_not(None)).values(final_at=datetime(2026, 1, 1, tzinfo=UTC))
        )
    clock = [1000.0]
    monkeypatch.setattr(bodies.time, "monotonic", lambda: clock[0])
    assert ledger.bodies.prune_if_due(keep_days=3) == 1
    validate(ledger, sub_id, [], ["B"])
    with ledger.engine.begin() as conn:
        conn.execute(
            update(documents).where(documents.c.source_key == "B").values(final_at=datetime(2026, 1, 2, tzinfo=UTC))
        )
    clock[0] += bodies.PRUNE_EVERY_SECONDS - 1
    assert ledger.bodies.prune_if_due(keep_days=3) == 0  # not yet: B waits for the next look
    clock[0] += 1
    assert ledger.bodies.prune_if_due(keep_days=3) == 1
    assert ledger.journal.counter_values()["bodies_pruned"] == 2
    assert ledger.bodies.stored() == {"kept": 0}
