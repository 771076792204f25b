"""``myinvois-connector doctor`` exercises each source through the ``check_source`` hook, and
checks URLs, paths and the Sentry DSN; it exits with the code of the most severe failure and
never records anything (no ledger is created, nothing in the ERP is marked).

Real parts: the command line in a subprocess, the Odoo stand-in over XML-RPC, the real
PostgreSQL server, the in-process simulator for the login check.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from myinvois_csv.options import CsvSourceOptions
from sqlalchemy import create_engine
from sqlalchemy.engine import make_url

from connector_core.contract import Source, SourceCheck
from connector_core.exitcodes import ExitCode
from connector_core.plugins import HookFailed, PluginHost
from tests.core.test_source_failures import (
    API_KEY,
    DB_PASSWORD,
    LOGIN,
    WRONG_KEY,
    odoo_source,
    run_cli,
    sql_source,
    write_config,
)
from tests.odoo_standin import OdooStandin, create_move, seed_demo_company
from tests.plugins.sql_staging import StagingErp, recreate_staging_tables

COMPANY = {
    "name": "Syarikat Demo Sdn. Bhd.",
    "tin": "C25845632020",
    "id_type": "BRN",
    "id_value": "202001234567",
    "msic_code": "46510",
    "business_activity": "Wholesale",
    "phone": "+60312345678",
    "address": {"lines": ["Lot 66"], "city": "Kuala Lumpur", "postal_zone": "50480", "state": "14"},
}


@pytest.fixture()
def odoo():
    with OdooStandin(version="17.0") as standin:
        standin.add_user(LOGIN, API_KEY)
        yield standin


def lines(result, check: str) -> list[str]:
    return [line for line in result.stdout.splitlines() if f"] {check}: " in line]


def assert_nothing_recorded(config: Path) -> None:
    assert not (config.parent / "state" / "ledger.sqlite").exists(), "doctor created a ledger"


# --- Odoo -------------------------------------------------------------------------------------


def test_doctor_check_source_reads_one_odoo_invoice_and_the_write_right_without_writing(tmp_path, odoo):
    demo = seed_demo_company(odoo)
    create_move(odoo, demo)
    config = write_config(tmp_path, odoo_source(odoo.url, API_KEY))
    result = run_cli(config, "doctor")
    assert result.returncode == ExitCode.OK, result.stdout + result.stderr
    found = lines(result, "source books")
    assert any("[ok  ]" in line and f"logged in to Odoo 17 at {odoo.url}" in line for line in found), found
    assert any("first pending invoice" in line and "reads" in line for line in found), found
    assert any(f"write-back: Odoo user '{LOGIN}' may modify invoices" in line for line in found), found
    assert odoo.object_calls(method="write") == [] and odoo.object_calls(method="message_post") == []
    assert_nothing_recorded(config)


def test_doctor_fails_with_source_unavailable_on_a_wrong_odoo_key(tmp_path, odoo):
    config = write_config(tmp_path, odoo_source(odoo.url, WRONG_KEY))
    result = run_cli(config, "doctor")
    assert result.returncode == ExitCode.SOURCE_UNAVAILABLE, result.stdout + result.stderr
    (line,) = lines(result, "source books")
    assert line.startswith("[FAIL]") and f"refused login '{LOGIN}' on database 'demo'" in line and "api_key" in line
    assert WRONG_KEY not in result.stdout + result.stderr
    assert_nothing_recorded(config)


def test_doctor_fails_when_the_odoo_user_may_not_modify_invoices(tmp_path, odoo):
    odoo.users[LOGIN].read_only = True
    config = write_config(tmp_path, odoo_source(odoo.url, API_KEY))
    result = run_cli(config, "doctor")
    assert result.returncode == ExitCode.SOURCE_UNAVAILABLE, result.stdout
    assert any(
        line.startswith("[FAIL]") and "may not modify invoices" in line and "Accounting / Billing" in line
        for line in lines(result, "source books")
    ), result.stdout


# --- SQL on PostgreSQL ------------------------------------------------------------------------


def test_doctor_fails_on_a_missing_postgres_database_naming_host_and_database_not_the_password(tmp_path, postgres_url):
    missing = make_url(postgres_url).set(database="myinvois_no_such_database", password=DB_PASSWORD)
    config = write_config(tmp_path, sql_source(missing.render_as_string(hide_password=False)))
    result = run_cli(config, "doctor")
    assert result.returncode == ExitCode.SOURCE_UNAVAILABLE, result.stdout + result.stderr
    (line,) = lines(result, "source erp")
    assert line.startswith("[FAIL]") and "127.0.0.1:5432/myinvois_no_such_database" in line
    assert 'database "myinvois_no_such_database" does not exist' in line
    assert DB_PASSWORD not in result.stdout + result.stderr
    assert_nothing_recorded(config)


def test_doctor_reads_one_page_of_the_staging_table_and_marks_nothing(tmp_path, postgres_url):
    engine = create_engine(postgres_url)
    try:
        recreate_staging_tables(engine)
        erp = StagingErp(engine)
        (key,) = erp.add(1)
        config = write_config(tmp_path, sql_source(postgres_url))
        result = run_cli(config, "doctor")
        assert result.returncode == ExitCode.OK, result.stdout + result.stderr
        found = "\n".join(lines(result, "source erp"))
        assert f"read table einvoice_header: first pending invoice: key {key}, number INV-{int(key):06d}" in found
        assert "write-back: user postgres may UPDATE table einvoice_header" in found
        assert erp.status(key).status is None, "doctor marked the invoice"
        assert_nothing_recorded(config)
    finally:
        engine.dispose()


def test_doctor_reports_a_missing_staging_table_with_the_fix(tmp_path, postgres_url):
    engine = create_engine(postgres_url)
    try:
        recreate_staging_tables(engine)
        with engine.begin() as conn:
            conn.exec_driver_sql("DROP TABLE einvoice_line")
            conn.exec_driver_sql("DROP TABLE einvoice_header")
    finally:
        engine.dispose()
    config = write_config(tmp_path, sql_source(postgres_url))
    result = run_cli(config, "doctor")
    assert result.returncode == ExitCode.SOURCE_UNAVAILABLE, result.stdout
    assert any(
        "[FAIL]" in line and "table einvoice_header does not exist" in line and "staging-*.sql" in line
        for line in lines(result, "source erp")
    ), result.stdout

    # With init_scripts the first run would create it, if it can read them.
    missing_script = tmp_path / "no-such-ddl.sql"
    config = write_config(tmp_path, sql_source(postgres_url) + f'init_scripts = ["{missing_script}"]\n')
    result = run_cli(config, "doctor")
    assert result.returncode == ExitCode.SOURCE_UNAVAILABLE, result.stdout
    assert any("[FAIL]" in line and f"cannot be read: {missing_script}" in line for line in lines(result, "source erp")), result.stdout
    missing_script.write_text("CREATE TABLE einvoice_header (id INTEGER PRIMARY KEY);\n", encoding="utf-8")
    result = run_cli(config, "doctor")
    assert result.returncode == ExitCode.OK, result.stdout
    assert any("the first run creates it with init_scripts" in line for line in lines(result, "source erp")), result.stdout
    from sqlalchemy import inspect

    engine = create_engine(postgres_url)
    try:
        assert not inspect(engine).has_table("einvoice_header"), "doctor ran the init_scripts"
    finally:
        engine.dispose()


# --- CSV, paths, URLs, Sentry ------------------------------------------------------------------


def csv_source(inbox: Path, outbox: Path) -> str:
    company = ", ".join(
        f'{k} = "{v}"' for k, v in COMPANY.items() if isinstance(v, str)
    ) + ', address = { lines = ["Lot 66"], city = "Kuala Lumpur", postal_zone = "50480", state = "14" }'
    return f"""
[sources.files]
kind = "csv"
profile = "demo"

[sources.files.options]
inbox = "{inbox}"
archive = "{inbox.parent / 'archive'}"
outbox = "{outbox}"
company = {{ {company} }}
"""


def test_doctor_check_source_of_csv_reads_the_inbox_and_fails_on_an_unusable_outbox(tmp_path):
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    (inbox / "a.csv").write_text("not,the,columns\n1,2,3\n", encoding="utf-8")
    blocker = tmp_path / "blocker"
    blocker.write_text("a file where the outbox folder should be", encoding="utf-8")
    config = write_config(tmp_path, csv_source(inbox, blocker / "results.csv"))
    result = run_cli(config, "doctor")
    assert result.returncode == ExitCode.SOURCE_UNAVAILABLE, result.stdout + result.stderr
    found = lines(result, "source files")
    assert any(line.startswith("[ok  ]") and "1 file(s) waiting; read a.csv: its first record is refused" in line for line in found), found
    assert any(line.startswith("[FAIL]") and "option outbox" in line for line in found), found
    assert (inbox / "a.csv").exists() and not (tmp_path / "archive").exists(), "doctor moved or created files"


def test_doctor_checks_paths_and_urls_and_names_the_sentry_project(tmp_path):
    (tmp_path / "state").write_text("a file, not a folder", encoding="utf-8")
    (tmp_path / "inbox").mkdir()
    config = write_config(tmp_path, csv_source(tmp_path / "inbox", tmp_path / "out.csv"))
    text = config.read_text(encoding="utf-8").replace(
        'environment = "simulator"', 'environment = "simulator"\napi_base_url = "http://127.0.0.1:9"'
    )
    text = text.replace("[observability]", '[observability]\nsentry_dsn = "https://0123456789abcdef@o42.ingest.example.io/4242"')
    config.write_text(text, encoding="utf-8")
    result = run_cli(config, "doctor", "--no-login")
    out = result.stdout
    # state_dir is a configuration failure (2), the unreachable API a MyInvois one (5): the most severe wins.
    assert result.returncode == ExitCode.MYINVOIS_UNAVAILABLE, out + result.stderr
    assert "[FAIL] api: http://127.0.0.1:9 cannot be reached" in out
    assert any(line.startswith("[FAIL] paths: state_dir") and "not a folder" in line for line in out.splitlines()), out
    assert "[ok  ] urls: api_base_url: http://127.0.0.1:9" in out
    assert "[ok  ] sentry: observability.sentry_dsn: errors go to project 4242 at o42.ingest.example.io" in out
    assert "0123456789abcdef" not in out + result.stderr


def test_doctor_refuses_a_sentry_dsn_that_sentry_cannot_parse_without_printing_it(tmp_path):
    (tmp_path / "inbox").mkdir()
    config = write_config(tmp_path, csv_source(tmp_path / "inbox", tmp_path / "out.csv"))
    text = config.read_text(encoding="utf-8").replace("[observability]", '[observability]\nsentry_dsn = "not-a-dsn-secret-4411"')
    config.write_text(text, encoding="utf-8")
    result = run_cli(config, "doctor", "--no-login")
    assert result.returncode == ExitCode.CONFIG, result.stdout + result.stderr
    assert any(line.startswith("[FAIL]") and "sentry_dsn" in line for line in result.stdout.splitlines()), result.stdout
    assert "not-a-dsn-secret-4411" not in result.stdout + result.stderr


# --- the hook itself ----------------------------------------------------------------------------


def test_check_source_failure_is_a_hook_failure_and_a_missing_hook_is_none(tmp_path):
    from connector_core import hookimpl

    class Probe:
        @hookimpl
        def register_source_kinds(self, register):
            from pydantic import BaseModel

            class Options(BaseModel):
                pass

            register("probe", Options)
            register("silent", Options)

        @hookimpl
        def check_source(self, source):
            if source.kind != "silent":
                raise ConnectionError("ERP is down")

    host = PluginHost(load_entry_points=False, extra_plugins=(Probe(),))
    probe = Source("p", "probe", "demo", host.kinds["probe"].options_model())
    with pytest.raises(HookFailed, match="failed in check_source for source 'p': ConnectionError: ERP is down"):
        host.check_source(probe)
    silent = Source("s", "silent", "demo", host.kinds["silent"].options_model())
    assert host.check_source(silent) == []

    (tmp_path / "in").mkdir()
    csv_host = PluginHost()
    options = CsvSourceOptions.model_validate(
        {"inbox": tmp_path / "in", "archive": tmp_path / "arch", "outbox": tmp_path / "o.csv", "company": COMPANY}
    )
    checks = csv_host.check_source(Source("files", "csv", "demo", options))
    assert checks and all(isinstance(c, SourceCheck) and c.status == "ok" for c in checks), checks


def test_doctor_masks_a_secret_that_check_source_quotes_back():
    from pydantic import BaseModel, SecretStr

    from connector_core import hookimpl
    from connector_core.doctor import FAIL, _check_sources
    from connector_core.observability.redaction import forget_secret

    class Options(BaseModel):
        password: SecretStr

    class Echo:
        @hookimpl
        def register_source_kinds(self, register):
            register("echo", Options)

        @hookimpl
        def check_source(self, source):
            raise ConnectionError(f"login failed for password {source.options.password.get_secret_value()}")

    host = PluginHost(load_entry_points=False, extra_plugins=(Echo(),))
    source = Source("e", "echo", "demo", Options(password="echoed-secret-9917"))
    try:
        (finding,) = list(_check_sources(host, {"e": source}))
    finally:
        forget_secret("echoed-secret-9917")
    assert finding.status == FAIL and finding.exit_code == ExitCode.SOURCE_UNAVAILABLE
    assert "echoed-secret-9917" not in finding.line() and "login failed for password [REDACTED]" in finding.line()
