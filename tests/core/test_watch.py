"""The watch after Valid (issue 12), against the simulator with a compressed cancellation window
and a real ledger on each database.

A Valid document stays watched until its window (read from Get Document Type) plus the margin
ends; its submission is re-polled through Get Submission only, after the normal polls of the
same round; a buyer's rejection request and a portal cancellation reach the ERP through
``on_submission_result`` with their reason and time; when the window is over the submission is
done and no call is made for it any more. The Get Submission calls are counted at the
simulator, per submission uid.
"""

from __future__ import annotations

import json
import threading
import time
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta
from typing import Any

from sqlalchemy import update

from connector_core import hookimpl
from connector_core.contract import DocumentOutcome
from connector_core.exitcodes import ExitCode
from connector_core.ledger import utcnow
from connector_core.ledger.schema import documents
from connector_core.pipeline.fetch import fetch_source
from connector_core.pipeline.poll import poll_profile
from connector_core.pipeline.report import report_source
from connector_core.pipeline.submit import submit_profile
from connector_core.simulator import SimulatorConfig, run_in_thread
from tests.exactly_once.conftest import ledger_url, make_connector  # noqa: F401 - the fixture: a fresh ledger on each database
from tests.exactly_once.erp import MemoryErp

#: The compressed rate window: a call the budget has no room for waits a second, not a minute.
RATE_WINDOW_SECONDS = 1.0
REASON = "Wrong quantity on line 2"


class OutcomeErp(MemoryErp):
    """The in-memory ERP, keeping every outcome it was given whole (reason, times...)."""

    def __init__(self) -> None:
        super().__init__()
        self.received: list[DocumentOutcome] = []

    @hookimpl
    def on_submission_result(self, source, outcomes):
        super().on_submission_result(source, outcomes)
        with self.lock:
            self.received.extend(outcomes)

    def last(self, key: str) -> DocumentOutcome:
        return [o for o in self.received if o.source_key == key][-1]


class CallLog:
    """Get Submission calls as the simulator answers them, in order, by submission uid."""

    def __init__(self, running) -> None:
        self.uids: list[str] = []
        self._lock = threading.Lock()
        simulator = running.simulator
        answer = simulator.get_submission

        def counted(token, uid, params, now):
            with self._lock:
                self.uids.append(uid)
            return answer(token, uid, params, now)

        simulator.get_submission = counted  # the route looks it up on each call

    def count(self, uid: str) -> int:
        with self._lock:
            return Counter(self.uids)[uid]


@contextmanager
def lifecycle_simulator(window_seconds: float) -> Iterator[Any]:
    config = SimulatorConfig(
        seed=12,
        rate_limits={"profile": "production", "window_seconds": RATE_WINDOW_SECONDS},
        validation={"delay_seconds": 0.0, "per_document_seconds": 0.0},
        lifecycle_window_seconds=window_seconds,
    )
    with run_in_thread(config) as running:
        yield running


def connector(tmp_path, ledger_url, sim, erp, *, interval: float, **extra: Any):  # noqa: F811
    return make_connector(
        tmp_path,
        ledger_url,
        sim,
        {"erp": erp},
        cycles={"watch_interval_seconds": interval, "watch_margin_seconds": 0.0},
        **extra,
    )


def validate(c, erp: MemoryErp) -> None:
    """Fetch, submit, poll and write back until every ERP row is valid."""
    fetch_source(c.ctx, c.ctx.sources["erp"])
    submit_profile(c.ctx, "main")
    for _ in range(20):
        poll_profile(c.ctx, "main")
        report_source(c.ctx, c.ctx.sources["erp"])
        if c.ledger.polls.next_poll_time() is None:
            break
    assert {r.status for r in erp.rows.values()} == {"valid"}


def sweep(c) -> None:
    """One poll round of the daemon's poll job, and the write-back after it."""
    poll_profile(c.ctx, "main")
    report_source(c.ctx, c.ctx.sources["erp"])


def wait_until_watch_due(c) -> None:
    due = c.ledger.watch.next_watch_time()
    assert due is not None, "nothing is watched"
    time.sleep(max(0.0, (due - utcnow()).total_seconds()) + 0.05)


def submission_of(c, uid: str) -> dict:
    (found,) = [s for s in c.ledger.status.find_submissions() if s["submission_uid"] == uid]
    return found


def test_a_buyers_rejection_request_reaches_the_erp_with_its_reason_within_one_sweep(tmp_path, ledger_url):  # noqa: F811
    erp = OutcomeErp()
    erp.add("k1")
    with lifecycle_simulator(window_seconds=6.0) as sim:
        calls = CallLog(sim)
        with connector(tmp_path, ledger_url, sim, erp, interval=1.0) as c:
            started = time.monotonic()
            summary = c.run_once()
            # run --once does not wait for the window to end, and a watched invoice is not unfinished.
            assert summary.exit_code() == ExitCode.OK and summary.finished
            assert time.monotonic() - started < 6.0
            valid = erp.last("k1")
            assert valid.state.value == "valid" and valid.cancellable_until is not None
            assert valid.cancellable_until - utcnow() <= timedelta(seconds=6)
            uid = valid.submission_uid
            assert submission_of(c, uid)["state"] == "watching"

            sim.simulator.portal_request_rejection(valid.uuid, REASON)
            wait_until_watch_due(c)
            before = calls.count(uid)
            c.run_once()  # a cron-style run makes the sweep that is due
            assert calls.count(uid) == before + 1

            news = erp.last("k1")
            assert (news.state.value, news.version, news.uuid) == ("rejection_requested", 1, valid.uuid)
            assert news.reason == REASON and news.event_at is not None
            assert news.cancellable_until == valid.cancellable_until  # still Valid at MyInvois: still cancellable
            assert erp.rows["k1"].status == "rejection_requested"
            assert submission_of(c, uid)["state"] == "watching"


def test_a_cancellation_on_the_portal_reaches_the_erp_as_cancelled_and_ends_the_watch(tmp_path, ledger_url):  # noqa: F811
    erp = OutcomeErp()
    erp.add("k1")
    erp.add("k2")
    with lifecycle_simulator(window_seconds=6.0) as sim:
        calls = CallLog(sim)
        with connector(tmp_path, ledger_url, sim, erp, interval=0.5) as c:
            validate(c, erp)
            first, second = erp.last("k1"), erp.last("k2")
            uid = first.submission_uid
            # An earlier cancel of the second one was refused (its advice already written back).
            with c.ledger.engine.begin() as conn:
                conn.execute(
                    update(documents)
                    .where(documents.c.uuid == second.uuid)
                    .values(cancel_error=json.dumps({"code": "IncorrectState", "advice": "try again later"}))
                )
            sim.simulator.portal_request_rejection(first.uuid, REASON)
            wait_until_watch_due(c)
            sweep(c)
            assert erp.last("k1").state.value == "rejection_requested"
            # The issuer accepts the buyer's request on the portal; the other one is cancelled too.
            sim.simulator.portal_cancel(first.uuid, "Agreed with the buyer: reissued as INV-k1b")
            sim.simulator.portal_cancel(second.uuid, "Duplicate of INV-k1")
            wait_until_watch_due(c)
            sweep(c)
            for key, reason in (("k1", "Agreed with the buyer: reissued as INV-k1b"), ("k2", "Duplicate of INV-k1")):
                news = erp.last(key)
                assert (news.state.value, news.reason) == ("cancelled", reason)
                assert news.event_at is not None and news.cancellable_until is None
                assert news.cancel_error == []  # the news replaces the old refusal
                assert erp.rows[key].status == "cancelled"
            # Nothing of it can change any more: the watch is over at once, no further call.
            assert submission_of(c, uid)["state"] == "done"
            assert c.ledger.watch.next_watch_time() is None
            made = calls.count(uid)
            time.sleep(0.6)
            sweep(c)
            assert calls.count(uid) == made


def test_the_documents_gauge_follows_documents_past_valid(tmp_path, ledger_url):  # noqa: F811
    """The gauge's running total counts a final document once; a rejection request or a
    cancellation moves it afterwards, and a long-running process must show the move (issue 12:
    a final state is no longer for ever)."""
    erp = OutcomeErp()
    erp.add("k1")
    erp.add("k2")
    with lifecycle_simulator(window_seconds=6.0) as sim:
        with connector(tmp_path, ledger_url, sim, erp, interval=0.5) as c:
            validate(c, erp)
            first, second = erp.last("k1"), erp.last("k2")
            # Final long enough ago to be in the running total, not among the recent ones.
            with c.ledger.engine.begin() as conn:
                conn.execute(update(documents).values(final_at=utcnow() - timedelta(hours=1)))
            gauge = c.ledger.status  # one instance, as in the daemon
            assert gauge.version_counts_by_state() == {"valid": 2}
            sim.simulator.portal_request_rejection(first.uuid, REASON)
            wait_until_watch_due(c)
            sweep(c)
            assert gauge.version_counts_by_state() == {"valid": 1, "rejection_requested": 1}
            sim.simulator.portal_cancel(second.uuid, "Duplicate of INV-k1")
            wait_until_watch_due(c)
            sweep(c)
            assert gauge.version_counts_by_state() == {"rejection_requested": 1, "cancelled": 1}
            # A fresh count agrees with the running one.
            assert type(gauge)(c.ledger.engine, None).version_counts_by_state() == gauge.version_counts_by_state()


def test_watch_calls_stay_within_the_window_over_the_interval_plus_two_then_stop(tmp_path, ledger_url):  # noqa: F811
    window, interval = 3.0, 0.5
    erp = OutcomeErp()
    erp.add("k1")
    with lifecycle_simulator(window_seconds=window) as sim:
        calls = CallLog(sim)
        with connector(tmp_path, ledger_url, sim, erp, interval=interval) as c:
            validate(c, erp)
            uid = erp.last("k1").submission_uid
            before_watch = calls.count(uid)
            # The daemon's poll job, woken when the watch is due, until the watch is over.
            for _ in range(int(window / interval) + 5):
                if submission_of(c, uid)["state"] == "done":
                    break
                wait_until_watch_due(c)
                sweep(c)
            assert submission_of(c, uid)["state"] == "done"
            watch_calls = calls.count(uid) - before_watch
            assert 1 <= watch_calls <= window / interval + 2
            # The documents stay valid and final; nothing about them is due or written again.
            assert erp.rows["k1"].status == "valid"
            assert c.ledger.watch.next_watch_time() is None
            assert not c.ledger.watch.has_due(utcnow())
            made, received = calls.count(uid), len(erp.received)
            time.sleep(interval + 0.1)
            sweep(c)
            assert calls.count(uid) == made and len(erp.received) == received


def test_normal_polling_goes_before_the_watch_when_the_budget_is_short(tmp_path, ledger_url):  # noqa: F811
    erp = OutcomeErp()
    erp.add("k1")
    with lifecycle_simulator(window_seconds=30.0) as sim:
        calls = CallLog(sim)
        # Two Get Submission calls per (one-second) window, one at a time.
        with connector(
            tmp_path,
            ledger_url,
            sim,
            erp,
            interval=2.0,
            submission={"poll_concurrency": 1},
            rate_limits={"overrides": {"get_submission": 2}},
        ) as c:
            validate(c, erp)
            watched = erp.last("k1").submission_uid
            wait_until_watch_due(c)  # the watched one has been due the longest...
            for key in ("k2", "k3"):  # ...when two new submissions become due
                erp.add(key)
                fetch_source(c.ctx, c.ctx.sources["erp"])
                submit_profile(c.ctx, "main")
            normal = [s["submission_uid"] for s in c.ledger.status.find_submissions() if s["state"] == "accepted"]
            assert len(normal) == 2
            start = len(calls.uids)
            poll_profile(c.ctx, "main")
            # Both normal polls took the budget's two calls; the watch waited for the next window.
            assert set(calls.uids[start : start + 2]) == set(normal)
            assert calls.uids[start + 2 :] == [watched]


def test_without_readable_document_types_the_window_is_72_hours_and_the_read_waits_an_hour(tmp_path, ledger_url):  # noqa: F811
    erp = OutcomeErp()
    erp.add("k1")
    config = SimulatorConfig(
        seed=12,
        rate_limits={"profile": "production", "window_seconds": RATE_WINDOW_SECONDS},
        validation={"delay_seconds": 0.0, "per_document_seconds": 0.0},
        lifecycle_window_seconds=6.0,
        faults={"error_rate": {"document_types": 1.0}},
    )
    with run_in_thread(config) as sim, connector(tmp_path, ledger_url, sim, erp, interval=1.0) as c:
        validate(c, erp)
        until = erp.last("k1").cancellable_until
        assert until is not None and until - utcnow() > timedelta(hours=71)
        failed = sum(sim.simulator.stats.requests["document_types"].values())
        assert failed >= 1
        erp.add("k2")
        validate(c, erp)  # validated a moment later: 72 hours too, without asking again
        assert erp.last("k2").cancellable_until - utcnow() > timedelta(hours=71)
        assert sum(sim.simulator.stats.requests["document_types"].values()) == failed


def test_a_cron_style_run_once_writes_the_rejection_request_into_the_csv_outbox(tmp_path):
    """The demo's CSV source and the command line, as a cron user runs them: the first run ends
    at Valid without waiting for the window, the next run makes the watch poll that is due."""
    from tests.core.test_end_to_end import demo_config, outbox_rows, run_cli

    config = SimulatorConfig(
        seed=12,
        validation={"delay_seconds": 0.0, "per_document_seconds": 0.0},
        lifecycle_window_seconds=30.0,
    )
    with run_in_thread(config) as sim:
        path = demo_config(tmp_path, api_base_url=sim.base_url)
        path.write_text(
            path.read_text().replace(
                "[cycles]\n", "[cycles]\nwatch_interval_seconds = 1.0\nwatch_margin_seconds = 0.0\n"
            )
        )
        first = run_cli("--config", str(path), "run", "--once", cwd=tmp_path)
        # Two demo invoices are refused on purpose; the valid ones' watch does not change the code.
        assert first.returncode == ExitCode.NEEDS_ATTENTION, first.stderr
        outbox = tmp_path / "var/demo/outbox/results.csv"
        valid = next(row for row in outbox_rows(outbox) if row["status"] == "valid")
        assert valid["cancellable_until"] and not valid["reason"]
        sim.simulator.portal_request_rejection(valid["uuid"], REASON)
        time.sleep(1.1)  # the watch interval
        second = run_cli("--config", str(path), "run", "--once", cwd=tmp_path)
        assert second.returncode == ExitCode.NEEDS_ATTENTION, second.stderr
        news = [row for row in outbox_rows(outbox) if row["uuid"] == valid["uuid"]]
        assert [(row["status"], row["version"]) for row in news] == [("valid", "1"), ("rejection_requested", "1")]
        assert news[1]["reason"] == REASON and news[1]["event_at"]
        assert news[1]["invoice_number"] == valid["invoice_number"]
