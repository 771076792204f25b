"""The plugin contract of MyInvois Connector.

This module is documentation as much as code: it holds no logic. Every hook is listed here,
grouped by the phase of a cycle in which it is called, and ``docs/hooks.md`` describes each one
again for plugin authors (a test fails if either side misses a hook).

How the connector calls hooks
-----------------------------
* Always with keyword arguments. An implementation may accept only the arguments it needs, so
  new arguments can be added to a spec without breaking existing plugins.
* ``register_source_kinds`` is called on every plugin once at start-up.
* The source hooks (``fetch_pending_invoices``, ``on_invoices_recorded``,
  ``fetch_cancel_requests``, ``on_submission_result``, ``check_source``) are called **only on the plugin that registered the source's
  kind**. A plugin therefore never has to check whether a source is its own.
* A hook that raises is isolated: the error is logged with the plugin and source named, counted,
  reported to Sentry when configured, and the cycle goes on with the other sources. What is
  retried depends on the hook; each docstring says.

Plugin authors import one marker: ``from connector_core import hookimpl``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING

import pluggy

if TYPE_CHECKING:
    from connector_core.contract import CancelRequest, DocumentOutcome, Source, SourceCheck
    from connector_core.model import Invoice, RejectedRecord

PROJECT_NAME = "myinvois_connector"
hookspec = pluggy.HookspecMarker(PROJECT_NAME)


# --- start-up -----------------------------------------------------------------------------


@hookspec
def register_source_kinds(register: Callable[..., None]) -> None:
    """Declare the kinds of ERP source this plugin reads, with the settings each kind takes.

    Call ``register(kind, options_model, description="...")`` once per kind, where

    * ``kind`` is the name users write as ``kind = "..."`` in a ``[sources.NAME]`` table;
    * ``options_model`` is a pydantic model of the table's ``options``. Make it
      ``extra="forbid"`` so a misspelt key is reported, and type secrets as ``SecretStr``;
    * ``description`` is one line shown by ``myinvois-connector plugins``.

    Called once per plugin when the connector starts, before the sources' options are validated
    (each source's ``options`` table is checked against the model registered here).
    Registering a kind that another plugin already registered stops the start-up with an error
    naming both plugins. If this hook raises, the plugin is reported and none of its kinds exist;
    sources that use them are reported as configuration errors.
    """


# --- fetch --------------------------------------------------------------------------------


@hookspec
def fetch_pending_invoices(source: Source, limit: int) -> Iterable[Invoice | RejectedRecord] | None:
    """Return the source's invoices that still await a MyInvois result, oldest first.

    ``source`` is the configured source (``source.options`` is the plugin's options model);
    ``limit`` is the most invoices the connector takes this cycle. Returning more is allowed
    and wasteful; the connector stops reading at ``limit``. Return a generator to read a large
    backlog in pages: the connector consumes it lazily and never holds all of it.

    Yield a :class:`~connector_core.model.RejectedRecord` for a record that cannot be read as
    an invoice (a malformed CSV row, a missing field in the database); it is recorded as
    locally invalid and written back through ``on_submission_result``, and the rest go on.

    Returning an invoice the connector has already recorded is harmless: the same content is
    recorded once; changed content after an invalid or rejected result becomes a new version.

    Called at the start of every fetch-and-submit cycle. If it raises, nothing from this source
    is recorded this cycle, the error is reported, and the next cycle calls it again.
    """


@hookspec
def on_invoices_recorded(source: Source, source_keys: list[str]) -> None:
    """The invoices with these keys are now durably in the ledger.

    The plugin may stop offering them from ``fetch_pending_invoices``: mark them queued,
    move a file to the archive, advance a bookmark. Doing nothing is correct too, only slower.

    Called after each ledger commit of a fetch, with the keys of every invoice and rejected
    record of that page, including ones the ledger already had (fetched again after a restart):
    so a plugin can rely on it to finish what a crash interrupted. If it raises, the error is
    reported and the invoices stay recorded; the next fetch that returns them calls it again.
    """


# --- cancellation -------------------------------------------------------------------------


@hookspec
def fetch_cancel_requests(source: Source) -> Iterable[CancelRequest] | None:
    """Return the ERP's requests to cancel invoices MyInvois validated, oldest first.

    Yield one :class:`~connector_core.contract.CancelRequest` per request: ``source_key`` (the
    same key as the invoice's ``Invoice.source_key``), ``reason`` (1 to 300 characters, shown to
    the buyer by MyInvois) and, optionally, ``location`` (where the request is: ``inbox/
    cancel-requests.csv row 3``, ``table invoices id 42``) for the messages about it.

    Called on every fetch-and-submit cycle (daemon and ``run --once``), after the invoices are
    fetched. The connector records each request in the ledger before it asks MyInvois, so a
    request returned again (after a crash, or because the plugin did not mark it) is harmless:
    an invoice already being cancelled or cancelled is skipped. Return a generator to mark or
    archive what you returned: the code after its last ``yield`` runs only once the connector
    has recorded every request it yielded.

    Every request gets an answer through ``on_submission_result``: ``cancelled`` when MyInvois
    cancelled it; otherwise the invoice's outcome again (``valid``, ``rejection_requested``, or
    the state it is in) with ``cancel_error`` saying why it was not cancelled and what to do (the
    window is over: issue a credit note; a credit note references it: cancel that first ...). A
    request for an invoice the connector never recorded cannot be answered that way: it is
    logged and kept as a ``cancel_refused`` incident in ``status``, naming the source and key.

    Optional: a plugin without it offers no ERP-driven cancellation (``myinvois-connector
    cancel`` still works). If it raises, the requests yielded before are processed, the error
    is reported as for ``fetch_pending_invoices``, and the next cycle calls it again.
    """


# --- results ------------------------------------------------------------------------------


@hookspec
def on_submission_result(source: Source, outcomes: list[DocumentOutcome]) -> None:
    """Write final outcomes back to the ERP.

    ``outcomes`` holds one :class:`~connector_core.contract.DocumentOutcome` per invoice version
    that reached a final state: valid (with ``uuid``, ``long_id`` and ``validation_link``),
    invalid or rejected by MyInvois (``errors`` in words a clerk can act on, ``error_details``
    as MyInvois sent them), locally invalid (refused before sending) or cancelled.

    Called after each poll or submit that produced final outcomes, and again on later cycles
    for outcomes whose write-back has not succeeded. The same outcome can therefore arrive more
    than once after a crash or an error: write it idempotently, keyed by ``source_key`` and
    ``version``. If it raises, the batch is offered again in halves, down to single outcomes, so
    one outcome the ERP refuses (a closed period, a trigger, a constraint) does not hold back the
    others; that one is offered again later with a back-off, named in ``status`` and raised as
    an incident. The connector never marks an outcome reported until this hook returned
    normally for it. Outcomes may include ``changed_after_valid``: the ERP row was edited after
    MyInvois validated it; ``uuid`` is the validated document and ``errors`` tells the clerk to
    cancel it or issue a credit or debit note.

    After valid, the same ``source_key`` and ``version`` may come again while MyInvois's
    cancellation window lasts: ``rejection_requested`` (the buyer asked for a rejection; still
    valid at MyInvois) or ``cancelled``, with ``reason`` and ``event_at``; or valid again with
    ``cancel_error`` when a cancel was refused. Write these over the version's valid outcome.
    """


# --- checks (``myinvois-connector doctor``) -----------------------------------------------


@hookspec
def check_source(source: Source) -> Iterable[SourceCheck] | None:
    """Check that the source can be read and written back, changing nothing in the ERP.

    Return (or yield) :class:`~connector_core.contract.SourceCheck` findings, one per thing
    checked: connect and read one page of pending invoices *without* marking or moving them
    (the connector records nothing from it); then check that write-back is possible where the
    plugin can tell without writing (a file or folder is writable, the user has the right to
    update the table or model). Say ``SourceCheck.unknown(...)`` for what cannot be told.
    Each message names the setting or the ERP object to fix.

    Optional: a plugin without it gets a warning in ``doctor`` that its sources are checked
    only by the first run. Called only by ``doctor``, never during a cycle. If it raises, the
    error is the finding (a failure), so a plugin may simply let a connection error propagate.
    """


# Hooks the connector calls: those of a cycle in its order, then the doctor's check.
# tests/test_hook_contract.py reads this.
HOOK_NAMES: tuple[str, ...] = (
    "register_source_kinds",
    "fetch_pending_invoices",
    "on_invoices_recorded",
    "fetch_cancel_requests",
    "on_submission_result",
    "check_source",
)
