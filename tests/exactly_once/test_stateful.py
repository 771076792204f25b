"""Exactly once, whatever the order: two connectors on one ledger, driven by Hypothesis.

Section 4 of the issue "Exactly once for every invoice…". The scenarios of test_scenarios.py
each pin one race; here a rule-based state machine interleaves the steps of two in-process
connectors, ``a`` and ``b`` (one ledger, one simulator, one client id), with what a clerk does
in the ERP and what goes wrong on the way: lost submit answers, slow validation, 429s, search
lag, outcomes the ERP refuses, a fetch whose edit races the other connector's claim, another
system sending a document with one of our numbers and issue moments, and a connector dying in
the middle of any stage (the Connector object is dropped at a chosen point and a new one opens
on the same state_dir, which runs start-up recovery).

After every step the invariants of ``stateful_support`` must hold; at the end the faults go,
everything must settle, and every invoice must be Valid at MyInvois exactly once, with its own
ERP row told so.

Each example has its own simulator and its own fresh ledger. MYINVOIS_STATEFUL_EXAMPLES sets
the number of examples (docs/operations.md, "Testing exactly-once at length").
"""

from __future__ import annotations

import os
import tempfile
import time
from contextlib import ExitStack
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    Bundle,
    RuleBasedStateMachine,
    initialize,
    invariant,
    multiple,
    precondition,
    rule,
    run_state_machine_as_test,
)

from connector_core.ledger import Ledger
from connector_core.pipeline.fetch import fetch_source
from connector_core.pipeline.poll import poll_profile
from connector_core.pipeline.reconcile import reconcile_profile
from connector_core.pipeline.report import report_source
from connector_core.pipeline.submit import submit_profile
from connector_core.simulator import run_in_thread
from tests import state_log
from tests.exactly_once import stateful_support as support
from tests.exactly_once.conftest import fresh_ledger_url
from tests.exactly_once.erp import MemoryErp
from tests.exactly_once.stateful_support import PROFILE, SOURCE, Crash

pytestmark = pytest.mark.slow

EXAMPLES = int(os.environ.get("MYINVOIS_STATEFUL_EXAMPLES", "20"))
STEPS_PER_EXAMPLE = int(os.environ.get("MYINVOIS_STATEFUL_STEPS", "20"))
#: ERP rows per example: enough for batches of several documents, few enough to stay fast.
MAX_ROWS = 5
#: Rounds of every stage of both connectors allowed to settle; a healthy ledger needs two or
#: three, and rounds after the quick ones are a second apart.
SETTLE_ROUNDS = 8
QUICK_SETTLE_ROUNDS = 4

#: One stage of one connector, run once.
STAGES = {
    "fetch": lambda c: fetch_source(c.ctx, c.ctx.sources[SOURCE]),
    "submit": lambda c: submit_profile(c.ctx, PROFILE),
    "reconcile": lambda c: reconcile_profile(c.ctx, PROFILE),
    "poll": lambda c: poll_profile(c.ctx, PROFILE),
    "write_back": lambda c: report_source(c.ctx, c.ctx.sources[SOURCE]),
}
LOST_ANSWERS = {"lost_response_rate": {"submit": 1.0}}
SLOW_VALIDATION = {"slow_validation_rate": 1.0}
THROTTLED = {"spurious_429_rate": {"submit": 1.0}}
#: What a connector can be told to do in one step: the stages it runs, in the daemon's two
#: cycles (fetch and submit; poll and write back) or alone, and what goes wrong meanwhile:
#: faults at MyInvois for the step's submit calls, or the connector dying at a point of
#: stateful_support.CRASH_POINTS (then it starts again). A submit round reconciles first,
#: then builds, claims and sends. The first step is the one Hypothesis falls back on.
STEPS: dict[str, tuple[tuple[str, ...], dict | str | None]] = {
    "fetch_and_submit": (("fetch", "submit"), None),
    "fetch_and_submit_answers_lost": (("fetch", "submit"), LOST_ANSWERS),
    "fetch_and_submit_validated_slowly": (("fetch", "submit"), SLOW_VALIDATION),
    "fetch_and_submit_throttled": (("fetch", "submit"), THROTTLED),
    "fetch_and_die_after_recording": (("fetch", "submit"), "after_recording_fetch"),
    "fetch_and_submit_and_die_before_sending": (("fetch", "submit"), "before_sending"),
    "fetch_and_submit_and_die_after_sending": (("fetch", "submit"), "after_sending"),
    # Alone: what is fetched stays pending for the other connector, or for a race.
    "fetch": (("fetch",), None),
    "reconcile": (("reconcile",), None),
    "reconcile_and_die_while_reconciling": (("reconcile",), "while_reconciling"),
    "poll_and_write_back": (("poll", "write_back"), None),
    "poll_and_die_before_recording": (("poll", "write_back"), "before_recording_poll"),
    "poll_and_write_back_and_die_before_marking_reported": (("poll", "write_back"), "before_marking_reported"),
}
NO_FAULTS = {"lost_response_rate": 0.0, "slow_validation_rate": 0.0, "spurious_429_rate": 0.0}
WORLD_EVENTS = ("an_hour_passes", "search_starts_lagging", "search_catches_up", "another_system_takes_a_number")
CLERK_ACTIONS = ("edits", "edits_and_requeues", "requeues_unchanged", "closes_the_period", "reopens_the_period")


class TwoConnectorsOneLedger(RuleBasedStateMachine):
    """Rules are few and broad (one per actor, the connector's step an argument) so that
    Hypothesis, choosing among rules evenly, gives the two connectors a good share of the
    steps."""

    rows = Bundle("rows")

    def __init__(self, backend: str, base_dir: Path) -> None:
        super().__init__()
        self.backend = backend
        self.resources = ExitStack()
        try:
            self.workdir = Path(self.resources.enter_context(tempfile.TemporaryDirectory(dir=base_dir)))
            self.ledger_url = fresh_ledger_url(backend, self.workdir, self.resources)
            if backend == "sqlite":
                Ledger(self.ledger_url).close()  # create the schema, then watch every state change
                state_log.install(self.ledger_url)
            self.sim = self.resources.enter_context(run_in_thread(support.simulator_config()))
            self.erp = MemoryErp()
            self.connectors = {}
            self.resources.callback(self._close_connectors)
            for name in ("a", "b"):
                self.connectors[name] = support.open_connector(self.workdir, self.ledger_url, self.sim, self.erp, name)
        except BaseException:
            self.resources.close()
            raise
        #: A step raised or an invariant broke: teardown then only cleans up.
        self.failed = False
        #: Another system sends a twin of the next document a connector submits.
        self.another_system_waits = False

    def _close_connectors(self) -> None:
        for connector in self.connectors.values():
            connector.close()

    # --- the ERP ---------------------------------------------------------------------------------

    @initialize(target=rows, invoices=st.integers(1, 3), search_lags=st.booleans())
    def start(self, invoices, search_lags):
        """Every example has invoices from its first step (without them most steps find nothing
        to do), and half of them start with MyInvois's search lagging, so that in-doubt
        submissions are re-sent rather than found."""
        if search_lags:
            support.change_faults(self.sim, search_lag_seconds=support.SEARCH_LAG_SECONDS)
        return multiple(*(self._add_row() for _ in range(invoices)))

    @precondition(lambda self: len(self.erp.rows) < MAX_ROWS)
    @rule(target=rows, number_of=st.none() | rows)
    def erp_adds_an_invoice(self, number_of):
        """``number_of``: another row whose invoice number this one takes (with other content)."""
        return self._add_row(number_of)

    @rule(key=rows, action=st.sampled_from(CLERK_ACTIONS))
    def clerk(self, key, action):
        if action == "edits":
            self.erp.edit(key)
        elif action == "edits_and_requeues":
            self.erp.edit(key, requeue=True)
        elif action == "requeues_unchanged":
            self.erp.requeue(key)
        elif action == "closes_the_period":
            self.erp.refuse.add(key)  # the ERP refuses this row's outcomes
        else:
            self.erp.refuse.discard(key)

    @precondition(lambda self: self._race_candidates())
    @rule(data=st.data(), fetcher=st.sampled_from(["a", "b"]))
    def clerk_edit_races_a_claim(self, data, fetcher):
        """The clerk edits and requeues a row whose recorded version is unclaimed (pending);
        ``fetcher`` fetches it, and between its read of that version and its write of the
        edit, the other connector runs a submit round, which claims the version.

        A rule of its own, offered only when a row can be brought there (its version pending
        in the ledger, or its row pending in the ERP: fetched first, then edited): the race
        needs that, which the other steps seldom leave in place."""
        key = data.draw(st.sampled_from(self._race_candidates()), label="row")
        if key not in support.unclaimed_keys(self.connectors["a"]):
            self._run(fetcher, "fetch")
        self.erp.edit(key, requeue=True)
        self._fetch_while_the_other_claims(fetcher)

    # --- the connectors ----------------------------------------------------------------------------

    @rule(step=st.sampled_from(list(STEPS)))
    def a(self, step):
        self._run("a", step)

    @rule(step=st.sampled_from(list(STEPS)))
    def b(self, step):
        self._run("b", step)

    # --- MyInvois and the clock --------------------------------------------------------------------

    @rule(event=st.sampled_from(WORLD_EVENTS))
    def world(self, event):
        """An hour passing finishes slow validations and ends the connectors' waits (next poll,
        write-back back-off). Search lag stays until it is caught up: it is what sends a
        reconciliation down the re-send path. Another system taking a number: just before the
        next document a connector submits, a document with its number and issue moment but
        other content reaches MyInvois (stateful_support.send_a_foreign_twin_first)."""
        if event == "an_hour_passes":
            support.let_time_pass(self.sim, self.connectors["a"].ledger.engine)
        elif event == "another_system_takes_a_number":
            self.another_system_waits = True
        else:
            lag = support.SEARCH_LAG_SECONDS if event == "search_starts_lagging" else 0.0
            support.change_faults(self.sim, search_lag_seconds=lag)

    # --- after every step ----------------------------------------------------------------------------

    @invariant()
    def exactly_once_holds(self):
        """Checked together so that MyInvois and the ledger are read once per step; a failure
        names which of them broke."""
        sim_docs = support.at_myinvois(self.sim)
        ledger = support.ledger_view(self.connectors["a"])
        broken = {
            "at most one Valid document per invoice": support.second_valid_documents(sim_docs),
            "every document at MyInvois known to the ledger": support.documents_unknown_to_the_ledger(sim_docs, ledger),
            "one claim per invoice": support.claims_in_conflict(ledger),
            "the ERP told only its own documents": support.outcomes_naming_other_documents(self.erp, sim_docs),
        }
        broken = {name: problems for name, problems in broken.items() if problems}
        self.failed = self.failed or bool(broken)
        assert not broken, support.describe(broken, self.erp, sim_docs, ledger)

    # --- the end ---------------------------------------------------------------------------------------

    def teardown(self):
        try:
            if self.failed:
                return  # the failure already reported says it all; settling would only add noise
            self._settle()
            sim_docs = support.at_myinvois(self.sim)
            ledger = support.ledger_view(self.connectors["a"])
            problems = support.unsettled(self.erp, sim_docs, ledger)
            assert not problems, support.describe({"settled": problems}, self.erp, sim_docs, ledger)
            if self.backend == "sqlite":
                assert state_log.undeclared(self.ledger_url) == set(), "state changes not declared in the state machine"
        finally:
            self.resources.close()

    def _settle(self) -> None:
        """Faults off, the ERP takes everything again; then, while time passes, every stage of
        both connectors runs until nothing is left to do."""
        support.change_faults(self.sim, search_lag_seconds=0.0, **NO_FAULTS)
        self.erp.refuse.clear()
        for round_no in range(SETTLE_ROUNDS):
            if round_no >= QUICK_SETTLE_ROUNDS:
                # Reconciliation searches up to the current second, cut to whole seconds: a
                # document received in this second (its request held back by a 429's
                # cool-down) is found from the next one. Only real time moves that window.
                time.sleep(1.0)
            for x in self.connectors:
                support.let_time_pass(self.sim, self.connectors[x].ledger.engine)
                self._run_step(x, "fetch_and_submit")
                self._run_step(x, "poll_and_write_back")
            if support.settled(self.erp, support.ledger_view(self.connectors["a"])):
                return

    # --- helpers ------------------------------------------------------------------------------------

    def _race_candidates(self) -> list[str]:
        with self.erp.lock:
            waiting_in_erp = {row.key for row in self.erp.rows.values() if row.status == "pending"}
        return sorted(waiting_in_erp | support.unclaimed_keys(self.connectors["a"]))

    def _add_row(self, number_of: str | None = None) -> str:
        key = f"k{len(self.erp.rows) + 1}"
        if number_of is None:
            self.erp.add(key)
        else:
            self.erp.add(key, number=self.erp.rows[number_of].number).revision = 100  # its own content
        return key

    def _run(self, x: str, step: str) -> None:
        client = self.connectors[x].clients[PROFILE]
        twin_sent = support.send_a_foreign_twin_first(self.connectors[x], self.sim) if self.another_system_waits else None
        try:
            self._run_step(x, step)
        except BaseException:
            self.failed = True
            raise
        finally:
            if twin_sent is not None:
                vars(client).pop("submit", None)  # not sent: it waits for a step that sends
                self.another_system_waits = not twin_sent()

    def _run_step(self, x: str, step: str) -> None:
        connector = self.connectors[x]
        stages, mishap = STEPS[step]

        def run_stages() -> None:
            for stage in stages:
                STAGES[stage](connector)

        if isinstance(mishap, str):
            support.arm_crash(connector, mishap)
            try:
                run_stages()  # a step that never reaches its point runs to its end; x restarts anyway
            except Crash:
                pass
            connector.close()
            self.connectors[x] = support.open_connector(self.workdir, self.ledger_url, self.sim, self.erp, x)
        elif isinstance(mishap, dict):
            support.change_faults(self.sim, **mishap)
            try:
                run_stages()
            finally:
                support.change_faults(self.sim, **NO_FAULTS)
        else:
            run_stages()

    def _fetch_while_the_other_claims(self, x: str) -> None:
        connector = self.connectors[x]
        other = self.connectors["b" if x == "a" else "a"]
        try:
            with support.BeforeTheEdit(connector.ledger.engine, lambda: STAGES["submit"](other)):
                STAGES["fetch"](connector)
        except BaseException:
            self.failed = True
            raise


CI_SETTINGS = settings(
    max_examples=EXAMPLES,
    stateful_step_count=STEPS_PER_EXAMPLE,
    deadline=None,
    # Each example starts a simulator and a ledger: slow by Hypothesis's measure, by design.
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    # No example database in the working tree; a failure prints its steps and a reproduce blob.
    database=None,
    print_blob=True,
    # CI replays the same examples every run, so a red CI names a real regression, not a new
    # draw; MYINVOIS_STATEFUL_EXAMPLES (docs/operations.md) draws fresh ones at length.
    derandomize="MYINVOIS_STATEFUL_EXAMPLES" not in os.environ,
)


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_two_connectors_on_one_ledger_send_every_invoice_exactly_once(backend, tmp_path):
    with ExitStack() as probe:
        # Skips (or, with MYINVOIS_REQUIRE_SERVICES=1, fails) here, naming the missing service,
        # rather than inside an example.
        fresh_ledger_url(backend, tmp_path, probe)
    run_state_machine_as_test(lambda: TwoConnectorsOneLedger(backend, tmp_path), settings=CI_SETTINGS)


def test_reconciliation_never_takes_another_systems_document_for_ours(tmp_path):
    """A failure the state machine found, cut to its four steps. Another system's document
    with k1's number and issue moment is Valid at MyInvois; ours arrives after it (refused as
    its DS302 duplicate) and its answer is lost. Reconciling must not record the other
    system's uuid as k1's: scenario E's rule (only our own bytes are ever adopted) holds on
    this path too."""
    machine = TwoConnectorsOneLedger("sqlite", tmp_path)
    try:
        machine.start(invoices=1, search_lags=False)
        machine.a(step="fetch")
        machine.world(event="another_system_takes_a_number")
        machine.a(step="fetch_and_submit_answers_lost")
        machine.a(step="reconcile")
        machine.exactly_once_holds()
    finally:
        machine.teardown()
