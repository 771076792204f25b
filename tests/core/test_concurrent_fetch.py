"""Sources are fetched side by side: one ERP that is slow to answer never holds back another.

The slow source here is a plugin whose fetch blocks on an event before it yields anything; the
other is the SQL plugin on real SQLite staging tables, bound to a second taxpayer profile (its
own client id in the simulator). The slow source is listed first, so fetching one source after
another would leave the SQL source unread until the event times out.
"""

from __future__ import annotations

import threading

from pydantic import BaseModel, ConfigDict
from sqlalchemy import create_engine

from connector_core import hookimpl
from connector_core.plugins import PluginHost
from connector_core.runtime import Connector
from connector_core.settings import Settings
from tests.document.factories import DEMO_TIN, make_invoice
from tests.plugins.sql_staging import StagingErp, recreate_staging_tables

#: The simulator's second demo taxpayer: the SQL source's invoices are issued by it.
OTHER = {"tin": "C10000000010", "brn": "201901000001", "name": "Kedai Contoh Enterprise"}
#: One full submission and a part-filled one: the part-filled one goes only once its profile's
#: fetch is over, so it shows that the slow source's fetch does not count as its profile's.
SQL_INVOICES = 150
SLOW_INVOICES = 30
#: Only reached when sources are fetched one after another (the test then fails); no timing is asserted.
DEADLOCK_GUARD_S = 60


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class BlockedErp:
    """A source whose fetch waits for ``release`` before it yields its invoices."""

    __name__ = "blocked-erp"

    def __init__(self, release: threading.Event) -> None:
        self.release = release
        self.released_in_time: bool | None = None
        self.outcomes: dict[str, str] = {}

    @hookimpl
    def register_source_kinds(self, register):
        register("blocked", _Options, description="test ERP whose fetch blocks on an event")

    @hookimpl
    def fetch_pending_invoices(self, source, limit):
        if source.kind != "blocked":
            return None
        return self._invoices()

    def _invoices(self):
        self.released_in_time = self.release.wait(DEADLOCK_GUARD_S)
        for n in range(SLOW_INVOICES):
            yield make_invoice(source_key=f"slow-{n}", number=f"SLOW-{n:04d}")

    @hookimpl
    def on_submission_result(self, source, outcomes):
        if source.kind != "blocked":
            return
        for outcome in outcomes:
            self.outcomes[outcome.source_key] = outcome.state.value


def test_a_blocked_source_does_not_keep_another_sources_invoices_from_being_recorded_and_submitted(tmp_path):
    engine = create_engine(f"sqlite:///{tmp_path / 'erp.sqlite'}")
    recreate_staging_tables(engine)
    erp = StagingErp(engine)
    keys = erp.add(SQL_INVOICES, supplier_tin=OTHER["tin"], supplier_id_value=OTHER["brn"], supplier_name=OTHER["name"])

    # Released once MyInvois has accepted every invoice of the SQL source: recorded, built,
    # claimed and sent while the blocked source's fetch had not returned anything yet.
    release = threading.Event()
    accepted_for_other = 0
    counter_lock = threading.Lock()

    def observe(event: str, fields: dict) -> None:
        nonlocal accepted_for_other
        if event == "submission_accepted" and fields["profile"] == "other":
            with counter_lock:
                accepted_for_other += fields["accepted"]
                if accepted_for_other >= SQL_INVOICES:
                    release.set()

    blocked = BlockedErp(release)
    settings = Settings(
        environment="simulator",
        state_dir=tmp_path / "state",
        simulator={"validation": {"delay_seconds": 0.2, "per_document_seconds": 0.0}},
        cycles={"first_poll_delay_seconds": 0.5, "poll_min_interval_seconds": 0.5, "poll_max_interval_seconds": 1.0},
        profiles={
            "demo": {"tin": DEMO_TIN, "client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret"},
            "other": {"tin": OTHER["tin"], "client_id": "demo-taxpayer-2", "client_secret": "demo-taxpayer-2-secret"},
        },
        # The blocked source first: fetched in this order one after another, the SQL source waits.
        sources={
            "slow": {"kind": "blocked", "profile": "demo"},
            "erp": {"kind": "sql", "profile": "other", "options": {"url": str(engine.url)}},
        },
    )
    host = PluginHost(extra_plugins=(blocked,))
    with Connector(settings, host=host, observers=(observe,)) as connector:
        summary = connector.run_once()

    assert blocked.released_in_time is True
    assert summary.finished and summary.fetched == SQL_INVOICES + SLOW_INVOICES
    assert summary.counts == {"valid": SQL_INVOICES + SLOW_INVOICES}
    # Both sources' outcomes reached their ERP: the blocked one's too, once it was released.
    assert {erp.status(key).status for key in keys} == {"valid"}
    assert set(blocked.outcomes.values()) == {"valid"} and len(blocked.outcomes) == SLOW_INVOICES


#: How long each fetch leaves for a third to start beside it, were the bound not kept. The test
#: passes the same whatever the delay; a shorter one only makes a broken bound less likely caught.
ROOM_FOR_A_THIRD_S = 0.5


class CountingErp:
    """Sources that record how many of their fetches were running at once."""

    __name__ = "counting-erp"

    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.running = 0
        self.most_running = 0
        self.two_met = threading.Event()
        self.crowded = threading.Event()
        self.fetched: list[str] = []

    @hookimpl
    def register_source_kinds(self, register):
        register("counting", _Options, description="test ERP that counts concurrent fetches")

    @hookimpl
    def fetch_pending_invoices(self, source, limit):
        return self._invoices(source.name)

    def _invoices(self, name: str):
        with self.lock:
            self.running += 1
            self.most_running = max(self.most_running, self.running)
            if self.running >= 2:
                self.two_met.set()
            if self.running >= 3:
                self.crowded.set()
        try:
            # The first two meet here, which they can only do if they run at once; the third
            # starts once one of them is done, and finds them met already.
            self.two_met.wait(DEADLOCK_GUARD_S)
            self.crowded.wait(ROOM_FOR_A_THIRD_S)
            with self.lock:
                self.fetched.append(name)
            yield make_invoice(source_key=f"{name}-1", number=f"{name.upper()}-0001")
        finally:
            with self.lock:
                self.running -= 1


def test_at_most_fetch_concurrency_sources_are_fetched_at_once(tmp_path):
    erp = CountingErp()
    settings = Settings(
        environment="simulator",
        state_dir=tmp_path,
        simulator={"validation": {"delay_seconds": 0.1, "per_document_seconds": 0.0}},
        cycles={"fetch_concurrency": 2, "first_poll_delay_seconds": 0.3, "poll_min_interval_seconds": 0.3},
        profiles={"demo": {"tin": DEMO_TIN, "client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret"}},
        sources={name: {"kind": "counting", "profile": "demo"} for name in ("a", "b", "c")},
    )
    host = PluginHost(load_entry_points=False, extra_plugins=(erp,))
    with Connector(settings, host=host) as connector:
        report = connector.fetch_and_submit_cycle()

    # Two ran at once (they met), and the third never ran beside them.
    assert erp.two_met.is_set() and erp.most_running == 2
    assert sorted(erp.fetched) == ["a", "b", "c"]
    # The reports come in the configuration's order, whichever fetch ended first.
    assert [r.source for r in report.fetched] == ["a", "b", "c"]
    assert all(r.recorded == 1 for r in report.fetched)
