"""Each hook of connector_core/hookspecs.py, as the connector really calls it.

Plugins are registered through ``PluginHost(load_entry_points=False, extra_plugins=(...))``:
the CSV plugin module itself, and small plugin classes written here. Fetch and write-back run
through the real pipeline stages (``fetch_source``, ``report_source``) on a real SQLite ledger.
docs/hooks.md describes the behaviour these tests pin down; tests/test_hook_contract.py checks
that every hook has at least one test here whose name contains the hook's name.
"""

from __future__ import annotations

import logging
import shutil
import tomllib
import types
from pathlib import Path

import pytest
from pydantic import BaseModel, ConfigDict

import myinvois_csv.plugin as csv_plugin
from connector_core import hookimpl
from connector_core.contract import DocumentState, Source
from connector_core.ledger import Ledger
from connector_core.model import RejectedRecord
from connector_core.pipeline.context import PipelineContext
from connector_core.pipeline.fetch import fetch_source
from connector_core.pipeline.report import report_source
from connector_core.plugins import HookFailed, PluginError, PluginHost
from connector_core.settings import Settings
from myinvois_csv.options import CsvSourceOptions
from tests.document.factories import DEMO_TIN, make_invoice

ROOT = Path(__file__).resolve().parents[2]
DEMO_CONFIG = ROOT / "config" / "demo.toml"
DEMO_INVOICES = ROOT / "config" / "demo" / "invoices"


# --- small plugins ----------------------------------------------------------------------------


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    note: str = ""


class KindPlugin:
    """Registers one kind and records every hook call it receives."""

    def __init__(self, name: str, kind: str, items=(), *, fetch_error: Exception | None = None, fail_after: int | None = None):
        self.__name__ = name  # pluggy names a plugin object after its __name__
        self.kind = kind
        self.items = list(items)
        self.fetch_error = fetch_error
        self.fail_after = fail_after
        self.fetch_calls: list[str] = []
        self.recorded_calls: list[tuple[str, list[str]]] = []
        self.result_calls: list[tuple[str, list]] = []

    @hookimpl
    def register_source_kinds(self, register):
        register(self.kind, Options, description=f"test kind {self.kind}")

    @hookimpl
    def fetch_pending_invoices(self, source, limit):
        self.fetch_calls.append(source.name)
        if self.fetch_error is not None and self.fail_after is None:
            raise self.fetch_error
        return self._generate()

    def _generate(self):
        for n, item in enumerate(self.items):
            if self.fail_after is not None and n == self.fail_after:
                raise self.fetch_error
            yield item

    @hookimpl
    def on_invoices_recorded(self, source, source_keys):
        self.recorded_calls.append((source.name, list(source_keys)))

    @hookimpl
    def on_submission_result(self, source, outcomes):
        self.result_calls.append((source.name, list(outcomes)))


# --- helpers --------------------------------------------------------------------------------


def demo_company() -> dict:
    with DEMO_CONFIG.open("rb") as fh:
        return tomllib.load(fh)["sources"]["demo"]["options"]["company"]


def csv_source(tmp_path: Path, name: str) -> Source:
    inbox = tmp_path / name / "inbox"
    inbox.mkdir(parents=True)
    for path in DEMO_INVOICES.glob("*.csv"):
        shutil.copy(path, inbox / path.name)
    options = CsvSourceOptions(
        inbox=inbox,
        archive=tmp_path / name / "archive",
        outbox=tmp_path / name / "outbox" / "results.csv",
        company=demo_company(),
        settle_seconds=0,  # the copies are complete: read them at once
    )
    return Source(name=name, kind="csv", profile="demo", options=options, state_dir=tmp_path)


def test_source(name: str, kind: str) -> Source:
    return Source(name=name, kind=kind, profile="demo", options=Options())


test_source.__test__ = False  # a helper, not a test


def make_ctx(tmp_path: Path, host: PluginHost, sources: list[Source]) -> PipelineContext:
    settings = Settings(
        state_dir=tmp_path,
        profiles={"demo": {"tin": DEMO_TIN, "client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret"}},
        sources={s.name: {"kind": s.kind, "profile": s.profile} for s in sources},
    )
    ledger = Ledger(f"sqlite:///{tmp_path / 'ledger.sqlite'}")
    return PipelineContext(
        settings=settings,
        ledger=ledger,
        host=host,
        sources={s.name: s for s in sources},
        profiles=dict(settings.profiles),
        clients={},
        portal_base_url="http://127.0.0.1",
    )


@pytest.fixture
def ctx_factory(tmp_path):
    made: list[PipelineContext] = []

    def factory(host: PluginHost, sources: list[Source]) -> PipelineContext:
        ctx = make_ctx(tmp_path, host, sources)
        made.append(ctx)
        return ctx

    yield factory
    for ctx in made:
        ctx.ledger.close()


def invoice(key: str):
    return make_invoice(source_key=key, number=key)


def rejected(key: str) -> RejectedRecord:
    return RejectedRecord(source_key=key, number=key, location=f"erp row {key}", errors=["total is empty; enter the amount"])


# --- register_source_kinds ------------------------------------------------------------------


def test_register_source_kinds_collects_each_kind_with_its_plugin_and_options_model():
    host = PluginHost(load_entry_points=False, extra_plugins=(csv_plugin, KindPlugin("acme", "acme")))
    assert host.kinds["csv"].options_model is CsvSourceOptions
    assert host.kinds["csv"].plugin == "myinvois_csv.plugin"
    assert host.kinds["acme"].plugin == "acme"
    assert host.kinds["acme"].description == "test kind acme"
    described = {p["name"]: p for p in host.describe()}
    assert described["acme"]["kinds"] == ["acme"]
    assert described["acme"]["hooks"] == sorted(
        ["register_source_kinds", "fetch_pending_invoices", "on_invoices_recorded", "on_submission_result"]
    )


def test_register_source_kinds_clash_stops_start_up_naming_both_plugins():
    with pytest.raises(PluginError) as caught:
        PluginHost(load_entry_points=False, extra_plugins=(KindPlugin("first-erp", "erp"), KindPlugin("second-erp", "erp")))
    message = str(caught.value)
    assert "'erp'" in message
    assert "'first-erp'" in message and "'second-erp'" in message
    assert "MYINVOIS_PLUGINS" in message


def test_register_source_kinds_clash_with_a_built_in_kind_is_refused():
    with pytest.raises(PluginError, match=r"kind 'csv' is registered by both 'myinvois_csv.plugin' and 'my-csv'"):
        PluginHost(load_entry_points=False, extra_plugins=(csv_plugin, KindPlugin("my-csv", "csv")))


def test_register_source_kinds_refuses_options_that_are_not_a_pydantic_model():
    class DictOptions:
        __name__ = "dict-options"

        @hookimpl
        def register_source_kinds(self, register):
            register("loose", dict)

    with pytest.raises(PluginError, match=r"plugin 'dict-options' registered kind 'loose' with options that are not a pydantic model"):
        PluginHost(load_entry_points=False, extra_plugins=(DictOptions(),))


def test_register_source_kinds_raising_plugin_is_reported_and_the_others_still_load(caplog):
    class Broken:
        __name__ = "broken-erp"

        @hookimpl
        def register_source_kinds(self, register):
            raise RuntimeError("licence file missing")

    host = PluginHost(load_entry_points=False, extra_plugins=(Broken(), csv_plugin, KindPlugin("acme", "acme")))
    assert set(host.kinds) == {"csv", "acme"}
    assert host.failed_plugins == {"broken-erp": "RuntimeError: licence file missing"}
    described = {p["name"]: p for p in host.describe()}
    assert described["broken-erp"]["error"] == "RuntimeError: licence file missing"
    assert described["broken-erp"]["kinds"] == []
    assert described["acme"]["error"] is None
    assert "plugin 'broken-erp' failed in register_source_kinds: licence file missing" in caplog.text


def test_register_source_kinds_entry_points_restricted_by_myinvois_plugins(monkeypatch):
    monkeypatch.setenv("MYINVOIS_PLUGINS", "csv")
    host = PluginHost()
    assert [p["name"] for p in host.describe()] == ["csv"]
    assert set(host.kinds) == {"csv"}

    monkeypatch.setenv("MYINVOIS_PLUGINS", " sql , csv ")
    assert set(PluginHost().kinds) == {"csv", "sql"}


# --- check_pending: a misspelt hook implementation --------------------------------------------


def test_check_pending_refuses_a_misspelt_hook_implementation():
    # A plugin module, as an entry point loads it, with one "s" missing from a hook name.
    typo = types.ModuleType("typo_erp")

    @hookimpl
    def fetch_pending_invoice(source, limit):
        return []

    typo.fetch_pending_invoice = fetch_pending_invoice

    with pytest.raises(PluginError) as caught:
        PluginHost(load_entry_points=False, extra_plugins=(typo,))
    assert "unknown hook 'fetch_pending_invoice' in plugin <module 'typo_erp'>" in str(caught.value)


# --- fetch_pending_invoices -----------------------------------------------------------------


def test_fetch_pending_invoices_is_called_only_on_the_plugin_owning_the_kind(ctx_factory):
    alpha = KindPlugin("alpha", "alpha", [invoice("A-1"), invoice("A-2")])
    beta = KindPlugin("beta", "beta", [invoice("B-1")])
    host = PluginHost(load_entry_points=False, extra_plugins=(alpha, beta))
    a, b = test_source("src-a", "alpha"), test_source("src-b", "beta")
    ctx = ctx_factory(host, [a, b])

    report = fetch_source(ctx, a)

    assert report.recorded == 2 and not report.failed
    assert alpha.fetch_calls == ["src-a"]
    assert beta.fetch_calls == []
    assert beta.recorded_calls == []
    assert {d["source_key"] for d in ctx.ledger.status.find_documents()} == {"A-1", "A-2"}
    assert {d["source"] for d in ctx.ledger.status.find_documents()} == {"src-a"}


def test_fetch_pending_invoices_of_an_unknown_kind_is_a_plugin_error(ctx_factory):
    host = PluginHost(load_entry_points=False, extra_plugins=(KindPlugin("alpha", "alpha"),))
    with pytest.raises(PluginError, match=r"no installed plugin provides source kind 'gone' \(source 'old'\)"):
        list(host.fetch_pending_invoices(test_source("old", "gone"), 10))


def test_fetch_pending_invoices_raising_plugin_is_reported_and_another_source_is_still_recorded(tmp_path, ctx_factory):
    broken = KindPlugin("broken-erp", "broken", fetch_error=ConnectionError("ERP database is down"))
    host = PluginHost(load_entry_points=False, extra_plugins=(broken, csv_plugin))
    bad = test_source("warehouse", "broken")
    good = csv_source(tmp_path, "shop-fetch")
    ctx = ctx_factory(host, [bad, good])

    # Through the host: the failure carries plugin, hook and source.
    with pytest.raises(HookFailed) as caught:
        list(host.fetch_pending_invoices(bad, 10))
    failure = caught.value
    assert (failure.plugin, failure.hook, failure.source) == ("broken-erp", "fetch_pending_invoices", "warehouse")
    assert isinstance(failure.error, ConnectionError)
    assert str(failure) == (
        "plugin 'broken-erp' failed in fetch_pending_invoices for source 'warehouse': ConnectionError: ERP database is down"
    )

    # Through the pipeline, as a cycle does: the broken source first, then the good one.
    bad_report = fetch_source(ctx, bad)
    good_report = fetch_source(ctx, good)

    assert bad_report.failed and bad_report.recorded == 0
    assert not good_report.failed and good_report.recorded == 13
    documents = ctx.ledger.status.find_documents()
    assert {d["source"] for d in documents} == {"shop-fetch"}
    assert len(documents) == 13
    incidents = ctx.ledger.journal.recent_incidents()
    assert incidents[0]["kind"] == "plugin_error"
    assert incidents[0]["subject"] == "warehouse"
    assert "plugin 'broken-erp' failed in fetch_pending_invoices for source 'warehouse'" in incidents[0]["message"]
    assert ctx.ledger.journal.counter_values()["plugin_errors"] == 1

    # The next cycle calls the hook again.
    fetch_source(ctx, bad)
    assert broken.fetch_calls == ["warehouse", "warehouse", "warehouse"]


def test_fetch_pending_invoices_failing_midway_keeps_what_was_read_before(ctx_factory):
    plugin = KindPlugin("flaky", "flaky", [invoice("F-1"), invoice("F-2"), invoice("F-3")], fetch_error=OSError("connection reset"), fail_after=2)
    host = PluginHost(load_entry_points=False, extra_plugins=(plugin,))
    source = test_source("flaky-src", "flaky")
    ctx = ctx_factory(host, [source])

    report = fetch_source(ctx, source)

    assert report.failed
    assert sorted(d["source_key"] for d in ctx.ledger.status.find_documents()) == ["F-1", "F-2"]
    assert "failed in fetch_pending_invoices for source 'flaky-src': OSError: connection reset" in ctx.ledger.journal.recent_incidents()[0]["message"]


def test_fetch_pending_invoices_stops_reading_at_the_limit(ctx_factory):
    plugin = KindPlugin("many", "many", [invoice(f"M-{n}") for n in range(10)])
    host = PluginHost(load_entry_points=False, extra_plugins=(plugin,))
    source = test_source("many-src", "many")
    ctx = ctx_factory(host, [source])
    ctx.settings.cycles.fetch_limit = 4

    report = fetch_source(ctx, source)

    assert report.fetched == 4
    assert sorted(d["source_key"] for d in ctx.ledger.status.find_documents()) == ["M-0", "M-1", "M-2", "M-3"]


def test_fetch_pending_invoices_must_yield_invoices_or_rejected_records(ctx_factory):
    plugin = KindPlugin("sloppy", "sloppy", [invoice("S-1"), {"number": "S-2"}])
    host = PluginHost(load_entry_points=False, extra_plugins=(plugin,))
    source = test_source("sloppy-src", "sloppy")
    ctx = ctx_factory(host, [source])

    report = fetch_source(ctx, source)

    assert report.failed
    assert [d["source_key"] for d in ctx.ledger.status.find_documents()] == ["S-1"]
    assert "must yield Invoice or RejectedRecord objects, got dict" in ctx.ledger.journal.recent_incidents()[0]["message"]


def test_fetch_pending_invoices_same_content_twice_is_recorded_once(ctx_factory):
    plugin = KindPlugin("steady", "steady", [invoice("T-1")])
    host = PluginHost(load_entry_points=False, extra_plugins=(plugin,))
    source = test_source("steady-src", "steady")
    ctx = ctx_factory(host, [source])

    first, second = fetch_source(ctx, source), fetch_source(ctx, source)

    assert (first.recorded, second.recorded, second.unchanged) == (1, 0, 1)
    assert len(ctx.ledger.status.find_documents()) == 1


# --- on_invoices_recorded -------------------------------------------------------------------


def test_on_invoices_recorded_gets_the_recorded_keys_after_the_ledger_commit(tmp_path, ctx_factory):
    ledger_url = f"sqlite:///{tmp_path / 'ledger.sqlite'}"
    seen_committed: list[set[str]] = []

    class Watcher(KindPlugin):
        @hookimpl
        def on_invoices_recorded(self, source, source_keys):
            super().on_invoices_recorded(source, source_keys)
            # A separate connection sees the rows only if the ledger already committed them.
            other = Ledger(ledger_url)
            try:
                seen_committed.append({d["source_key"] for d in other.status.find_documents(source=source.name)})
            finally:
                other.close()

    plugin = Watcher("watcher", "watched", [invoice("W-1"), rejected("W-2"), invoice("W-3")])
    host = PluginHost(load_entry_points=False, extra_plugins=(plugin,))
    source = test_source("watched-src", "watched")
    ctx = ctx_factory(host, [source])

    fetch_source(ctx, source)

    # Invoices and rejected records alike, in the order fetched.
    assert plugin.recorded_calls == [("watched-src", ["W-1", "W-2", "W-3"])]
    assert seen_committed == [{"W-1", "W-2", "W-3"}]


def test_on_invoices_recorded_is_called_per_page(ctx_factory, monkeypatch):
    import connector_core.pipeline.fetch as fetch_module

    monkeypatch.setattr(fetch_module, "PAGE_SIZE", 2)  # a smaller page, not a replaced function
    plugin = KindPlugin("paged", "paged", [invoice(f"P-{n}") for n in range(5)])
    host = PluginHost(load_entry_points=False, extra_plugins=(plugin,))
    source = test_source("paged-src", "paged")
    ctx = ctx_factory(host, [source])

    fetch_source(ctx, source)

    assert [keys for _, keys in plugin.recorded_calls] == [["P-0", "P-1"], ["P-2", "P-3"], ["P-4"]]


def test_on_invoices_recorded_raising_is_reported_and_the_invoices_stay_recorded(ctx_factory):
    class FailsOnRecorded(KindPlugin):
        @hookimpl
        def on_invoices_recorded(self, source, source_keys):
            super().on_invoices_recorded(source, source_keys)
            raise PermissionError("archive folder is read-only")

    plugin = FailsOnRecorded("archiver", "archiving", [invoice("R-1"), invoice("R-2")])
    host = PluginHost(load_entry_points=False, extra_plugins=(plugin,))
    source = test_source("archive-src", "archiving")
    ctx = ctx_factory(host, [source])

    report = fetch_source(ctx, source)

    assert report.recorded == 2
    assert not report.failed  # the fetch itself succeeded
    assert sorted(d["source_key"] for d in ctx.ledger.status.find_documents()) == ["R-1", "R-2"]
    message = ctx.ledger.journal.recent_incidents()[0]["message"]
    assert "plugin 'archiver' failed in on_invoices_recorded for source 'archive-src': PermissionError" in message

    # Offered again next cycle: nothing is recorded twice, and the plugin hears the keys again.
    again = fetch_source(ctx, source)
    assert (again.recorded, again.unchanged) == (0, 2)
    assert [keys for _, keys in plugin.recorded_calls] == [["R-1", "R-2"], ["R-1", "R-2"]]


def test_on_invoices_recorded_csv_plugin_archives_a_file_once_all_its_invoices_are_recorded(tmp_path, ctx_factory):
    host = PluginHost(load_entry_points=False, extra_plugins=(csv_plugin,))
    source = csv_source(tmp_path, "shop-archive")
    ctx = ctx_factory(host, [source])

    fetch_source(ctx, source)

    options: CsvSourceOptions = source.options  # type: ignore[assignment]
    assert list(options.inbox.glob("*.csv")) == []
    assert sorted(p.name for p in options.archive.iterdir()) == ["2026-11-24-sales.csv", "2026-11-24-self-billed.csv"]


# --- on_submission_result -------------------------------------------------------------------


def test_on_submission_result_marks_outcomes_reported_only_after_the_hook_returns(ctx_factory):
    unreported_during_call: list[int] = []

    class Writer(KindPlugin):
        @hookimpl
        def on_submission_result(self, source, outcomes):
            super().on_submission_result(source, outcomes)
            unreported_during_call.append(len(ctx.ledger.writeback.unreported_outcomes(source.name, limit=100)))

    # Locally invalid documents are final at once: no API call is needed to produce outcomes.
    bad_invoice = make_invoice(source_key="X-2", number="X-2", currency="MYX")
    plugin = Writer("writer", "writes", [rejected("X-1"), bad_invoice])
    host = PluginHost(load_entry_points=False, extra_plugins=(plugin,))
    source = test_source("writes-src", "writes")
    ctx = ctx_factory(host, [source])
    fetch_source(ctx, source)

    assert report_source(ctx, source) == 2

    assert unreported_during_call == [2]  # while the hook ran, nothing was marked yet
    assert ctx.ledger.writeback.unreported_outcomes(source.name, limit=100) == []
    (name, outcomes), = plugin.result_calls
    assert name == "writes-src"
    assert [(o.source_key, o.version, o.state) for o in outcomes] == [
        ("X-1", 1, DocumentState.LOCALLY_INVALID),
        ("X-2", 1, DocumentState.LOCALLY_INVALID),
    ]
    assert outcomes[0].errors == ["erp row X-1: total is empty; enter the amount"]
    assert any("currency" in error for error in outcomes[1].errors)

    # Reported once: the next cycle has nothing to hand over.
    assert report_source(ctx, source) == 0
    assert len(plugin.result_calls) == 1


def test_on_submission_result_batch_is_logged_in_one_line_naming_the_invoices_to_look_at(ctx_factory, caplog):
    plugin = KindPlugin("erp-writer", "logged", [rejected("Z-1"), rejected("Z-2")])
    host = PluginHost(load_entry_points=False, extra_plugins=(plugin,))
    source = test_source("logged-src", "logged")
    ctx = ctx_factory(host, [source])
    fetch_source(ctx, source)
    caplog.set_level(logging.DEBUG, logger="connector_core.pipeline.report")

    assert report_source(ctx, source) == 2

    lines = [r for r in caplog.records if r.name == "connector_core.pipeline.report"]
    (batch,) = [r for r in lines if r.levelno == logging.INFO]
    assert batch.getMessage() == (
        "source logged-src: 2 outcome(s) written back (2 locally_invalid); "
        "to look at: Z-1 v1 (locally_invalid), Z-2 v1 (locally_invalid)"
    )
    assert (batch.documents, batch.invoices) == (2, ["Z-1", "Z-2"])
    # Each outcome's own line, with the document's identity, is still there at DEBUG.
    details = [r for r in lines if r.levelno == logging.DEBUG]
    assert [(r.invoice, r.getMessage()) for r in details] == [("Z-1", "invoice Z-1 v1: locally_invalid"), ("Z-2", "invoice Z-2 v1: locally_invalid")]


def test_on_submission_result_log_counts_valid_and_cancelled_without_naming_them(caplog):
    from connector_core.contract import DocumentOutcome
    from connector_core.pipeline.report import _log_written_back

    outcomes = [
        DocumentOutcome(f"K{n}", f"INV-{n}", 1, DocumentState.VALID, uuid=f"U{n}") for n in range(3)
    ] + [
        DocumentOutcome("K7", "INV-7", 2, DocumentState.INVALID, uuid="U7"),
        DocumentOutcome("K8", "INV-8", 1, DocumentState.CANCELLED, uuid="U8"),
        DocumentOutcome("K9", "INV-9", 1, DocumentState.CHANGED_AFTER_VALID, uuid="U9"),
    ]
    caplog.set_level(logging.INFO, logger="connector_core.pipeline.report")
    _log_written_back(test_source("erp", "any"), outcomes)
    (line,) = caplog.records  # and no line per outcome at INFO
    assert line.getMessage() == (
        "source erp: 6 outcome(s) written back (1 cancelled, 1 changed_after_valid, 1 invalid, 3 valid); "
        "to look at: INV-7 v2 (invalid), INV-9 v1 (changed_after_valid)"
    )
    assert line.invoices == ["INV-7", "INV-9"]
    caplog.clear()
    _log_written_back(test_source("erp", "any"), outcomes[:3])
    assert caplog.records[0].getMessage() == "source erp: 3 outcome(s) written back (3 valid)"


def test_on_submission_result_raising_gets_the_same_outcomes_again_in_smaller_batches(ctx_factory):
    class FailsOnce(KindPlugin):
        failures_left = 1

        @hookimpl
        def on_submission_result(self, source, outcomes):
            super().on_submission_result(source, outcomes)
            if self.failures_left:
                self.failures_left -= 1
                raise OSError("ERP write-back table is locked")

    plugin = FailsOnce("erp-writer", "writeback", [rejected("Y-1"), rejected("Y-2")])
    host = PluginHost(load_entry_points=False, extra_plugins=(plugin,))
    source = test_source("writeback-src", "writeback")
    ctx = ctx_factory(host, [source])
    fetch_source(ctx, source)

    # The batch failed; each half was offered again at once, and each was taken.
    assert report_source(ctx, source) == 2
    whole, *halves = (outcomes for _, outcomes in plugin.result_calls)
    assert [o.source_key for o in whole] == ["Y-1", "Y-2"]
    assert [[o.source_key for o in half] for half in halves] == [["Y-1"], ["Y-2"]]
    assert [(o.version, o.state, o.errors) for o in whole] == [(o.version, o.state, o.errors) for half in halves for o in half]
    assert ctx.ledger.writeback.unreported_outcomes(source.name, limit=100) == []
    assert ctx.ledger.writeback.failing_outcomes() == []


def test_on_submission_result_refusing_one_outcome_holds_back_only_that_one(ctx_factory):
    class RefusesY2(KindPlugin):
        @hookimpl
        def on_submission_result(self, source, outcomes):
            if any(o.source_key == "Y-2" for o in outcomes):
                raise OSError("period closed for Y-2")
            super().on_submission_result(source, outcomes)

    plugin = RefusesY2("erp-writer", "writeback", [rejected("Y-1"), rejected("Y-2"), rejected("Y-3")])
    host = PluginHost(load_entry_points=False, extra_plugins=(plugin,))
    source = test_source("writeback-src", "writeback")
    ctx = ctx_factory(host, [source])
    fetch_source(ctx, source)

    assert report_source(ctx, source) == 2
    (failing,) = ctx.ledger.writeback.failing_outcomes()
    assert (failing["row"], failing["attempts"]) == ("Y-2", 1) and "period closed" in failing["error"]
    incident = ctx.ledger.journal.recent_incidents()[0]
    assert incident["kind"] == "writeback_refused"
    assert "Y-2" in incident["message"] and "OSError" in incident["message"]
    # Backed off: the next cycle does not offer it again yet, and nothing else is waiting.
    assert report_source(ctx, source) == 0
    assert ctx.ledger.writeback.failing_outcomes()[0]["attempts"] == 1


def test_on_submission_result_is_called_only_on_the_owner_of_each_source(ctx_factory):
    alpha = KindPlugin("alpha", "alpha", [rejected("A-1")])
    beta = KindPlugin("beta", "beta", [rejected("B-1")])
    host = PluginHost(load_entry_points=False, extra_plugins=(alpha, beta))
    a, b = test_source("src-a", "alpha"), test_source("src-b", "beta")
    ctx = ctx_factory(host, [a, b])
    fetch_source(ctx, a)
    fetch_source(ctx, b)

    report_source(ctx, a)
    report_source(ctx, b)

    assert [(name, [o.source_key for o in outs]) for name, outs in alpha.result_calls] == [("src-a", ["A-1"])]
    assert [(name, [o.source_key for o in outs]) for name, outs in beta.result_calls] == [("src-b", ["B-1"])]


def test_on_submission_result_csv_plugin_writes_each_outcome_once(tmp_path, ctx_factory):
    host = PluginHost(load_entry_points=False, extra_plugins=(csv_plugin,))
    source = csv_source(tmp_path, "shop-results")
    ctx = ctx_factory(host, [source])
    fetch_source(ctx, source)
    pending = ctx.ledger.writeback.unreported_outcomes(source.name, limit=100)
    outcomes = [o for _, o in pending]
    assert {o.number for o in outcomes} == {"DEMO-INV-1007", "DEMO-INV-1008"}

    # A replay after a crash: the same outcomes twice.
    csv_plugin.on_submission_result(source=source, outcomes=outcomes)
    csv_plugin.on_submission_result(source=source, outcomes=outcomes)

    rows = source.options.outbox.read_text(encoding="utf-8").splitlines()  # type: ignore[attr-defined]
    assert rows[0].startswith("invoice_number,version,status,uuid")
    assert len(rows) == 3


def test_fetch_pending_invoices_csv_plugin_offers_a_corrected_invoice_again_as_a_new_version(tmp_path, ctx_factory):
    host = PluginHost(load_entry_points=False, extra_plugins=(csv_plugin,))
    source = csv_source(tmp_path, "shop-redrop")
    ctx = ctx_factory(host, [source])
    fetch_source(ctx, source)
    report_source(ctx, source)
    options: CsvSourceOptions = source.options  # type: ignore[assignment]

    # The clerk corrects DEMO-INV-1008's price and drops the whole file in again, same process.
    corrected = (options.archive / "2026-11-24-sales.csv").read_text(encoding="utf-8").replace('"1,250.00"', "1250.00")
    (options.inbox / "2026-11-24-sales.csv").write_text(corrected, encoding="utf-8")
    report = fetch_source(ctx, source)

    # The other refused invoice is unchanged and was written back already: its outcome goes
    # back again (and is checked again), the way a re-queued ERP row is answered.
    assert (report.recorded, report.unchanged, report.reported_again) == (1, 9, 1)
    versions = [(d["version"], d["state"]) for d in ctx.ledger.status.find_documents(number="DEMO-INV-1008")]
    assert versions == [(1, "locally_invalid"), (2, "pending")]
    assert list(options.inbox.glob("*.csv")) == []
    assert sorted(p.name for p in options.archive.iterdir()) == [
        "2026-11-24-sales.1.csv",
        "2026-11-24-sales.csv",
        "2026-11-24-self-billed.csv",
    ]
