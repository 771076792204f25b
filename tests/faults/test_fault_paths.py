"""Fault paths the full fault run never reached, end to end (issue "Exactly once for every invoice").

Each test runs the connector as its own process (``myinvois-connector run --once``) against SQL
staging tables and a simulator over loopback HTTP, and ends with the checks of every fault test:
each invoice valid exactly once (or reported invalid), its ERP row holding the uuid of the one
Valid document at MyInvois.

* **Search lag among every other fault.** Real MyInvois indexes documents for Search Documents
  asynchronously, so the search that reconciles a lost submit answer misses documents MyInvois
  already holds; the connector then re-sends the identical bytes and MyInvois's duplicate rules
  (422 DuplicateSubmission, or DS302 after the duplicate-submission window) must catch it.
* **A refused re-send.** Lost answer, the search misses, and the re-send is not taken (429, or a
  5xx): the first send may still be at MyInvois, so the documents stay in doubt (``submitting``),
  never back to ``pending`` where they would be built and sent again as new documents.
* **One invoice number on two ERP rows** (one source, two sources of one profile, or a row that
  appears after its twin is already valid): exactly one is sent and valid; the other is written
  back locally invalid, naming the row that holds the number, and never with its uuid.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import httpx
import pytest
from sqlalchemy import create_engine, text
from sqlalchemy.exc import OperationalError

from connector_core.ledger import Ledger
from tests import state_log
from tests.faults import harness as h

pytestmark = pytest.mark.slow


# --- 1. search lag in a run with every fault ---------------------------------------------------

LAG_INVOICES = 300
LAG_INVALID = 6
#: MyInvois's search index hides every document until the connector has had MyInvois's answer
#: to a re-send, so the first searches that reconcile lost answers miss, and the identical bytes
#: go again, however busy the machine. (A fixed lag had to outlast the slowest first cycle,
#: which took more than 15 s on a loaded CI machine: at 45 s it was most of the test's time, and
#: long enough for a submission to reach the reconciliation limit and be escalated.)
HIDDEN_UNTIL_RESENT_SECONDS = 3600.0
#: From then on the index lags as real MyInvois's does: by a few seconds.
SEARCH_LAG_SECONDS = 2.0
#: Only a connector that never re-sends takes this long to do it.
RESEND_DEADLINE_SECONDS = 120.0
#: What the connector's ledger shows once it had MyInvois's answer to a re-send: a 422 counted
#: (duplicate submission), or a submission it reconciled now accepted (while the search sees
#: nothing, only a re-send's 202 can have done that; its DS302 documents are then polled and
#: the earlier ones adopted), or past that: done, or watching while a document of it is valid
#: inside its cancellation window. Simulator figures would not do: a re-send whose 202 is lost
#: too reaches MyInvois but not the connector, which later finds the original and adopts nothing.
ANSWERED_RESEND = text(
    "SELECT (SELECT count(*) FROM counters WHERE name = 'duplicate_submission_answers' AND value > 0)"
    " + (SELECT count(*) FROM submissions WHERE reconcile_attempts > 0 AND state IN ('accepted', 'watching', 'done'))"
)


def _resend_answered(ledger: Path) -> bool:
    """Whether the connector's ledger (its SQLite file, read only) shows an answered re-send."""
    if not ledger.exists():
        return False
    engine = create_engine(f"sqlite:///file:{ledger}?mode=ro&uri=true")
    try:
        with engine.connect() as conn:
            return conn.execute(ANSWERED_RESEND).scalar() > 0
    except OperationalError:
        return False  # the connector has not created its tables yet, or holds a lock
    finally:
        engine.dispose()


@contextmanager
def _search_catches_up_after_an_answered_resend(base_url: str, ledger: Path) -> Iterator[threading.Event]:
    """While the connector runs: once MyInvois's search has hidden a document that had arrived
    and the connector's ledger shows an answered re-send, the search index lags only
    SEARCH_LAG_SECONDS from then on. The event tells that it happened.

    Both conditions, not the re-send alone: a submit refused with a 5xx never arrived, so its
    search misses nothing and its re-send is answered at once. Under load such a re-send can be
    answered before any lost answer's first search, and catching up then would let every
    search find what it looks for, leaving the scenario untested."""
    caught_up, stop = threading.Event(), threading.Event()

    def watch() -> None:
        deadline = time.monotonic() + RESEND_DEADLINE_SECONDS
        while not stop.is_set() and time.monotonic() < deadline:
            try:
                if h.stats(base_url)["faults_injected"].get("search_lag", 0) > 0 and _resend_answered(ledger):
                    h.update_faults(base_url, search_lag_seconds=SEARCH_LAG_SECONDS)
                    caught_up.set()
                    return
            except httpx.HTTPError:
                pass
            stop.wait(0.2)

    watcher = threading.Thread(target=watch, name="search-catches-up", daemon=True)
    watcher.start()
    try:
        yield caught_up
    finally:
        stop.set()
        watcher.join(timeout=30)


@pytest.mark.parametrize(
    ("duplicate_window", "resend_refused"),
    [
        # MyInvois's 10 minutes: every re-send of a submission that did arrive is answered 422.
        pytest.param(600.0, True, id="resend-gets-422"),
        # A window shorter than any re-send takes (reconciliation waits 1 s before searching):
        # the re-send is accepted and its documents end DS302, naming the earlier document,
        # which the poll adopts.
        pytest.param(1.0, False, id="resend-accepted-then-ds302"),
    ],
)
def test_search_lag_with_every_fault_still_ends_with_one_valid_document_per_invoice(
    duplicate_window: float, resend_refused: bool, tmp_path: Path
):
    faults = {
        **h.ALL_FAULTS,
        "lost_response_rate": {**h.ALL_FAULTS["lost_response_rate"], "submit": 0.25},
        "search_lag_seconds": HIDDEN_UNTIL_RESENT_SECONDS,
    }
    started = time.monotonic()
    with h.start_simulator(faults, seed=12, duplicate_submission_window_seconds=duplicate_window) as sim:
        erp = h.Erp(tmp_path / "erp.db", first=1, count=LAG_INVOICES + LAG_INVALID, invalid=LAG_INVALID)
        config = h.write_config(tmp_path, api_url=sim.base_url, erp=erp, rate_backend=None, once_timeout=170)

        with _search_catches_up_after_an_answered_resend(sim.base_url, tmp_path / "state" / "ledger.sqlite") as caught_up:
            summary = h.run_once(config, log=tmp_path / "connector.log", timeout=200)

        assert summary["finished"] is True and summary["problem"] is None, summary
        assert caught_up.is_set(), "no search missed an arrived document, or no re-send was answered, while MyInvois's search hid every document"
        sim_stats = h.stats(sim.base_url)
        injected = sim_stats["faults_injected"]
        assert injected.get("search_lag", 0) > 0, f"no search missed a document: {injected}"
        counters = h.status(config)["counters"]
        # Answers were lost, a search missed what had arrived, and the bytes went again.
        assert counters.get("submissions_in_doubt", 0) > 0, counters
        assert counters.get("reconciled_resent", 0) > 0, counters
        assert "submissions_escalated" not in counters, counters
        figures = h.assert_exactly_once(sim, [erp])
        if resend_refused:
            # MyInvois refused the identical payloads itself; nothing was accepted twice, and a
            # later search found each first send.
            assert counters.get("duplicate_submission_answers", 0) > 0, counters
            assert counters.get("reconciled_found", 0) > 0, counters
            assert figures["accepted_twice_then_ds302"] == 0, figures
        else:
            # Accepted twice, the second one DS302, and the earlier, valid document kept. (A
            # re-send whose 202 was lost too may be found by the search as the original, and
            # its DS302 twins are then never polled: adopted at most once per twin.)
            assert figures["accepted_twice_then_ds302"] > 0, figures
            assert 0 < counters.get("duplicates_adopted", 0) <= figures["accepted_twice_then_ds302"], (counters, figures)
        assert figures["valid"] == LAG_INVOICES and figures["duplicates"] == 0, figures
        h.assert_within_limits(sim_stats)
        erp.close()
    print(
        f"\n== search hidden until a re-send was answered, then lagging {SEARCH_LAG_SECONDS:g} s; duplicate window {duplicate_window:g} s "
        f"({time.monotonic() - started:.0f} s)"
    )
    print("   " + ", ".join(f"{k} {v}" for k, v in sorted(figures.items())))
    print("   faults injected: " + ", ".join(f"{k} {v}" for k, v in sorted(injected.items())))
    print("   ledger counters: " + ", ".join(f"{k} {v}" for k, v in sorted(counters.items())))


# --- 2. a refused re-send ----------------------------------------------------------------------

REFUSED_INVOICES = 10
REFUSED_MAX_DOCUMENTS = 5
REFUSED_SUBMISSIONS = REFUSED_INVOICES // REFUSED_MAX_DOCUMENTS
#: Outlasts the whole refusal phase: every search in it misses the documents MyInvois holds.
REFUSAL_SEARCH_LAG_SECONDS = 120.0
#: Refused re-sends of each submission before MyInvois is allowed to answer again.
REFUSED_RESENDS = 2
#: Only a connector that stopped re-sending takes this long to be refused that often.
REFUSAL_DEADLINE_SECONDS = 90.0


def _ledger_counter(url: str, name: str) -> int:
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            return conn.execute(text("SELECT value FROM counters WHERE name = :n"), {"n": name}).scalar() or 0
    finally:
        engine.dispose()


def _ledger_states(url: str) -> tuple[dict[str, int], dict[str, int]]:
    """(documents by state, submissions by state), read while the connector runs."""
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            docs = dict(conn.execute(text("SELECT state, count(*) FROM documents GROUP BY state")).all())
            subs = dict(conn.execute(text("SELECT state, count(*) FROM submissions GROUP BY state")).all())
            return docs, subs
    finally:
        engine.dispose()


@pytest.mark.parametrize(
    "refusal",
    [
        # 429: certainly not processed. A first send would go back to pending; a re-send must not.
        pytest.param({"spurious_429_rate": {"submit": 1.0}}, id="resend-refused-429"),
        pytest.param({"error_rate": {"submit": 1.0}}, id="resend-refused-5xx"),
    ],
)
def test_a_refused_resend_keeps_the_documents_in_doubt_until_myinvois_answers(refusal: dict, tmp_path: Path):
    state = tmp_path / "state"
    state.mkdir()
    ledger_url = f"sqlite:///{state / 'ledger.sqlite'}"
    Ledger(ledger_url).close()  # the connector's own ledger, created first so that ...
    state_log.install(ledger_url)  # ... every state change it sees is recorded
    # Every submit answer is lost, and the search lags far behind.
    with h.start_simulator({"lost_response_rate": {"submit": 1.0}, "search_lag_seconds": REFUSAL_SEARCH_LAG_SECONDS}, seed=13) as sim:
        erp = h.Erp(tmp_path / "erp.db", first=1, count=REFUSED_INVOICES)
        config = h.write_config(
            tmp_path, api_url=sim.base_url, erp=erp, rate_backend="memory", max_documents=REFUSED_MAX_DOCUMENTS, once_timeout=170
        )
        h.set_option(config, "cycles", "reconcile_after_seconds", 0.5)
        # Escalation (an operator decides) is another path; here MyInvois comes back first.
        h.set_option(config, "cycles", "reconcile_max_attempts", 1000)
        # Lost answers and 5xx make the profile's sending back off as from an outage: 5 s
        # doubling in production, compressed here like the rate window, so that the refusals
        # come within seconds instead of 5 + 10 + 20 s (tests/exactly_once/test_myinvois_outage.py
        # tests the back-off itself).
        h.set_option(config, "retry", "outage_initial_delay_s", 0.5)
        log = tmp_path / "connector.log"
        proc = h.start_connector(config, "--once", "--json", log=log)
        try:
            # Every batch reached MyInvois once; then each re-send is refused.
            assert h.wait_until(lambda: h.stats(sim.base_url)["submissions"] >= REFUSED_SUBMISSIONS or proc.poll() is not None, 90, 0.05), (
                log.read_text("utf-8", "replace")[-3000:]
            )
            h.update_faults(sim.base_url, lost_response_rate=0.0, **refusal)
            resent_before = _ledger_counter(ledger_url, "reconciled_resent")
            states_seen: list[tuple[dict[str, int], dict[str, int]]] = []

            def refused_often_enough() -> bool:
                states_seen.append(_ledger_states(ledger_url))
                return proc.poll() is not None or (
                    _ledger_counter(ledger_url, "reconciled_resent") >= resent_before + REFUSED_RESENDS * REFUSED_SUBMISSIONS
                )

            assert h.wait_until(refused_often_enough, REFUSAL_DEADLINE_SECONDS, 0.3), (
                f"the re-sends were not tried {REFUSED_RESENDS} times each; see {log}"
            )
            assert proc.poll() is None, log.read_text("utf-8", "replace")[-3000:]
            during = h.stats(sim.base_url)
            # The re-sends reached MyInvois and were refused; nothing was accepted again.
            refused = during["faults_injected"].get("spurious_429", 0) + during["faults_injected"].get("error_500", 0) + during[
                "faults_injected"
            ].get("error_503", 0)
            assert refused >= REFUSED_RESENDS * REFUSED_SUBMISSIONS, during["faults_injected"]
            assert during["submissions"] == REFUSED_SUBMISSIONS, during["requests"]["submit"]
            # Throughout, the documents stayed claimed (in doubt), never pending again.
            for documents_by_state, submissions_by_state in states_seen:
                assert set(documents_by_state) == {"submitting"}, documents_by_state
                assert set(submissions_by_state) <= {"sending", "in_doubt", "reconciling", "resending"}, submissions_by_state

            # MyInvois answers again and its search catches up: the first sends are found.
            h.clear_faults(sim.base_url)
            proc.wait(timeout=120)
            output = log.read_text("utf-8", "replace")
            assert proc.returncode == 0, output[-3000:]
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()

        sim_stats = h.stats(sim.base_url)
        # Each batch was accepted exactly once: its first send. No re-send was ever taken.
        assert sim_stats["submissions"] == REFUSED_SUBMISSIONS
        assert sim_stats["requests"]["submit"].get("202") == REFUSED_SUBMISSIONS, sim_stats["requests"]["submit"]
        counters = h.status(config)["counters"]
        assert counters.get("reconciled_found") == REFUSED_SUBMISSIONS, counters
        assert "submissions_escalated" not in counters, counters
        # Not one document went back to pending, where it would have been rebuilt and sent anew.
        changes = state_log.seen(ledger_url)
        assert ("documents", "submitting", "pending") not in changes, sorted(changes, key=str)
        assert state_log.undeclared(ledger_url) == set()
        figures = h.assert_exactly_once(sim, [erp])
        assert figures["valid"] == REFUSED_INVOICES and figures["accepted_twice_then_ds302"] == 0, figures
        erp.close()


# --- 3. one invoice number on two ERP rows -------------------------------------------------------

OTHER_BUYER = "Pembeli Lain Sdn. Bhd."


def _assert_one_valid_and_the_twin_refused(sim, rows: dict[str, dict], holder: tuple[str, str], twin: tuple[str, str], twin_rows: dict[str, dict]) -> None:
    """``holder`` and ``twin`` are (source, row key); ``rows``/``twin_rows`` their sources' rows by key."""
    held, refused = rows[holder[1]], twin_rows[twin[1]]
    number = held["invoice_number"]
    assert refused["invoice_number"] == number
    documents = [d for d in sim.simulator.store.documents.values() if d.internal_id == number]
    valid = [d for d in documents if d.status(time.time()) == "Valid"]
    assert len(valid) == 1, f"{number}: {len(valid)} valid documents at MyInvois"
    # Only the holder's content was ever sent: MyInvois never saw the twin.
    assert len(documents) == 1, f"{number}: MyInvois holds {len(documents)} documents"
    assert held["myinvois_status"] == "valid" and held["myinvois_uuid"] == valid[0].uuid, held
    assert refused["myinvois_status"] == "locally_invalid", refused
    assert refused["myinvois_uuid"] is None, f"row {twin} was given the uuid of row {holder}: {refused}"
    errors = refused["myinvois_errors"] or ""
    assert f"row {holder[1]} of source {holder[0]}" in errors and number in errors, errors
    assert "own number" in errors, errors


def test_two_rows_with_one_invoice_number_end_with_one_valid_document_and_the_other_row_named(tmp_path: Path):
    """Three ways two ERP rows come to share a number, all in one run of faults (lost submit
    answers and a lagging search, so the holder's own submission is reconciled):

    * twins in one source and one page (a clerk copied the row and edited it);
    * twins in two sources of one profile (two ERP databases numbering alike);
    * a twin that appears after its holder is already valid."""
    faults = {"lost_response_rate": {"submit": 0.4}, "search_lag_seconds": 3.0, "slow_validation_rate": 0.3, "slow_validation_seconds": 1.5}
    with h.start_simulator(faults, seed=14) as sim:
        erp = h.Erp(tmp_path / "erp.db", first=1, count=30)
        # Same numbers as rows 1-3 of the same table, another buyer: other content.
        in_source = {key: erp.add(1, invoice_number=f"INV-{int(key):06d}", buyer_name=OTHER_BUYER)[0] for key in ("1", "2", "3")}
        other = h.Erp(tmp_path / "erp-b.db", first=501, count=10)
        # The second source numbers like the first: its rows 511-513 take the numbers of rows 4-6.
        cross_source = {key: other.add(1, invoice_number=f"INV-{int(key):06d}", buyer_name=OTHER_BUYER)[0] for key in ("4", "5", "6")}
        config = h.write_config(tmp_path, api_url=sim.base_url, erp=erp, rate_backend="memory", max_documents=5, once_timeout=120)
        h.add_source(config, "erp_b", other)
        h.set_option(config, "cycles", "reconcile_after_seconds", 0.5)
        log = tmp_path / "connector.log"

        summary = h.run_once(config, log=log, timeout=150)
        assert summary["finished"] is True and summary["problem"] is None, summary
        assert h.stats(sim.base_url)["faults_injected"].get("lost_response", 0) > 0

        # In one source, the holder was recorded first (the earlier row of the page). The two
        # sources are fetched at the same time (cycles.fetch_concurrency), so which of them
        # recorded a shared number first is a race: whichever did holds it, the other is refused.
        rows, other_rows = erp.rows_by_key(), other.rows_by_key()
        for holder, twin in in_source.items():
            _assert_one_valid_and_the_twin_refused(sim, rows, ("erp", holder), ("erp", twin), rows)
        for key_a, key_b in cross_source.items():
            if rows[key_a]["myinvois_status"] == "valid":
                _assert_one_valid_and_the_twin_refused(sim, rows, ("erp", key_a), ("erp_b", key_b), other_rows)
            else:
                _assert_one_valid_and_the_twin_refused(sim, other_rows, ("erp_b", key_b), ("erp", key_a), rows)

        # A twin appears once its holder is valid at MyInvois, and the connector runs again.
        late = {key: erp.add(1, invoice_number=f"INV-{int(key):06d}", buyer_name=OTHER_BUYER)[0] for key in ("7", "8")}
        summary = h.run_once(config, log=log, timeout=150)
        assert summary["finished"] is True and summary["problem"] is None, summary
        rows = erp.rows_by_key()
        for holder, twin in late.items():
            _assert_one_valid_and_the_twin_refused(sim, rows, ("erp", holder), ("erp", twin), rows)
            assert "valid" in rows[twin]["myinvois_errors"], rows[twin]  # the holder's state is named

        # Every other invoice: valid once, its ERP row holding the uuid of its one Valid document.
        twins = {*in_source.values(), *late.values()}
        sim_stats = h.stats(sim.base_url)
        assert sim_stats["duplicate_documents"] == 0
        for source, source_rows in (("erp", rows), ("erp_b", other.rows_by_key())):
            for key, row in source_rows.items():
                if (source == "erp" and key in twins) or key in cross_source or key in cross_source.values():
                    continue  # checked above
                assert row["myinvois_status"] == "valid", (source, row)
                assert h.simulator_documents(sim)[row["myinvois_uuid"]] == (row["invoice_number"], "Valid"), (source, row)
        assert all(n == 1 for n in sim_stats["valid_by_invoice"].values()), sim_stats["valid_by_invoice"]
        assert len(sim_stats["valid_by_invoice"]) == 30 + 10
        incidents = h.status(config)["incidents"]
        assert any(i["kind"] == "duplicate_number" for i in incidents), incidents
        erp.close()
        other.close()
