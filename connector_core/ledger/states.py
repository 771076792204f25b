"""The ledger's state machine: every state a document or a submission can be in, every move
between two states, which stage may make it, and the one primitive that makes it.

Why a declared table rather than ``UPDATE ... SET state = ...`` wherever it is needed: the
ledger has several writers at once (the fetch and the submitter of one cycle run side by side;
the poll runs on another thread; connectors on other hosts may share the ledger). A write that
does not name the state it expects overwrites whatever another writer did in between: an ERP
edit resets a document that was just claimed and sent, a lost answer demotes a submission that
another connector saw accepted. So every state change here is a compare-and-set:

* it names the states it may start from (and, for claimed rows, the owner that must hold them);
* it counts the rows it moved and hands the caller a :class:`Moved` to act on;
* a move that is not in :data:`TRANSITIONS` cannot be written, and ``tests/core/test_states.py``
  checks both that the code writes states only through :func:`move` and :func:`insert_state`,
  and that every change the database saw during a run is one declared here.

``docs/architecture.md`` shows the same table as a diagram; a test keeps the two equal.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from enum import Enum
from typing import Any

from sqlalchemy import Table, and_, delete, insert, or_, update
from sqlalchemy.engine import Connection

from connector_core.contract import FINAL_STATES, DocumentState
from connector_core.ledger.schema import documents, submissions

D = DocumentState


class SubmissionState(str, Enum):
    """What the connector knows about one submit request."""

    SENDING = "sending"  # claimed and written before the HTTP call; after a crash: "may have arrived"
    ACCEPTED = "accepted"  # 202 received (or found by reconciliation): has a submissionUid, polled
    IN_DOUBT = "in_doubt"  # the call may have reached MyInvois but its answer was lost
    RECONCILING = "reconciling"  # one connector owns it and searches MyInvois for it
    RESENDING = "resending"  # the search found nothing: the identical bytes are on their way again
    ESCALATED = "escalated"  # in doubt too long or too often: an operator decides; no more searches
    REFUSED = "refused"  # 400/403 on the envelope: nothing of it was accepted
    NOT_SENT = "not_sent"  # certainly never reached MyInvois (connect error, 429, local refusal)
    # Every document final, but some still inside their cancellation window (valid, rejection
    # requested) or being cancelled: re-polled every cycles.watch_interval_seconds.
    WATCHING = "watching"
    DONE = "done"  # every document of it is final

    @property
    def is_final(self) -> bool:
        return self in {SubmissionState.REFUSED, SubmissionState.NOT_SENT, SubmissionState.DONE}


S = SubmissionState


class Stage(str, Enum):
    """Who makes a move: the pipeline stage (or start-up recovery) that owns that step."""

    FETCH = "fetch"
    SUBMIT = "submit"
    RECONCILE = "reconcile"
    POLL = "poll"
    RECOVERY = "recovery"
    WATCH = "watch"
    CANCEL = "cancel"


@dataclass(frozen=True)
class Transition:
    """One allowed move. ``sources`` empty means the row is created in ``target``.

    ``owned``: the row is held by a claim and only its holder may move it: for a document, the
    submission it is claimed into (``documents.submission_id``); for a submission, the connector
    that claimed it (``submissions.sender``)."""

    name: str
    table: str
    sources: tuple[str, ...]
    target: str
    stages: tuple[Stage, ...]
    owned: bool
    why: str


def _doc(name, sources, target, stages, *, owned=False, why=""):
    return Transition(name, "documents", tuple(s.value for s in sources), target.value, tuple(stages), owned, why)


def _sub(name, sources, target, stages, *, owned=False, why=""):
    return Transition(name, "submissions", tuple(s.value for s in sources), target.value, tuple(stages), owned, why)


F, SU, R, P, RC = Stage.FETCH, Stage.SUBMIT, Stage.RECONCILE, Stage.POLL, Stage.RECOVERY
W, C = Stage.WATCH, Stage.CANCEL

#: The target of a move that deletes its row (``[*]``, the end state of the diagram): a
#: submission whose request never left this host is not history worth a row. During an outage
#: every attempt opened one, and an hour of outage left thousands of ``not_sent`` rows.
REMOVED = "[*]"

#: Every allowed document move. Order is the order of a document's life.
DOCUMENT_TRANSITIONS: tuple[Transition, ...] = (
    _doc("record", (), D.PENDING, [F], why="a new invoice, or a new version after a final outcome"),
    _doc("record_invalid", (), D.LOCALLY_INVALID, [F], why="pre-validation or the plugin refused it; never sent"),
    _doc("record_held", (), D.HELD, [F], why="edited while the previous version is being submitted"),
    _doc("record_changed_after_valid", (), D.CHANGED_AFTER_VALID, [F], why="edited after MyInvois validated it"),
    _doc("edit_pending", (D.PENDING,), D.PENDING, [F], why="edited before it was claimed: new content, bytes dropped"),
    _doc(
        "edit_to_invalid",
        (D.PENDING,),
        D.LOCALLY_INVALID,
        [F],
        why="edited before it was claimed, and pre-validation refuses the edit",
    ),
    _doc("edit_held", (D.HELD,), D.HELD, [F], why="edited again while waiting"),
    _doc("claim", (D.PENDING,), D.SUBMITTING, [SU], why="claimed into a submission with the exact bytes to send"),
    _doc("too_large", (D.PENDING,), D.LOCALLY_INVALID, [SU], why="the built document exceeds 300 KB"),
    _doc(
        "accepted",
        (D.SUBMITTING,),
        D.SUBMITTED,
        [SU, R, P],
        owned=True,
        why="named in a 202, found by search, or listed by Get Submission",
    ),
    _doc(
        "rejected",
        (D.SUBMITTING,),
        D.REJECTED,
        [SU, R],
        owned=True,
        why="rejected on arrival, or the whole batch refused",
    ),
    _doc(
        "not_sent",
        (D.SUBMITTING,),
        D.PENDING,
        [SU, R, P],
        owned=True,
        why="certainly not at MyInvois: free to be claimed again",
    ),
    _doc(
        "validated",
        (D.SUBMITTED,),
        D.VALID,
        [P],
        owned=True,
        why="Get Submission says Valid, or DS302 names our own identical earlier document",
    ),
    _doc(
        "invalidated",
        (D.SUBMITTED,),
        D.INVALID,
        [P],
        owned=True,
        why="Get Submission says Invalid; errors from Get Document Details",
    ),
    _doc("cancelled", (D.SUBMITTED,), D.CANCELLED, [P], owned=True, why="Get Submission says Cancelled"),
    _doc(
        "duplicate_of_other",
        (D.SUBMITTED,),
        D.LOCALLY_INVALID,
        [P],
        owned=True,
        why="DS302 names another invoice's document: renumber",
    ),
    # After Valid: the watch (Get Submission within the cancellation window) and our own cancel.
    # Each move that is news for the ERP clears ``reported_at`` so the outcome is written back.
    _doc(
        "rejection_requested",
        (D.VALID,),
        D.REJECTION_REQUESTED,
        [W],
        owned=True,
        why="Get Submission shows the buyer's rejection request (reason and time)",
    ),
    _doc(
        "cancelled_at_myinvois",
        (D.VALID, D.REJECTION_REQUESTED, D.CANCELLING),
        D.CANCELLED,
        [W],
        owned=True,
        why="Get Submission says Cancelled (on the portal, or our cancel whose answer was lost)",
    ),
    _doc(
        "request_cancel",
        (D.VALID, D.REJECTION_REQUESTED),
        D.CANCELLING,
        [C],
        why="the ERP asked to cancel it: recorded before the call",
    ),
    _doc("cancel_confirmed", (D.CANCELLING,), D.CANCELLED, [C], why="MyInvois answered the cancel with success"),
    _doc("cancel_refused", (D.CANCELLING,), D.VALID, [C], why="MyInvois refused the cancel: it stays valid"),
    _doc(
        "cancel_refused_rejection",
        (D.CANCELLING,),
        D.REJECTION_REQUESTED,
        [C],
        why="MyInvois refused the cancel of a document whose rejection was requested",
    ),
    _doc(
        "release_held",
        (D.HELD,),
        D.PENDING,
        [SU, R, P],
        why="the version before it ended invalid, rejected or cancelled",
    ),
    _doc(
        "release_held_invalid",
        (D.HELD,),
        D.LOCALLY_INVALID,
        [SU, R, P],
        why="as release_held, but pre-validation refused the edit",
    ),
    _doc(
        "release_held_after_valid",
        (D.HELD,),
        D.CHANGED_AFTER_VALID,
        [SU, R, P],
        why="the version before it ended Valid",
    ),
)

#: Every allowed submission move.
SUBMISSION_TRANSITIONS: tuple[Transition, ...] = (
    _sub("open", (), S.SENDING, [SU], why="created together with the claim of its documents"),
    _sub(
        "answered_accepted",
        (S.SENDING, S.RESENDING),
        S.ACCEPTED,
        [SU, R],
        owned=True,
        why="202 with accepted documents",
    ),
    _sub(
        "answered_all_rejected",
        (S.SENDING, S.RESENDING),
        S.DONE,
        [SU, R],
        owned=True,
        why="202 whose documents were all rejected",
    ),
    _sub("answered_refused", (S.SENDING, S.RESENDING), S.REFUSED, [SU, R], owned=True, why="400/403: nothing accepted"),
    _sub("answered_not_sent", (S.SENDING,), S.NOT_SENT, [SU], owned=True, why="connect error, 429, 401: never arrived"),
    Transition(
        "withdrawn",
        "submissions",
        (S.SENDING.value,),
        REMOVED,
        (SU,),
        True,
        "the request never left this host (MyInvois unreachable, login failed): no row is kept for it",
    ),
    _sub(
        "answer_lost",
        (S.SENDING, S.RESENDING),
        S.IN_DOUBT,
        [SU, R],
        owned=True,
        why="timeout, 5xx, 422 duplicate: may have arrived",
    ),
    _sub(
        "interrupted",
        (S.SENDING, S.RESENDING, S.RECONCILING),
        S.IN_DOUBT,
        [RC],
        why="its connector stopped mid-call (own, or abandoned)",
    ),
    _sub("reconcile", (S.IN_DOUBT,), S.RECONCILING, [R], why="one connector takes the reconciliation"),
    _sub("found", (S.RECONCILING,), S.ACCEPTED, [R], owned=True, why="Search found it at MyInvois"),
    _sub("still_in_doubt", (S.RECONCILING,), S.IN_DOUBT, [R], owned=True, why="search failed or lags: try again later"),
    _sub("resend", (S.RECONCILING,), S.RESENDING, [R], owned=True, why="not found: the identical bytes go again"),
    _sub(
        "escalate",
        (S.RECONCILING,),
        S.ESCALATED,
        [R],
        owned=True,
        why="too many attempts or too old: an operator decides",
    ),
    _sub("nothing_left", (S.RECONCILING,), S.DONE, [R], owned=True, why="none of its documents is still in doubt"),
    _sub("finished", (S.ACCEPTED,), S.DONE, [P], why="every document of it is final"),
    _sub(
        "watch",
        (S.ACCEPTED,),
        S.WATCHING,
        [P],
        why="every document of it is final, some still inside their cancellation window",
    ),
    _sub(
        "watch_over",
        (S.WATCHING,),
        S.DONE,
        [W],
        why="no document of it is watched or being cancelled any more",
    ),
)

TRANSITIONS: tuple[Transition, ...] = DOCUMENT_TRANSITIONS + SUBMISSION_TRANSITIONS
BY_NAME: dict[tuple[str, str], Transition] = {(t.table, t.name): t for t in TRANSITIONS}

#: Documents MyInvois may hold or be working on: an edit must not touch them.
IN_FLIGHT = frozenset({D.SUBMITTING.value, D.SUBMITTED.value})
#: Final outcomes after which a changed invoice becomes a new version that is sent again.
REISSUABLE = frozenset({D.INVALID.value, D.REJECTED.value, D.LOCALLY_INVALID.value, D.CANCELLED.value})
FINAL = frozenset(s.value for s in FINAL_STATES)
#: A validated document stands at MyInvois in these states: an ERP edit is not sent again but
#: written back as ``changed_after_valid`` (cancel it, or issue a note).
AFTER_VALID = frozenset({D.VALID.value, D.REJECTION_REQUESTED.value, D.CANCELLING.value, D.CHANGED_AFTER_VALID.value})
OPEN = frozenset(s.value for s in DocumentState if s not in FINAL_STATES)


def doc(name: str) -> Transition:
    return BY_NAME[("documents", name)]


def sub(name: str) -> Transition:
    return BY_NAME[("submissions", name)]


_TABLES: dict[str, Table] = {"documents": documents, "submissions": submissions}


@dataclass(frozen=True)
class Moved:
    """What a compare-and-set did: how many rows moved, and how many the caller expected.

    ``won`` is False when another writer changed a row first; the caller must decide what that
    means (re-read, give the row up, or report the lost race), never assume it moved."""

    transition: Transition
    count: int
    expected: int | None = None

    @property
    def won(self) -> bool:
        return self.count > 0 if self.expected is None else self.count == self.expected

    @property
    def lost(self) -> bool:
        return not self.won

    def __bool__(self) -> bool:  # pragma: no cover - guard against `if moved:` misuse
        raise TypeError("use Moved.won or Moved.lost: a Moved is not a boolean")


class UndeclaredTransition(RuntimeError):
    """Code tried a move the state machine does not declare."""


def move(
    conn: Connection,
    transition: Transition,
    *where: Any,
    owner: Any = ...,
    values: Mapping[str, Any] | None = None,
    rows: list[dict[str, Any]] | None = None,
    expected: int | None = None,
) -> Moved:
    """Compare-and-set ``transition`` on the rows matching ``where``; only rows still in one of
    its source states (and held by ``owner`` when the transition is owned) move.

    ``rows`` runs the statement once per parameter set (an executemany: one statement for a
    whole batch); ``where`` and ``values`` may then use ``bindparam``."""
    if BY_NAME.get((transition.table, transition.name)) is not transition:
        raise UndeclaredTransition(f"{transition.table}.{transition.name} is not in connector_core.ledger.states")
    if not transition.sources:
        raise UndeclaredTransition(f"{transition.name} creates rows: use insert_state")
    if transition.target == REMOVED:
        raise UndeclaredTransition(f"{transition.name} removes rows: use remove")
    table = _TABLES[transition.table]
    # Equalities, not IN (...): an expanding IN cannot run as an executemany.
    conditions = [or_(*(table.c.state == source for source in transition.sources)), *where]
    if transition.owned:
        if owner is ...:
            raise UndeclaredTransition(f"{transition.name} moves claimed rows: name the owner")
        column = table.c.submission_id if transition.table == "documents" else table.c.sender
        # A ledger opened without a sender name (tests, tools) owns the rows it claimed unnamed.
        conditions.append(column.is_(None) if owner is None else column == owner)
    stmt = update(table).where(and_(*conditions)).values(state=transition.target, **dict(values or {}))
    if rows is None:
        return Moved(transition, conn.execute(stmt).rowcount or 0, expected)
    return Moved(transition, _executemany(conn, stmt, rows), expected)


def _executemany(conn: Connection, stmt: Any, rows: list[dict[str, Any]]) -> int:
    """Run ``stmt`` once per row through the driver's executemany; return the rows changed.

    The same statement as ``conn.execute(stmt, rows)``, compiled once, but each row's parameters
    are converted by the column types' bind processors for the row's own keys only: the values
    common to every row (the states compared and set, the owner, ``now``) are converted once.
    SQLAlchemy converts every parameter of every row, which was most of its cost in the hot
    executemany statements (claim, accepted, a poll's outcomes: docs/performance.md)."""
    if not rows:
        return 0
    compiled = stmt.compile(dialect=conn.dialect)
    keys = list(rows[0])
    processors = compiled._bind_processors  # the column types' conversions, by parameter name
    common = compiled.construct_params(rows[0])
    for key in keys:
        del common[key]
    common = {name: processors[name](v) if name in processors else v for name, v in common.items()}
    converters = [(key, processors.get(key)) for key in keys]
    converted = [
        {**common, **{key: convert(row[key]) if convert else row[key] for key, convert in converters}} for row in rows
    ]
    if compiled.positional:
        order = compiled.positiontup or []
        parameters: list[Any] = [tuple(row[name] for name in order) for row in converted]
    else:
        escaped = compiled.escaped_bind_names
        parameters = (
            [{escaped.get(name, name): v for name, v in row.items()} for row in converted] if escaped else converted
        )
    return conn.exec_driver_sql(compiled.string, parameters).rowcount or 0


def remove(
    conn: Connection, transition: Transition, *where: Any, owner: Any = ..., expected: int | None = None
) -> Moved:
    """Compare-and-set delete: the rows matching ``where`` that are still in one of the
    ``transition``'s source states (and held by ``owner``) are removed."""
    if BY_NAME.get((transition.table, transition.name)) is not transition or transition.target != REMOVED:
        raise UndeclaredTransition(f"{transition.table}.{transition.name} is not a declared removal")
    table = _TABLES[transition.table]
    conditions = [or_(*(table.c.state == source for source in transition.sources)), *where]
    if transition.owned:
        if owner is ...:
            raise UndeclaredTransition(f"{transition.name} removes claimed rows: name the owner")
        column = table.c.submission_id if transition.table == "documents" else table.c.sender
        conditions.append(column.is_(None) if owner is None else column == owner)
    result = conn.execute(delete(table).where(and_(*conditions)))
    return Moved(transition, result.rowcount or 0, expected)


def insert_state(conn: Connection, transition: Transition, rows: Iterable[dict[str, Any]]) -> list[Any]:
    """Create rows in the ``transition``'s target state; returns the new primary keys when a
    single row is inserted (the submission that a claim opens), else an empty list."""
    if BY_NAME.get((transition.table, transition.name)) is not transition or transition.sources:
        raise UndeclaredTransition(f"{transition.table}.{transition.name} does not create rows")
    table = _TABLES[transition.table]
    rows = [{**row, "state": transition.target} for row in rows]
    if not rows:
        return []
    if len(rows) == 1:
        return list(conn.execute(insert(table).values(**rows[0])).inserted_primary_key or ())
    conn.execute(insert(table), rows)
    return []


def mermaid_diagram() -> str:
    """The state diagram of ``docs/architecture.md``, drawn from the table."""
    lines: list[str] = []
    for table, transitions in (("documents", DOCUMENT_TRANSITIONS), ("submissions", SUBMISSION_TRANSITIONS)):
        lines += ["```mermaid", "stateDiagram-v2", f"    %% {table}: generated from connector_core/ledger/states.py"]
        for t in transitions:
            for source in t.sources or ("[*]",):
                lines.append(f"    {source} --> {t.target}: {t.name}")
        lines.append("```")
    return "\n".join(lines)
