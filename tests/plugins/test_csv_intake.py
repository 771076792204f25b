"""The CSV intake as an ERP's export meets it: files still being written, the same invoice
number in two files, a number reused after MyInvois validated it, files in the wrong format,
missing folders. Through the real pipeline and ledger (SQLite) and, where MyInvois must
answer, the in-process simulator."""

from __future__ import annotations

import csv
import io
import os
import time
from pathlib import Path

import pytest

import myinvois_csv.plugin as csv_plugin
from connector_core.contract import Source
from connector_core.ledger import Ledger
from connector_core.model import Invoice, RejectedRecord
from connector_core.pipeline.context import PipelineContext
from connector_core.pipeline.fetch import fetch_source
from connector_core.pipeline.report import report_source
from connector_core.plugins import HookFailed, PluginHost
from connector_core.settings import ConfigError, Settings
from myinvois_csv.options import CsvSourceOptions
from tests.core.test_csv_plugin import COLUMNS, COMPANY, fetch, make_source, row, write_csv

PROFILE = {"tin": COMPANY["tin"], "client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret"}


def csv_text(rows: list[dict[str, str]], columns: list[str] = COLUMNS, delimiter: str = ",") -> str:
    out = io.StringIO()
    writer = csv.DictWriter(out, fieldnames=columns, extrasaction="ignore", delimiter=delimiter, lineterminator="\n")
    writer.writeheader()
    writer.writerows(rows)
    return out.getvalue()


def age(path: Path, seconds: float) -> None:
    """As if the file had last been written ``seconds`` ago (its writer finished then)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def outbox_rows(source: Source) -> list[dict[str, str]]:
    outbox = source.options.outbox  # type: ignore[attr-defined]
    if not outbox.exists():
        return []
    with outbox.open(encoding="utf-8", newline="") as fh:
        return list(csv.DictReader(fh))


@pytest.fixture()
def pipeline(tmp_path, request):
    """fetch/report with the real ledger; the plugin's memory is per source name, so one name per test."""
    made: list[PipelineContext] = []

    def build(source: Source, fetch_limit: int = 1000) -> PipelineContext:
        settings = Settings(
            state_dir=tmp_path / "state",
            profiles={"demo": PROFILE},
            sources={source.name: {"kind": "csv", "profile": "demo"}},
            cycles={"fetch_limit": fetch_limit},
        )
        ctx = PipelineContext(
            settings=settings,
            ledger=Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}"),
            host=PluginHost(load_entry_points=False, extra_plugins=(csv_plugin,)),
            sources={source.name: source},
            profiles=dict(settings.profiles),
            clients={},
            portal_base_url="http://127.0.0.1",
        )
        made.append(ctx)
        return ctx

    yield build
    for ctx in made:
        ctx.ledger.close()


def documents(ctx: PipelineContext, number: str) -> list[dict]:
    return ctx.ledger.status.find_documents(number=number)


# --- 1. only complete files are read ----------------------------------------------------------


def test_a_half_written_file_is_not_read_until_its_writer_is_done(tmp_path, pipeline, request):
    source = make_source(tmp_path, name=request.node.name, settle_seconds=30)
    ctx = pipeline(source)
    text = csv_text([row("HALF-1"), row("HALF-2", description="Monitor")])
    path = source.options.inbox / "export.csv"
    cut = text.index("HALF-2") + 20  # mid-row: the second invoice's row ends early
    path.write_text(text[:cut], encoding="utf-8")

    report = fetch_source(ctx, source)
    assert (report.fetched, report.recorded) == (0, 0)
    assert documents(ctx, "HALF-1") == [] and documents(ctx, "HALF-2") == []
    assert path.exists()  # left in the inbox for a later fetch

    path.write_text(text, encoding="utf-8")  # the writer finishes ...
    report = fetch_source(ctx, source)
    assert report.fetched == 0  # ... but only just: not yet unchanged for settle_seconds
    age(path, 31)
    report = fetch_source(ctx, source)
    assert (report.fetched, report.recorded, report.locally_invalid) == (2, 2, 0)
    assert [d["state"] for d in documents(ctx, "HALF-2")] == ["pending"]
    assert not path.exists() and (source.options.archive / "export.csv").exists()


def test_files_named_part_or_tmp_are_never_read_and_are_once_renamed(tmp_path, pipeline, request):
    source = make_source(tmp_path, name=request.node.name, pattern="*")
    ctx = pipeline(source)
    inbox = source.options.inbox
    write_csv(inbox / "sales.csv.part", [row("PART-1")])
    write_csv(inbox / "sales.tmp", [row("TMP-1")])
    write_csv(inbox / ".hidden-sales.csv", [row("DOT-1")])
    assert fetch_source(ctx, source).fetched == 0
    assert {p.name for p in inbox.iterdir()} == {"sales.csv.part", "sales.tmp", ".hidden-sales.csv"}

    (inbox / "sales.csv.part").rename(inbox / "sales.csv")
    report = fetch_source(ctx, source)
    assert report.recorded == 1 and [d["state"] for d in documents(ctx, "PART-1")] == ["pending"]


def test_seed_files_are_read_by_the_first_fetch_although_just_copied(tmp_path, pipeline, request):
    seed = tmp_path / "seed"
    seed.mkdir()
    write_csv(seed / "demo.csv", [row("SEED-1")])  # written this instant, like a fresh install
    source = make_source(tmp_path, name=request.node.name, settle_seconds=30, seed_dir=seed)
    ctx = pipeline(source)
    assert fetch_source(ctx, source).recorded == 1


# --- 2. the same number in two files of one fetch ---------------------------------------------


def test_one_number_with_different_content_in_two_files_is_a_conflict_naming_both(tmp_path, pipeline, request):
    source = make_source(tmp_path, name=request.node.name)
    ctx = pipeline(source)
    write_csv(source.options.inbox / "a.csv", [row("OTHER-1"), row("DUP-1"), row("DUP-1", description="Mouse")])
    write_csv(source.options.inbox / "b.csv", [row("DUP-1", unit_price="99.00")])
    report = fetch_source(ctx, source)
    assert report.recorded == 2  # OTHER-1 and one record for DUP-1

    (doc,) = documents(ctx, "DUP-1")
    assert doc["state"] == "locally_invalid"
    report_source(ctx, source)
    (written,) = [r for r in outbox_rows(source) if r["invoice_number"] == "DUP-1"]
    archive = source.options.archive
    assert written["status"] == "locally_invalid"
    assert f"{archive / 'a.csv'} rows 3, 4" in written["errors"] and f"{archive / 'b.csv'} row 2" in written["errors"]
    assert "renumber" in written["errors"]
    # Both files are done with: archived, where the error says they are.
    assert sorted(p.name for p in archive.iterdir()) == ["a.csv", "b.csv"]
    assert [d["state"] for d in documents(ctx, "OTHER-1")] == ["pending"]


def test_one_invoice_written_the_same_in_two_files_is_recorded_once(tmp_path, pipeline, request, caplog):
    source = make_source(tmp_path, name=request.node.name)
    ctx = pipeline(source)
    write_csv(source.options.inbox / "a.csv", [row("SAME-1")])
    # Another export, its columns in another order: still the same invoice.
    write_csv(source.options.inbox / "b.csv", [row("SAME-2"), row("SAME-1")], columns=list(reversed(COLUMNS)))
    with caplog.at_level("INFO", logger="myinvois_csv"):
        report = fetch_source(ctx, source)
    assert (report.fetched, report.recorded) == (2, 2)
    assert [d["state"] for d in documents(ctx, "SAME-1")] == ["pending"]
    assert any("SAME-1" in r.getMessage() and "b.csv row 3" in r.getMessage() and "read once" in r.getMessage() for r in caplog.records)
    assert sorted(p.name for p in source.options.archive.iterdir()) == ["a.csv", "b.csv"]


def test_a_fetch_limit_never_archives_a_file_with_invoices_left_unread(tmp_path, pipeline, request):
    source = make_source(tmp_path, name=request.node.name)
    ctx = pipeline(source, fetch_limit=3)
    write_csv(source.options.inbox / "big.csv", [row(f"BIG-{n}") for n in range(5)])
    assert fetch_source(ctx, source).recorded == 3
    assert (source.options.inbox / "big.csv").exists()  # two invoices of it are still unread
    assert fetch_source(ctx, source).recorded == 2
    assert not (source.options.inbox / "big.csv").exists()
    assert {d["state"] for n in range(5) for d in documents(ctx, f"BIG-{n}")} == {"pending"}


# --- 3. a number reused after MyInvois validated it ----------------------------------------------


def test_a_number_reused_after_validation_is_written_to_the_outbox(tmp_path, request):
    from connector_core.runtime import Connector

    source_name = request.node.name
    inbox = tmp_path / "inbox"
    inbox.mkdir()
    options = {
        "inbox": str(inbox),
        "archive": str(tmp_path / "archive"),
        "outbox": str(tmp_path / "results.csv"),
        "settle_seconds": 0,
        "company": COMPANY,
    }
    settings = Settings(
        environment="simulator",
        state_dir=tmp_path / "state",
        simulator={"validation": {"delay_seconds": 0.2, "per_document_seconds": 0.01}},
        cycles={"first_poll_delay_seconds": 0.3, "poll_min_interval_seconds": 0.3, "poll_max_interval_seconds": 1.0},
        profiles={"demo": PROFILE},
        sources={source_name: {"kind": "csv", "profile": "demo", "options": options}},
    )
    with Connector(settings) as connector:
        write_csv(inbox / "1.csv", [row("REUSE-1")])
        first = connector.run_once()
        assert first.counts == {"valid": 1}
        write_csv(inbox / "2.csv", [row("REUSE-1", description="Another sale under the same number")])
        connector.run_once()

    rows = [r for r in csv.DictReader((tmp_path / "results.csv").open(encoding="utf-8")) if r["invoice_number"] == "REUSE-1"]
    assert [(r["version"], r["status"]) for r in rows] == [("1", "valid"), ("2", "changed_after_valid")]
    reused = rows[1]
    assert reused["uuid"] == rows[0]["uuid"]  # the validated document stands
    assert "credit or debit note" in reused["errors"] and "give that invoice its own number" in reused["errors"]


# --- 5, 6, 7. the file's shape ---------------------------------------------------------------------


@pytest.mark.parametrize(("separator", "option"), [(";", 'delimiter = ";"'), ("\t", 'delimiter = "\\t"')])
def test_a_file_with_another_separator_gets_a_hint_about_the_delimiter_option(tmp_path, separator, option):
    source = make_source(tmp_path)
    (source.options.inbox / "eu.csv").write_text(csv_text([row("EU-1")], delimiter=separator), encoding="utf-8")
    (item,) = fetch(source)
    assert isinstance(item, RejectedRecord)
    assert "has no column" in item.errors[0] and option in item.errors[0]


def test_a_comma_file_under_a_semicolon_delimiter_gets_the_hint_too(tmp_path):
    source = make_source(tmp_path, delimiter=";")
    write_csv(source.options.inbox / "a.csv", [row("C-1")])
    (item,) = fetch(source)
    assert 'delimiter = ","' in item.errors[0]


def test_a_file_with_missing_columns_and_no_other_separator_gets_no_delimiter_hint(tmp_path):
    source = make_source(tmp_path)
    write_csv(source.options.inbox / "a.csv", [row("X")], columns=[c for c in COLUMNS if c != "unit_price"])
    (item,) = fetch(source)
    assert "has no column 'unit_price'" in item.errors[0] and "delimiter" not in item.errors[0]


def test_a_ragged_row_lists_every_missing_field(tmp_path):
    source = make_source(tmp_path)
    text = csv_text([row("OK-1")])
    short = io.StringIO()
    csv.writer(short, lineterminator="\n").writerow([row("RAG-1")[c] for c in COLUMNS[:12]])  # stops after party_country
    (source.options.inbox / "a.csv").write_text(text + short.getvalue(), encoding="utf-8")
    items = {i.source_key: i for i in fetch(source)}
    assert isinstance(items["OK-1"], Invoice)
    ragged = items["RAG-1"]
    assert isinstance(ragged, RejectedRecord) and len(ragged.errors) == 1
    missing = COLUMNS[12:]
    assert f"missing: {', '.join(missing)}" in ragged.errors[0]
    assert ragged.errors[0].startswith("the row has 12 fields, the header 19")
    assert ragged.location == f"{source.options.archive / 'a.csv'} row 3"


def test_a_trailing_separator_more_or_less_is_not_a_ragged_row(tmp_path):
    source = make_source(tmp_path)
    header, line = csv_text([row("TRAIL-1")]).splitlines()
    # The header ends with a separator (an unnamed column) and the row does not; the second
    # row has one separator more than the header, with nothing after it.
    text = f"{header},\n{line}\n{line.replace('TRAIL-1', 'TRAIL-2')},,\n"
    (source.options.inbox / "a.csv").write_text(text, encoding="utf-8")
    items = fetch(source)
    assert sorted(i.source_key for i in items) == ["TRAIL-1", "TRAIL-2"]
    assert all(isinstance(item, Invoice) for item in items), [getattr(i, "errors", None) for i in items]


def test_every_bad_cell_of_a_row_is_named_not_only_the_first(tmp_path):
    source = make_source(tmp_path)
    write_csv(source.options.inbox / "a.csv", [row("CELLS-1", unit_price="", description="", classification="", tax_rate="ten")])
    (item,) = fetch(source)
    assert isinstance(item, RejectedRecord)
    assert [e.split(" ")[0] for e in item.errors] == ["unit_price", "tax_rate", "description", "classification"]


def test_a_row_with_too_many_fields_says_to_quote_the_value(tmp_path):
    source = make_source(tmp_path)
    text = csv_text([row("LONG-1")])
    text = text.replace("Laptop", "Laptop, 14 inch")  # an unquoted comma in the description
    (source.options.inbox / "a.csv").write_text(text, encoding="utf-8")
    (item,) = fetch(source)
    assert isinstance(item, RejectedRecord)
    assert "20 fields, 1 more than the header's 19" in item.errors[0] and "double quotes" in item.errors[0]


def test_an_empty_file_is_refused_with_the_fix_and_archived(tmp_path, pipeline, request):
    source = make_source(tmp_path, name=request.node.name)
    ctx = pipeline(source)
    (source.options.inbox / "empty.csv").write_bytes(b"")
    report = fetch_source(ctx, source)
    assert report.locally_invalid == 1
    report_source(ctx, source)
    (written,) = outbox_rows(source)
    assert written["invoice_number"] == "file:inbox/empty.csv" and written["status"] == "locally_invalid"
    assert "is empty" in written["errors"] and str(source.options.archive / "empty.csv") in written["errors"]
    assert (source.options.archive / "empty.csv").exists()


def test_a_header_only_file_has_no_invoices_and_is_archived_at_once(tmp_path, pipeline, request):
    source = make_source(tmp_path, name=request.node.name)
    ctx = pipeline(source)
    write_csv(source.options.inbox / "nothing-today.csv", [])
    report = fetch_source(ctx, source)
    assert (report.fetched, report.recorded) == (0, 0)
    assert not (source.options.inbox / "nothing-today.csv").exists()
    assert (source.options.archive / "nothing-today.csv").exists()
    report_source(ctx, source)
    assert outbox_rows(source) == []


# --- 8. missing folders -----------------------------------------------------------------------------


def test_a_missing_inbox_is_a_configuration_error_naming_the_key_and_the_path(tmp_path, pipeline, request):
    options = CsvSourceOptions(
        inbox=tmp_path / "no-such-inbox", archive=tmp_path / "archive", outbox=tmp_path / "results.csv", company=COMPANY
    )
    source = Source(name="shop", kind="csv", profile="demo", options=options)
    with pytest.raises(ConfigError) as raised:
        fetch(source)
    message = str(raised.value)
    assert message.startswith("sources.shop.options.inbox: the folder ")
    assert str(tmp_path / "no-such-inbox") in message and "create it" in message
    assert not (tmp_path / "no-such-inbox").exists()  # not created behind the user's back

    ctx = pipeline(source)
    report = fetch_source(ctx, source)
    assert report.failed  # the cycle reports the source's failure instead of "0 fetched"


def test_a_missing_seed_folder_is_a_configuration_error_naming_the_key(tmp_path):
    options = CsvSourceOptions(
        inbox=tmp_path / "inbox",
        archive=tmp_path / "archive",
        outbox=tmp_path / "results.csv",
        company=COMPANY,
        seed_dir=tmp_path / "no-seed",
    )
    source = Source(name="demo", kind="csv", profile="demo", options=options)
    with pytest.raises(ConfigError, match=r"^sources\.demo\.options\.seed_dir: the folder .*no-seed does not exist"):
        fetch(source)


def test_an_inbox_that_is_a_file_is_named_as_such(tmp_path):
    (tmp_path / "inbox").write_text("not a folder", encoding="utf-8")
    options = CsvSourceOptions(inbox=tmp_path / "inbox", archive=tmp_path / "a", outbox=tmp_path / "o.csv", company=COMPANY)
    with pytest.raises(ConfigError, match=r"^sources\.shop\.options\.inbox: the folder .*inbox is a file, not a folder"):
        fetch(Source(name="shop", kind="csv", profile="demo", options=options))


def test_the_hook_failure_of_a_missing_inbox_is_one_line(tmp_path):
    options = CsvSourceOptions(inbox=tmp_path / "gone", archive=tmp_path / "a", outbox=tmp_path / "o.csv", company=COMPANY)
    source = Source(name="shop", kind="csv", profile="demo", options=options)
    host = PluginHost(load_entry_points=False, extra_plugins=(csv_plugin,))
    with pytest.raises(HookFailed) as raised:
        list(host.fetch_pending_invoices(source, 10))
    assert "\n" not in str(raised.value) and "sources.shop.options.inbox" in str(raised.value)
