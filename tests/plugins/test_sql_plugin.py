"""SQL plugin behaviour beyond the shared contract: settings errors, the shipped DDL, bounded
memory on a large backlog, lost connections, and custom queries over an ERP's own tables."""

from __future__ import annotations

import gc
import logging
import tracemalloc
from datetime import UTC, datetime
from decimal import Decimal

import pytest
from pydantic import ValidationError
from sqlalchemy import MetaData, create_engine, event, inspect, text

from connector_core.contract import DocumentOutcome, DocumentState, Source
from connector_core.model import Invoice, RejectedRecord
from myinvois_sql import plugin
from myinvois_sql.columns import (
    CANCEL_REQUEST_COLUMNS,
    HEADER_DATA_COLUMNS,
    LIFECYCLE_COLUMNS,
    LINE_DATA_COLUMNS,
    STATUS_COLUMNS,
)
from myinvois_sql.engines import dispose_all, engine_for
from myinvois_sql.options import SqlSourceOptions
from myinvois_sql.store import SqlSourceError
from tests.plugin_contract import invalid_outcome, valid_outcome
from tests.plugins.sql_staging import DDL_DIR, StagingErp, ddl_statements, header_row, recreate_staging_tables


def sql_source(url: str, **settings) -> Source:
    return Source(name="erp", kind="sql", profile="demo", options=SqlSourceOptions.model_validate({"url": url, **settings}))


@pytest.fixture()
def sqlite_url(tmp_path):
    yield f"sqlite:///{tmp_path / 'erp.sqlite'}"
    dispose_all()


@pytest.fixture()
def sqlite_erp(sqlite_url):
    engine = create_engine(sqlite_url)
    recreate_staging_tables(engine)
    yield StagingErp(engine)
    engine.dispose()


# --- settings ---------------------------------------------------------------------------------


@pytest.mark.parametrize("setting", ["header_table", "line_table", "db_schema"])
@pytest.mark.parametrize("name", ["einvoice_header; DROP TABLE x", "erp.einvoice_header", '"quoted"', "1table", "x" * 64, ""])
def test_table_and_schema_names_must_be_plain_identifiers(setting, name):
    with pytest.raises(ValidationError) as error:
        SqlSourceOptions(url="sqlite://", **{setting: name})
    assert setting in str(error.value) and "plain table or schema name" in str(error.value)


def test_unknown_setting_is_named():
    with pytest.raises(ValidationError) as error:
        SqlSourceOptions.model_validate({"url": "sqlite://", "page_sise": 100})
    assert "page_sise" in str(error.value)


def test_custom_queries_must_use_named_parameters_they_are_offered():
    queries = {
        "pending_headers": "SELECT id AS source_key FROM inv",
        "lines": "SELECT * FROM items WHERE inv_id = :invoice_id",
        "write_result": "UPDATE inv SET st = :status WHERE id = :source_key",
    }
    with pytest.raises(ValidationError) as error:
        SqlSourceOptions.model_validate({"url": "sqlite://", "mode": "queries", "queries": queries})
    assert "queries.lines uses unknown bind parameter(s) :invoice_id" in str(error.value)
    queries["lines"] = "SELECT * FROM items WHERE inv_id = 7"
    with pytest.raises(ValidationError) as error:
        SqlSourceOptions.model_validate({"url": "sqlite://", "mode": "queries", "queries": queries})
    assert "queries.lines must use the bind parameter(s) :source_key" in str(error.value)


def test_mode_and_queries_table_must_agree():
    with pytest.raises(ValidationError, match="mode = 'queries' needs"):
        SqlSourceOptions(url="sqlite://", mode="queries")


def test_password_never_appears_in_setting_errors_or_connection_errors(caplog):
    secret = "S3cret-Pw-never-shown"
    with pytest.raises(ValidationError) as error:
        SqlSourceOptions(url=f"oracle://erp:{secret}@db/erp")
    assert secret not in str(error.value)
    # A port nothing listens on: connecting fails, and the message names the source and host.
    source = sql_source(f"postgresql://erp:{secret}@127.0.0.1:9/erp", connect_timeout_seconds=1)
    caplog.set_level(logging.DEBUG)
    with pytest.raises(SqlSourceError) as failure:
        list(plugin.fetch_pending_invoices(source=source, limit=10))
    message = str(failure.value)
    assert "source 'erp'" in message and "127.0.0.1:9" in message and "next cycle" in message
    assert secret not in message and secret not in repr(source.options) and secret not in caplog.text
    dispose_all()


def test_missing_table_is_named_with_the_ddl_to_run(sqlite_url):
    source = sql_source(sqlite_url, header_table="erp_einvoice_header")
    with pytest.raises(SqlSourceError, match="table erp_einvoice_header does not exist; create the staging tables with config/sql/staging-sqlite.sql"):
        list(plugin.fetch_pending_invoices(source=source, limit=10))


def test_init_scripts_create_the_staging_tables_once(sqlite_url):
    ddl_and_demo = [DDL_DIR / "staging-sqlite.sql", DDL_DIR / "demo-data.sql"]
    source = sql_source(sqlite_url, init_scripts=[str(p) for p in ddl_and_demo])
    records = list(plugin.fetch_pending_invoices(source=source, limit=10))
    assert [(r.source_key, type(r).__name__) for r in records] == [
        ("1001", "Invoice"), ("1002", "Invoice"), ("1003", "RejectedRecord"), ("1004", "Invoice")
    ]
    assert records[1].currency == "USD" and str(records[1].exchange_rate) == "4.4725"
    # The tables exist now: a second fetch runs nothing (the inserts would fail on the keys).
    assert len(list(plugin.fetch_pending_invoices(source=source, limit=10))) == 4


@pytest.mark.services
def test_demo_data_loads_on_postgres_and_mariadb(postgres_url, mariadb_url):
    for url, ddl in ((postgres_url, "staging-postgres.sql"), (mariadb_url, "staging-mariadb.sql")):
        engine = create_engine(url)
        with engine.begin() as conn:
            conn.execute(text("DROP TABLE IF EXISTS einvoice_line"))
            conn.execute(text("DROP TABLE IF EXISTS einvoice_header"))
        source = sql_source(url, init_scripts=[str(DDL_DIR / ddl), str(DDL_DIR / "demo-data.sql")])
        records = list(plugin.fetch_pending_invoices(source=source, limit=10))
        assert [type(r).__name__ for r in records] == ["Invoice", "Invoice", "RejectedRecord", "Invoice"], url
        assert records[0].lines[0].unit_price == Decimal("150.50")
        engine.dispose()
    dispose_all()


# --- the shipped schema -------------------------------------------------------------------------


def _assert_staging_columns(engine):
    inspector = inspect(engine)
    header = [c["name"] for c in inspector.get_columns("einvoice_header")]
    line = [c["name"] for c in inspector.get_columns("einvoice_line")]
    assert header == ["id", *HEADER_DATA_COLUMNS, *STATUS_COLUMNS, *LIFECYCLE_COLUMNS, *CANCEL_REQUEST_COLUMNS]
    assert line == ["id", "header_id", *LINE_DATA_COLUMNS]


def test_sqlite_ddl_matches_what_the_plugin_reads(sqlite_erp):
    _assert_staging_columns(sqlite_erp.engine)


@pytest.mark.services
def test_postgres_and_mariadb_ddl_match_what_the_plugin_reads(postgres_url, mariadb_url):
    for url in (postgres_url, mariadb_url):
        engine = create_engine(url)
        recreate_staging_tables(engine)
        _assert_staging_columns(engine)
        engine.dispose()


# --- unexpected data --------------------------------------------------------------------------------


def test_empty_mandatory_column_is_rejected_naming_table_key_column_and_fix(sqlite_url, sqlite_erp):
    (good,) = sqlite_erp.add(1)
    (bad,) = sqlite_erp.add(1, buyer_tin=None, supplier_msic_code=" ")
    with sqlite_erp.engine.begin() as conn:
        conn.execute(text("UPDATE einvoice_line SET unit_price = '12,50' WHERE header_id = :k AND line_no = 2"), {"k": int(bad)})
    records = list(plugin.fetch_pending_invoices(source=sql_source(sqlite_url), limit=10))
    assert isinstance(records[0], Invoice)
    rejected = records[1]
    assert isinstance(rejected, RejectedRecord)
    assert (rejected.source_key, rejected.number, rejected.location) == (bad, "INV-000002", f"einvoice_header id={bad}")
    assert rejected.errors[:2] == [
        "column supplier_msic_code is empty; fill in the supplier's 5-digit MSIC code, e.g. 46510",
        "column buyer_tin is empty; fill in the buyer's tax identification number (TIN), e.g. C58101234560",
    ]
    assert any("einvoice_line id=4 (line_no 2): column unit_price holds '12,50', which is not a number" in e for e in rejected.errors)
    assert "set its myinvois_status back to 'pending'" in rejected.errors[-1]


def test_header_without_lines_names_the_line_table(sqlite_url, sqlite_erp):
    with sqlite_erp.engine.begin() as conn:
        conn.execute(sqlite_erp.header.insert(), header_row(40))
    (record,) = plugin.fetch_pending_invoices(source=sql_source(sqlite_url), limit=10)
    assert (record.location, record.errors[0]) == ("einvoice_header id=40", "the invoice has no lines; add rows to einvoice_line with header_id=40")


def test_foreign_currency_and_credit_note_reference_are_read(sqlite_url, sqlite_erp):
    sqlite_erp.add(
        1, document_type="02", currency="usd", exchange_rate="4.4725", original_invoice_number="INV-1;INV-2", original_invoice_uuid="U1;U2"
    )
    (invoice,) = plugin.fetch_pending_invoices(source=sql_source(sqlite_url), limit=10)
    assert (invoice.document_type.value, invoice.currency, str(invoice.exchange_rate)) == ("02", "USD", "4.4725")
    assert [(r.internal_id, r.uuid) for r in invoice.original_references] == [("INV-1", "U1"), ("INV-2", "U2")]
    assert str(invoice.lines[0].taxes[0].taxable_amount) == "301.00"


# --- a large backlog ------------------------------------------------------------------------------


def test_large_backlog_is_read_in_pages_with_bounded_memory(sqlite_url, sqlite_erp):
    total, page_size = 20_000, 500
    with sqlite_erp.engine.begin() as conn:
        conn.execute(sqlite_erp.header.insert(), [header_row(key) for key in range(1, total + 1)])
        conn.execute(
            text(
                "INSERT INTO einvoice_line (header_id, line_no, description, classification_codes, quantity, unit_price, "
                "tax_type, tax_rate, tax_amount) SELECT id, 1, 'Laptop Peripherals', '022', 2, '150.50', '01', 10, '30.10' "
                "FROM einvoice_header"
            )
        )
    source = sql_source(sqlite_url, page_size=page_size)
    statements = []
    event.listen(engine_for(source.options), "before_cursor_execute", lambda *args: statements.append(args[2]))

    gc.collect()
    tracemalloc.start()
    count, last_key = 0, 0
    for invoice in plugin.fetch_pending_invoices(source=source, limit=total):
        assert isinstance(invoice, Invoice) and int(invoice.source_key) > last_key
        last_key = int(invoice.source_key)
        count += 1
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()

    assert count == total
    header_reads = [s for s in statements if "FROM einvoice_header" in s]
    assert len(header_reads) == total // page_size
    # Holding all 20,000 invoices would take about 230 MB (11 KB each, measured); paging by 500
    # peaks near 6 MB. The bound leaves room for allocator noise, not for a second page.
    print(f"peak traced memory {peak / 1e6:.1f} MB over {total} invoices, page size {page_size}")
    assert peak < 16 * 1024 * 1024, f"peak {peak / 1e6:.1f} MB while reading {total} invoices"


def _live_metadata() -> int:
    gc.collect()
    return sum(1 for obj in gc.get_objects() if isinstance(obj, MetaData))


def _one_cycle_of_hooks(source: Source, erp: StagingErp) -> None:
    keys = erp.add(2)
    invoices = [i for i in plugin.fetch_pending_invoices(source=source, limit=10) if isinstance(i, Invoice)]
    plugin.on_invoices_recorded(source=source, source_keys=keys)
    plugin.on_submission_result(source=source, outcomes=[valid_outcome(invoice) for invoice in invoices])


def test_a_source_keeps_one_store_across_hook_calls_and_memory_stays_flat(sqlite_url, sqlite_erp):
    source = sql_source(sqlite_url)
    _one_cycle_of_hooks(source, sqlite_erp)
    store = plugin._store(source)
    # The same configuration read again (equal options, a new object) is the same source.
    assert plugin._store(sql_source(sqlite_url)) is store
    before = _live_metadata()
    for _ in range(20):
        _one_cycle_of_hooks(source, sqlite_erp)
    # Made per call, each store's MetaData stayed alive in the engine's statement cache: 60
    # more here. Kept per source, not one more.
    assert _live_metadata() == before
    assert plugin._store(source) is store
    assert [sqlite_erp.status(str(key)).status for key in range(1, 43)] == ["valid"] * 42


def test_sources_with_other_settings_or_names_get_stores_of_their_own(sqlite_url, sqlite_erp):
    store = plugin._store(sql_source(sqlite_url))
    other_table = plugin._store(sql_source(sqlite_url, header_table="erp_einvoice_header"))
    assert other_table is not store and other_table.options.header_table == "erp_einvoice_header"
    renamed = Source(name="erp2", kind="sql", profile="demo", options=SqlSourceOptions(url=sqlite_url))
    assert plugin._store(renamed) is not store and plugin._store(renamed).source_name == "erp2"
    # Engines disposed (a clean shutdown, or tests): the next call makes a store on the new engine.
    dispose_all()
    again = plugin._store(sql_source(sqlite_url))
    assert again is not store and again.engine is engine_for(SqlSourceOptions(url=sqlite_url))


# --- lost connections ---------------------------------------------------------------------------------


def _outcomes_for(source, count=2):
    invoices = list(plugin.fetch_pending_invoices(source=source, limit=count))
    return invoices, [valid_outcome(invoices[0]), invalid_outcome(invoices[1])]


def _kill_own_connection_on_first_update(engine, kill):
    """Kill the plugin's own database session the moment it sends its first write-back UPDATE,
    as a database restart or a network cut mid-cycle would."""
    fired = []

    @event.listens_for(engine, "before_cursor_execute")
    def cut(conn, cursor, statement, parameters, context, executemany):  # noqa: ARG001
        if statement.lstrip().upper().startswith("UPDATE") and not fired:
            fired.append(statement)
            kill(conn.connection.dbapi_connection)

    return fired, cut


def _assert_write_back_survives_a_lost_connection(url, kill):
    engine = create_engine(url)
    recreate_staging_tables(engine)
    erp = StagingErp(engine)
    keys = erp.add(2)
    source = sql_source(url)
    plugin_engine = engine_for(source.options)
    invoices, outcomes = _outcomes_for(source)

    # Between cycles: every session of the plugin is killed; the next call reconnects.
    with plugin_engine.connect() as conn:
        kill(conn.connection.dbapi_connection)
    assert [i.source_key for i in plugin.fetch_pending_invoices(source=source, limit=10)] == keys

    # During a write-back: the batch fails as a whole and nothing of it is written ...
    fired, listener = _kill_own_connection_on_first_update(plugin_engine, kill)
    with pytest.raises(SqlSourceError, match="writing 2 outcome\\(s\\).*next cycle tries again"):
        plugin.on_submission_result(source=source, outcomes=outcomes)
    event.remove(plugin_engine, "before_cursor_execute", listener)
    assert fired and [erp.status(k).status for k in keys] == [None, None]

    # ... the next cycle writes all of it, and a repeat after that changes nothing.
    plugin.on_submission_result(source=source, outcomes=outcomes)
    written = [erp.row(k) for k in keys]
    assert [r["myinvois_status"] for r in written] == ["valid", "invalid"]
    assert written[0]["myinvois_uuid"] == outcomes[0].uuid and written[0]["myinvois_version"] == 1
    plugin.on_submission_result(source=source, outcomes=outcomes)
    assert [erp.row(k) for k in keys] == written
    engine.dispose()
    dispose_all()


@pytest.mark.services
def test_postgres_connection_terminated_mid_cycle(postgres_url):
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")

    def terminate(dbapi_connection):
        with admin.connect() as conn:
            conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": dbapi_connection.info.backend_pid})

    _assert_write_back_survives_a_lost_connection(postgres_url, terminate)
    admin.dispose()


@pytest.mark.services
def test_mariadb_connection_killed_mid_cycle(mariadb_url):
    admin = create_engine(mariadb_url, isolation_level="AUTOCOMMIT")

    def kill(dbapi_connection):
        with admin.connect() as conn:
            conn.execute(text(f"KILL CONNECTION {int(dbapi_connection.thread_id())}"))

    _assert_write_back_survives_a_lost_connection(mariadb_url, kill)
    admin.dispose()


def test_sqlite_engine_disposed_between_calls(sqlite_url, sqlite_erp):
    keys = sqlite_erp.add(2)
    source = sql_source(sqlite_url)
    invoices, outcomes = _outcomes_for(source)
    dispose_all()
    plugin.on_invoices_recorded(source=source, source_keys=keys)
    dispose_all()
    plugin.on_submission_result(source=source, outcomes=outcomes)
    dispose_all()
    plugin.on_submission_result(source=source, outcomes=outcomes)
    assert [sqlite_erp.status(k).status for k in keys] == ["valid", "invalid"]


# --- custom queries over an ERP's own tables ---------------------------------------------------------

ERP_SCHEMA = [
    """CREATE TABLE ar_invoice (
        doc_no VARCHAR(20) PRIMARY KEY, customer_code VARCHAR(10) NOT NULL, posted INTEGER NOT NULL,
        einv_state VARCHAR(20), einv_uuid VARCHAR(64), einv_link VARCHAR(300), einv_message TEXT, einv_version INTEGER)""",
    """CREATE TABLE customer (code VARCHAR(10) PRIMARY KEY, name VARCHAR(100), tin VARCHAR(14), brn VARCHAR(20),
        street VARCHAR(100), town VARCHAR(50), state_code VARCHAR(2), phone VARCHAR(20))""",
    """CREATE TABLE ar_invoice_item (doc_no VARCHAR(20), seq INTEGER, text VARCHAR(100), qty NUMERIC, price NUMERIC,
        sst_code VARCHAR(2), sst_amount NUMERIC)""",
]

ERP_QUERIES = {
    # The supplier is the ERP's own company: constants in the SELECT are fine (they are not data
    # from outside); the key is doc_no, aliased as source_key.
    "pending_headers": """
        SELECT i.doc_no AS source_key, i.doc_no AS invoice_number,
               'Syarikat Demo Sdn. Bhd.' AS supplier_name, 'C25845632020' AS supplier_tin,
               '202001234567' AS supplier_id_value, '46510' AS supplier_msic_code,
               'Lot 66, Bangunan Merdeka' AS supplier_address_line1, 'Kuala Lumpur' AS supplier_city,
               '14' AS supplier_state, '+60123456789' AS supplier_phone,
               c.name AS buyer_name, c.tin AS buyer_tin, c.brn AS buyer_id_value, c.street AS buyer_address_line1,
               c.town AS buyer_city, c.state_code AS buyer_state, c.phone AS buyer_phone
        FROM ar_invoice i JOIN customer c ON c.code = i.customer_code
        WHERE i.posted = 1 AND (i.einv_state IS NULL OR i.einv_state = 'pending')""",
    "lines": """
        SELECT seq AS line_no, text AS description, '022' AS classification_codes, qty AS quantity,
               price AS unit_price, sst_code AS tax_type, sst_amount AS tax_amount
        FROM ar_invoice_item WHERE doc_no = :source_key ORDER BY seq""",
    "mark_queued": "UPDATE ar_invoice SET einv_state = 'queued' WHERE doc_no = :source_key AND einv_state IS NULL",
    "write_result": """
        UPDATE ar_invoice SET einv_state = :status, einv_uuid = :uuid, einv_link = :validation_link,
               einv_message = :errors, einv_version = :version
        WHERE doc_no = :source_key AND (einv_version IS NULL OR einv_version < :version)""",
}


def test_custom_queries_read_and_write_an_erps_own_tables(sqlite_url):
    engine = create_engine(sqlite_url)
    with engine.begin() as conn:
        for statement in ERP_SCHEMA:
            conn.execute(text(statement))
        conn.execute(
            text("INSERT INTO customer VALUES ('K1', 'Pelanggan Contoh Sdn. Bhd.', 'C58101234560', '200501012345', "
                 "'No. 8, Jalan Contoh', 'Shah Alam', '10', '+60387654321')")
        )
        conn.execute(text("INSERT INTO customer (code, name) VALUES ('K2', 'Walk-in without TIN')"))
        for number, customer, posted in (("A-0003", "K1", 1), ("A-0001", "K1", 1), ("A-0002", "K2", 1), ("A-0004", "K1", 0)):
            conn.execute(text("INSERT INTO ar_invoice (doc_no, customer_code, posted) VALUES (:n, :c, :p)"), {"n": number, "c": customer, "p": posted})
            conn.execute(text("INSERT INTO ar_invoice_item VALUES (:n, 1, 'Toner', 3, 45.5, '01', 13.65)"), {"n": number})
    source = sql_source(sqlite_url, mode="queries", queries=ERP_QUERIES, page_size=1)

    records = list(plugin.fetch_pending_invoices(source=source, limit=10))
    assert [r.source_key for r in records] == ["A-0001", "A-0002", "A-0003"]
    assert isinstance(records[0], Invoice) and records[0].lines[0].total_excluding_tax == 136.5
    assert isinstance(records[1], RejectedRecord)
    assert records[1].location == "queries.pending_headers source_key=A-0002"
    assert "column buyer_tin is empty" in " ".join(records[1].errors)

    plugin.on_invoices_recorded(source=source, source_keys=["A-0001", "A-0002"])
    assert [r.source_key for r in plugin.fetch_pending_invoices(source=source, limit=10)] == ["A-0003"]
    outcome = valid_outcome(records[0])
    plugin.on_submission_result(source=source, outcomes=[outcome, outcome])
    rejected = DocumentOutcome("A-0002", "A-0002", 1, DocumentState.LOCALLY_INVALID, errors=records[1].errors,
                               final_at=datetime(2026, 11, 24, tzinfo=UTC))
    plugin.on_submission_result(source=source, outcomes=[rejected])
    with engine.connect() as conn:
        rows = conn.execute(text("SELECT doc_no, einv_state, einv_uuid, einv_version FROM ar_invoice ORDER BY doc_no")).all()
        message = conn.execute(text("SELECT einv_message FROM ar_invoice WHERE doc_no = 'A-0002'")).scalar_one()
    assert [tuple(r) for r in rows] == [
        ("A-0001", "valid", outcome.uuid, 1),
        ("A-0002", "locally_invalid", None, 1),
        ("A-0003", None, None, None),
        ("A-0004", None, None, None),
    ]
    assert "buyer_tin is empty" in message
    engine.dispose()


def test_custom_header_query_without_required_columns_names_the_setting(sqlite_url, sqlite_erp):
    sqlite_erp.add(1)
    queries = dict(
        ERP_QUERIES,
        pending_headers="SELECT id AS source_key, invoice_number FROM einvoice_header",
        lines="SELECT * FROM einvoice_line WHERE header_id = :source_key",
    )
    source = sql_source(sqlite_url, mode="queries", queries=queries)
    with pytest.raises(SqlSourceError, match="queries.pending_headers returns no column\\(s\\) supplier_tin, buyer_tin"):
        list(plugin.fetch_pending_invoices(source=source, limit=10))


def test_custom_header_query_without_source_key_names_the_setting(sqlite_url, sqlite_erp):
    sqlite_erp.add(1)
    queries = dict(ERP_QUERIES, pending_headers="SELECT id, invoice_number FROM einvoice_header")
    source = sql_source(sqlite_url, mode="queries", queries=queries)
    # Said on every call: the source's store, kept between calls, remembers the answer.
    for _ in range(2):
        with pytest.raises(SqlSourceError, match="queries.pending_headers returns no source_key column"):
            list(plugin.fetch_pending_invoices(source=source, limit=10))


@pytest.mark.services
def test_postgres_connection_terminated_between_pages_of_one_fetch(postgres_url):
    engine = create_engine(postgres_url)
    recreate_staging_tables(engine)
    keys = StagingErp(engine).add(3)
    source = sql_source(postgres_url, page_size=1)
    admin = create_engine(postgres_url, isolation_level="AUTOCOMMIT")
    records = plugin.fetch_pending_invoices(source=source, limit=10)
    first = next(records)
    # Every session of the plugin dies while the connector works on the first page.
    with admin.connect() as conn:
        conn.execute(
            text("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = current_database() AND pid <> pg_backend_pid()")
        )
    assert [first.source_key, *(r.source_key for r in records)] == keys
    admin.dispose()
    engine.dispose()
    dispose_all()


@pytest.mark.services
def test_postgres_staging_tables_in_their_own_schema(postgres_url):
    engine = create_engine(postgres_url)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS erp_staging CASCADE"))
        conn.execute(text("CREATE SCHEMA erp_staging"))
        conn.execute(text("SET LOCAL search_path TO erp_staging"))
        for statement in ddl_statements("postgresql"):
            conn.execute(text(statement))
        conn.execute(text("INSERT INTO einvoice_header (id, invoice_number) VALUES (7, 'INV-7')"))
    source = sql_source(postgres_url, db_schema="erp_staging")
    (record,) = plugin.fetch_pending_invoices(source=source, limit=10)
    assert (record.source_key, record.location) == ("7", "einvoice_header id=7")
    plugin.on_invoices_recorded(source=source, source_keys=["7"])
    with engine.connect() as conn:
        assert conn.execute(text("SELECT myinvois_status FROM erp_staging.einvoice_header")).scalar_one() == "queued"
        conn.execute(text("DROP SCHEMA erp_staging CASCADE"))
        conn.commit()
    engine.dispose()
    dispose_all()
