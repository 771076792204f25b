"""Parts of the stateful exactly-once test (``test_stateful.py``): connectors that die at a
chosen point, a clock the test moves, and the checks of what MyInvois, the ledger and the ERP
hold after each step.

Kept apart from the state machine so that the machine reads as the list of things that can
happen, and this module as the list of things that must stay true.
"""

from __future__ import annotations

import base64
import hashlib
import itertools
import json
import re
import threading
import time
from collections import Counter, defaultdict
from collections.abc import Callable
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from sqlalchemy import event, select, update

from connector_core.api import ApiError
from connector_core.contract import FINAL_STATES
from connector_core.ledger import utcnow
from connector_core.ledger.schema import documents, submissions
from connector_core.plugins import PluginHost
from connector_core.runtime import Connector
from connector_core.settings import Settings
from connector_core.simulator import SimulatorConfig
from connector_core.simulator.config import FaultsConfig
from tests.document.factories import DEMO_TIN
from tests.exactly_once.erp import MemoryErp

PROFILE = "main"
SOURCE = "erp"
#: Slow validation and search lag last "an hour": nothing in an example outlives them unless
#: the test moves the clock (:func:`let_time_pass`) or turns the fault off. A step then never
#: depends on how many milliseconds the steps before it took.
SLOW_VALIDATION_SECONDS = 3600.0
SEARCH_LAG_SECONDS = 3600.0
#: Polls of an unfinished submission wait this long: one poll per step at most, the next only
#: once the test lets time pass (with no wait, the poll stage would spin until validation ends).
POLL_INTERVAL_SECONDS = 3600.0
#: A step of the other connector run inside a fetch: far longer than it takes, short of a hang.
RACE_TIMEOUT_SECONDS = 60.0

FINAL = {s.value for s in FINAL_STATES}
#: Submissions whose documents may be at MyInvois without the ledger knowing their uuids yet.
UNRESOLVED = {"in_doubt", "reconciling", "resending", "escalated"}
#: Submissions that hold no claim any more (``watching``: every document final, some watched).
CLOSED = {"done", "watching", "refused", "not_sent"}
IN_FLIGHT = {"submitting", "submitted"}
VALIDATED = {"valid", "changed_after_valid"}
#: How a row learns that its number is taken: by another ERP row (intake), or by a document
#: MyInvois already holds from elsewhere (a DS302 the poll would not adopt).
_NUMBER_TAKEN = re.compile(r"already used by row|MyInvois already holds document")
_DS302_EARLIER = re.compile(r"duplicate of document ([A-Z0-9]{26})")


def simulator_config() -> SimulatorConfig:
    """Instant validation unless a step asks for a slow one; no rate limits (each example has
    its own simulator, and limits are tested elsewhere); the 10-minute duplicate-submission
    window kept, so that a blind re-send of something that arrived gets its 422."""
    return SimulatorConfig(
        seed=11,
        validation={"delay_seconds": 0.0, "per_document_seconds": 0.0},
        rate_limits={"profile": "off"},
        faults={"slow_validation_seconds": SLOW_VALIDATION_SECONDS},
    )


def open_connector(workdir: Path, ledger_url: str, sim, erp: MemoryErp, name: str) -> Connector:
    """Connector ``name`` on the shared ledger, as ``conftest.make_connector`` builds it, except
    that the client-side rate limits are off: LHDN's production profile spaces Search calls
    5 s apart, which would make every reconciliation of an example cost seconds.

    Opening it runs start-up recovery, so this is also how a crashed connector comes back."""
    settings = Settings(
        environment="simulator",
        api_base_url=sim.base_url,
        # Plain HTTP on loopback: no certificate is ever checked, and loading the CA bundle
        # would cost 0.15 s each time a connector opens (every crash of an example).
        verify_tls=False,
        state_dir=workdir / f"connector-{name}",
        ledger={"url": ledger_url},
        rate_limits={"backend": "memory", "profile": "off"},
        # A 429 reaches the pipeline at once (the document goes back to pending) instead of
        # being waited out inside the client.
        retry={
            "read_timeout_s": 10,
            "base_delay_s": 0.05,
            "max_delay_s": 0.2,
            "read_max_attempts": 2,
            "rate_limited_max_retries": 0,
        },
        cycles={
            "first_poll_delay_seconds": 0.0,
            "first_poll_delay_per_document_seconds": 0.0,
            "poll_min_interval_seconds": POLL_INTERVAL_SECONDS,
            "poll_max_interval_seconds": POLL_INTERVAL_SECONDS,
            "reconcile_after_seconds": 0.0,
            # Escalation hands a submission to an operator, which no settling can replace;
            # scenario H tests it. Here every in-doubt submission must be resolved by the code.
            "reconcile_max_attempts": 1000,
        },
        submission={"concurrency": 1},
        profiles={PROFILE: {"tin": DEMO_TIN, "client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret"}},
        sources={SOURCE: {"kind": erp.kind, "profile": PROFILE}},
    )
    return Connector(settings, host=PluginHost(load_entry_points=False, extra_plugins=(erp,)))


def change_faults(sim, **faults: Any) -> None:
    """What ``conftest.set_faults`` does over HTTP (keep the other faults, validate, replace),
    in-process: each HTTP round trip built a client and cost a third of a second per step."""
    injector = sim.simulator.faults
    injector.replace(FaultsConfig.model_validate({**injector.config.model_dump(), **faults}))


# --- dying at a chosen point ----------------------------------------------------------------


class Crash(BaseException):
    """The connector's process dies here. A BaseException, so that no ``except Exception`` of
    the pipeline records anything on its way out, as with a SIGKILL."""


#: Where a connector can die, as (object path on the Connector, method, before or after the real call).
CRASH_POINTS: dict[str, tuple[str, str, str]] = {
    # The page is in the ledger; the ERP never heard it was taken (its rows stay pending).
    "after_recording_fetch": ("ledger.intake", "record_fetched", "after"),
    # Claimed with its bytes into a "sending" submission; the request never left.
    "before_sending": ("clients.main", "submit", "before"),
    # The request reached MyInvois (whatever it answered); the answer was never recorded.
    "after_sending": ("clients.main", "submit", "after"),
    # The reconciliation is ours ("reconciling"); nothing searched or re-sent yet.
    "while_reconciling": ("ledger.sends", "take_reconciliation", "after"),
    # Get Submission answered; its statuses were never recorded.
    "before_recording_poll": ("ledger.polls", "record_poll", "before"),
    # The ERP took the outcomes; the ledger never marked them reported.
    "before_marking_reported": ("ledger.writeback", "mark_reported", "before"),
}


def arm_crash(connector: Connector, point: str) -> None:
    """Make ``connector`` die at ``point``. Once dead, every statement it still tries on the
    ledger raises too: exception handlers on the way out must not write what a killed process
    could not (``reconcile_profile`` gives a reconciliation back on any exception, for one)."""
    path, method, when = CRASH_POINTS[point]
    owner: Any = connector
    for part in path.split("."):
        owner = owner[part] if isinstance(owner, dict) else getattr(owner, part)
    real = getattr(owner, method)
    dead = []

    def die() -> None:
        dead.append(point)
        raise Crash(point)

    def nothing_after_death(*_args) -> None:
        if dead:
            raise Crash(f"{point}: a dead connector wrote to the ledger")

    def tripped(*args, **kwargs):
        if when == "before":
            die()
        try:
            return real(*args, **kwargs)
        finally:
            die()

    event.listen(connector.ledger.engine, "before_cursor_execute", nothing_after_death)
    setattr(owner, method, tripped)


class BeforeTheEdit:
    """Start ``action`` on another thread just before ``engine`` first writes an edit of a
    recorded version (see :func:`is_content_edit`): another writer then acts between the
    fetch's read of that version and its write.

    On PostgreSQL and MariaDB the action is waited for, so it commits first. SQLite's fetch
    holds the database's write lock for its whole transaction: there the action waits for the
    fetch to commit, and the race is decided the other way (as in scenario A)."""

    def __init__(self, engine, action: Callable[[], None]) -> None:
        self.engine = engine
        self.thread: threading.Thread | None = None
        self.errors: list[BaseException] = []

        def run() -> None:
            try:
                action()
            except BaseException as exc:  # noqa: BLE001 - handed to the test's thread
                self.errors.append(exc)

        def before(conn, cursor, statement, parameters, context, executemany):
            if self.thread is None and is_content_edit(statement):
                self.thread = threading.Thread(target=run, name="the-other-connector")
                self.thread.start()
                if engine.dialect.name != "sqlite":
                    self.thread.join(RACE_TIMEOUT_SECONDS)

        self.listener = before

    def __enter__(self) -> BeforeTheEdit:
        event.listen(self.engine, "before_cursor_execute", self.listener)
        return self

    def __exit__(self, *exc) -> None:
        event.remove(self.engine, "before_cursor_execute", self.listener)
        if self.thread is not None:
            self.thread.join(RACE_TIMEOUT_SECONDS)
            if self.thread.is_alive():
                raise AssertionError(f"the other connector's step did not end within {RACE_TIMEOUT_SECONDS} s")
        if self.errors:
            raise self.errors[0]


def is_content_edit(statement: str) -> bool:
    """The fetch writing an ERP edit over a recorded version (edit_pending, edit_held)."""
    sql = statement.lstrip().upper()
    return sql.startswith("UPDATE DOCUMENTS") and "FINGERPRINT" in sql.split("WHERE")[0]


#: Written into the content of another system's documents: how the checks tell them from ours
#: (their uuids are not always known: a step that loses our answers may run right after).
FOREIGN_MARK = "(sent by another system)"
#: Each twin's content differs from the one before (a serial in it): an identical payload
#: would be MyInvois's 422 duplicate submission, not a document.
_TWIN_SERIALS = itertools.count(1)


def send_a_foreign_twin_first(connector: Connector, sim) -> Callable[[], bool]:
    """Before the next submit call of ``connector``, another system takes the number of its
    first document: a document with the same number, issuer and issue moment but other
    content reaches MyInvois first (a second installation sharing our client id, as in
    scenario E, or a manual upload). MyInvois then refuses ours as a DS302 duplicate of it.
    Returns a function telling whether the twin was sent."""
    client = connector.clients[PROFILE]
    real = type(client).submit.__get__(client)
    sent = []

    def submit(entries):
        del client.submit  # once
        # The other system's call meets none of the faults set for ours, and whatever it is
        # answered is its own business, not ours.
        injector = sim.simulator.faults
        ours = injector.config
        injector.replace(FaultsConfig(search_lag_seconds=ours.search_lag_seconds))
        try:
            real([foreign_twin(entries[0], next(_TWIN_SERIALS))])
        except ApiError:
            pass
        finally:
            injector.replace(ours)
        sent.append(True)
        return real(entries)

    client.submit = submit
    return lambda: bool(sent)


def foreign_twin(entry: dict[str, str], serial: int) -> dict[str, str]:
    document = json.loads(base64.b64decode(entry["document"]))
    line = document["Invoice"][0]["InvoiceLine"][0]
    line["Item"][0]["Description"][0]["_"] += f" {FOREIGN_MARK} #{serial}"
    raw = json.dumps(document, separators=(",", ":")).encode("utf-8")
    return {**entry, "document": base64.b64encode(raw).decode("ascii"), "documentHash": hashlib.sha256(raw).hexdigest()}


# --- the clock ------------------------------------------------------------------------------


def let_time_pass(sim, ledger_engine) -> None:
    """An hour passes, for what the connector and MyInvois wait on: slow validations finish,
    unfinished submissions are due for polling, write-back back-offs are over. (The simulator's
    search lag and duplicate-submission window are left alone: the test turns search lag off
    itself, and the window must keep refusing blind re-sends.)"""
    now = time.time()
    for document in list(sim.simulator.store.documents.values()):
        if document.ready_at > now:
            document.ready_at = now
    moment = utcnow() - timedelta(seconds=1)
    with ledger_engine.begin() as conn:
        conn.execute(
            update(submissions)
            .where(submissions.c.state == "accepted", submissions.c.next_poll_at > moment)
            .values(next_poll_at=moment)
        )
        conn.execute(update(documents).where(documents.c.next_report_at > moment).values(next_report_at=moment))


# --- what each party holds --------------------------------------------------------------------


@dataclass(frozen=True)
class AtMyInvois:
    uuid: str
    number: str
    valid: bool
    #: The earlier document a DS302 refusal names.
    duplicate_of: str | None
    sha256: str | None
    #: Sent by another system (:func:`send_a_foreign_twin_first`), not by our connectors.
    foreign: bool = False


def at_myinvois(sim) -> list[AtMyInvois]:
    out = []
    for d in list(sim.simulator.store.documents.values()):
        if d.issuer_tin != DEMO_TIN:
            continue
        earlier = None
        for problem in d.problems:
            if problem.code == "DS302":
                match = _DS302_EARLIER.search(problem.message or "")
                earlier = match.group(1) if match else None
        raw = d.raw_text()
        sha256 = hashlib.sha256(raw.encode()).hexdigest() if raw else None
        out.append(AtMyInvois(d.uuid, d.internal_id, d.valid, earlier, sha256, FOREIGN_MARK in (raw or "")))
    return out


@dataclass(frozen=True)
class LedgerView:
    documents: list[dict[str, Any]]
    submissions: dict[int, str]


def ledger_view(connector: Connector) -> LedgerView:
    status = connector.ledger.status
    return LedgerView(status.find_documents(), {s["id"]: s["state"] for s in status.find_submissions()})


def unclaimed_keys(connector: Connector) -> set[str]:
    """ERP rows whose latest recorded version waits, pending, to be claimed."""
    with connector.ledger.engine.connect() as conn:
        return set(conn.scalars(select(documents.c.source_key).where(documents.c.state == "pending")))


# --- invariants: each returns what breaks it, empty when it holds -----------------------------


def second_valid_documents(sim_docs: list[AtMyInvois]) -> list[str]:
    """At most one Valid document of ours per invoice number. An ERP row edited after Valid
    still has one: the connector reports it changed_after_valid and never sends the edit."""
    per_number = Counter(d.number for d in sim_docs if d.valid and not d.foreign)
    return [f"{number}: {n} Valid documents at MyInvois" for number, n in per_number.items() if n > 1]


def documents_unknown_to_the_ledger(sim_docs: list[AtMyInvois], ledger: LedgerView) -> list[str]:
    """Every document MyInvois took from our connectors is accounted for by the ledger: its
    uuid is recorded; or its bytes are those of a document whose submission is unresolved (the
    answer was lost: reconciliation will find it); or it is a DS302 refusal of an accounted
    document; or a recorded DS302 refusal names it (the poll adopts it)."""
    ours = [d for d in sim_docs if not d.foreign]
    known = {d["uuid"] for d in ledger.documents if d["uuid"]}
    unresolved_bytes = {
        d["document_hash"]
        for d in ledger.documents
        if d["state"] == "submitting" and ledger.submissions.get(d["submission_id"]) in UNRESOLVED
    }
    accounted = {d.uuid for d in ours if d.uuid in known or (d.sha256 and d.sha256 in unresolved_bytes)}
    changed = True
    while changed:
        before = len(accounted)
        for d in ours:
            if d.duplicate_of and (d.duplicate_of in accounted or d.uuid in accounted):
                accounted |= {d.uuid, d.duplicate_of}
        changed = len(accounted) != before
    return [
        f"{d.number}: document {d.uuid} ({'valid' if d.valid else 'invalid'}) is at MyInvois, unknown to the ledger"
        for d in ours
        if d.uuid not in accounted
    ]


def claims_in_conflict(ledger: LedgerView) -> list[str]:
    """One claim per invoice: a document in flight belongs to an open submission, no invoice
    has two versions in flight (an edit waits, held), no submission is left "sending" between
    steps (its call ended, or start-up recovery took it), and a pending document is nobody's."""
    problems = []
    in_flight = defaultdict(list)
    for d in ledger.documents:
        name = f"{d['source']}/{d['source_key']} v{d['version']} ({d['state']})"
        holder = ledger.submissions.get(d["submission_id"])
        if d["state"] in IN_FLIGHT:
            in_flight[(d["source"], d["source_key"])].append(name)
            if holder is None or holder in CLOSED:
                problems.append(f"{name} is claimed by submission {d['submission_id']}, which is {holder}")
        if d["state"] == "pending" and holder is not None and holder not in CLOSED:
            problems.append(f"{name} is pending but still held by {holder} submission {d['submission_id']}")
    problems += [f"two versions in flight at once: {names}" for names in in_flight.values() if len(names) > 1]
    problems += [f"submission {sid} is still sending between steps" for sid, s in ledger.submissions.items() if s == "sending"]
    return problems


def outcomes_naming_other_documents(erp: MemoryErp, sim_docs: list[AtMyInvois]) -> list[str]:
    """Every uuid an ERP row was given is a document our connectors sent with that row's
    number (Valid, for a valid or changed_after_valid outcome): never another row's, never
    another system's."""
    by_uuid = {d.uuid: d for d in sim_docs}
    problems = []
    with erp.lock:
        for row in erp.rows.values():
            for version, state, uuid in row.outcomes:
                doc = by_uuid.get(uuid)
                own = doc is not None and not doc.foreign and doc.number == row.number
                if uuid is None or (own and (doc.valid or state not in VALIDATED)):
                    continue
                if doc is None:
                    whose = "no document at MyInvois"
                else:
                    sender = "another system's" if doc.foreign else "our"
                    whose = f"{sender} {'Valid' if doc.valid else 'Invalid'} document of {doc.number}"
                problems.append(f"row {row.key} ({row.number}) v{version} {state} was given {uuid}: {whose}")
    return problems


def settled(erp: MemoryErp, ledger: LedgerView) -> bool:
    """Nothing left to do: no ERP row waiting to be fetched, every version final and written
    back. (Stricter than ``Status.unfinished_count``, which stops counting an outcome the ERP
    refused three times: here the ERP takes everything again, so it must be written back.)"""
    with erp.lock:
        if any(row.status == "pending" for row in erp.rows.values()):
            return False
    return all(d["state"] in FINAL and d["reported_at"] is not None for d in ledger.documents)


def unsettled(erp: MemoryErp, sim_docs: list[AtMyInvois], ledger: LedgerView) -> list[str]:
    """After settling: each ERP row holds the final outcome of its latest version; each invoice
    number has exactly one Valid document of ours, named by exactly one row; and a row left
    without one ended locally_invalid because its number is taken (by another row, or by
    another system's document)."""
    problems = []
    latest: dict[str, dict[str, Any]] = {}
    for d in ledger.documents:
        if d["source"] == SOURCE and d["version"] >= latest.get(d["source_key"], {}).get("version", 0):
            latest[d["source_key"]] = d
    valid_uuids: dict[str, list[str]] = defaultdict(list)
    for d in sim_docs:
        if d.valid and not d.foreign:
            valid_uuids[d.number].append(d.uuid)
    holders = defaultdict(list)
    with erp.lock:
        for row in erp.rows.values():
            mine = latest.get(row.key)
            if row.status not in FINAL:
                problems.append(f"row {row.key} ended {row.status!r}, not a final outcome")
            if mine is None:
                problems.append(f"row {row.key} was never recorded")
                continue
            if mine["state"] not in FINAL or mine["reported_at"] is None:
                problems.append(f"row {row.key} v{mine['version']} is {mine['state']}, reported_at {mine['reported_at']}")
            if (row.status, row.uuid) != (mine["state"], mine["uuid"]):
                problems.append(
                    f"row {row.key} holds {row.status}/{row.uuid}, its latest version is {mine['state']}/{mine['uuid']}"
                )
            if row.status in VALIDATED:
                holders[row.number].append(row.key)
            elif row.status != "locally_invalid" or not any(_NUMBER_TAKEN.search(e) for e in row.errors):
                # Only a number taken elsewhere may keep an invoice from MyInvois here.
                problems.append(f"row {row.key} ended {row.status}: {row.errors}")
        for number in sorted({row.number for row in erp.rows.values()}):
            named = [erp.rows[key].uuid for key in holders[number]]
            ours = valid_uuids.get(number, [])
            if len(named) > 1 or named != ours:
                problems.append(f"{number}: rows reporting it Valid {holders[number]} name {named}; ours Valid: {ours}")
    return problems


def describe(broken: dict[str, list[str]], erp: MemoryErp, sim_docs: list[AtMyInvois], ledger: LedgerView) -> str:
    """What broke, then what each party holds: a failing example must be readable without a debugger."""
    lines = [f"{name}: {problem}" for name, problems in broken.items() for problem in problems]
    lines.append("MyInvois:")
    lines += [
        f"  {d.uuid} {d.number} {'valid' if d.valid else 'invalid'}"
        f"{f' DS302 of {d.duplicate_of}' if d.duplicate_of else ''}{' (another system)' if d.foreign else ''}"
        for d in sim_docs
    ]
    lines.append(f"ledger submissions: {ledger.submissions}")
    lines.append("ledger documents:")
    lines += [
        f"  {d['source_key']} v{d['version']} {d['number']} {d['state']} submission={d['submission_id']} uuid={d['uuid']} "
        f"reported={d['reported_at'] is not None}"
        for d in ledger.documents
    ]
    lines.append("ERP:")
    with erp.lock:
        lines += [f"  {r.key} {r.number} rev{r.revision} {r.status} {r.uuid} outcomes={r.outcomes}" for r in erp.rows.values()]
    return "\n".join(lines)
