"""The values that cross the hook boundary, besides the invoice model itself.

Plugins receive :class:`Source` and :class:`DocumentOutcome`; they never see the ledger, the
API client or the scheduler.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from enum import Enum
from pathlib import Path
from typing import Any

from pydantic import BaseModel


class DocumentState(str, Enum):
    """Where a document is in its life. Final states end with a write-back to the ERP."""

    PENDING = "pending"  # recorded, not yet sent
    HELD = "held"  # edited while the previous version was being submitted: waits for its outcome
    SUBMITTING = "submitting"  # about to be sent / sent, answer not yet recorded
    SUBMITTED = "submitted"  # MyInvois accepted it for validation (202)
    VALID = "valid"  # final for write-back; watched while MyInvois may still cancel or reject it
    # Still Valid at MyInvois, but the buyer asked for a rejection (reason and time kept): the
    # ERP hears it at once; the issuer decides whether to cancel. Final, and still watched.
    REJECTION_REQUESTED = "rejection_requested"
    # Our cancel request is in the ledger before the call; open until MyInvois's answer (or,
    # if the answer was lost, Get Submission) says whether it was cancelled.
    CANCELLING = "cancelling"
    INVALID = "invalid"  # MyInvois validation failed
    REJECTED = "rejected"  # refused synchronously in the submit answer (rejectedDocuments, 400/403)
    CANCELLED = "cancelled"
    LOCALLY_INVALID = "locally_invalid"  # refused by pre-validation or unreadable ERP data; never sent
    # Edited in the ERP after MyInvois validated it: the validated document stands (its uuid is
    # in the outcome); the clerk cancels it within the window or issues a credit or debit note.
    CHANGED_AFTER_VALID = "changed_after_valid"

    @property
    def is_final(self) -> bool:
        return self in FINAL_STATES


FINAL_STATES = frozenset(
    {
        DocumentState.VALID,
        DocumentState.REJECTION_REQUESTED,
        DocumentState.INVALID,
        DocumentState.REJECTED,
        DocumentState.CANCELLED,
        DocumentState.LOCALLY_INVALID,
        DocumentState.CHANGED_AFTER_VALID,
    }
)


@dataclass(frozen=True)
class Source:
    """One configured ERP source, handed to the plugin that provides its kind.

    ``options`` is an instance of the options model the plugin registered for ``kind``,
    already validated, with secrets as ``SecretStr``.
    """

    name: str
    kind: str
    profile: str
    options: BaseModel
    state_dir: Path = field(default=Path("."))


@dataclass(frozen=True)
class DocumentOutcome:
    """The final outcome of one invoice version, as written back to the ERP.

    After Valid the same version may be written back again: ``rejection_requested`` (the buyer
    asked for a rejection) or ``cancelled``, with MyInvois's ``reason`` and the time of the
    event (``event_at``). A valid outcome carries ``cancellable_until``, the end of the window
    in which the issuer may still cancel it; a valid or rejection_requested outcome whose
    ``cancel_error`` is not empty says that our cancel request was refused, and why.
    """

    source_key: str
    number: str
    version: int
    state: DocumentState
    uuid: str | None = None
    long_id: str | None = None
    submission_uid: str | None = None
    validation_link: str | None = None
    errors: list[str] = field(default_factory=list)
    error_details: list[dict[str, Any]] = field(default_factory=list)
    document_type: str | None = None
    final_at: datetime | None = None
    fetched_at: datetime | None = None
    reason: str | None = None
    event_at: datetime | None = None
    cancellable_until: datetime | None = None
    cancel_error: list[str] = field(default_factory=list)

    @property
    def is_valid(self) -> bool:
        return self.state is DocumentState.VALID


@dataclass(frozen=True)
class SourceCheck:
    """One finding of the ``check_source`` hook, shown by ``myinvois-connector doctor``.

    ``status`` is ``"ok"`` (checked, works), ``"fail"`` (checked, does not work: the message
    says what to fix) or ``"unknown"`` (could not be checked without changing the ERP).
    Build one with :meth:`passed`, :meth:`failed` or :meth:`unknown`.
    """

    status: str
    message: str

    @classmethod
    def passed(cls, message: str) -> SourceCheck:
        return cls("ok", message)

    @classmethod
    def failed(cls, message: str) -> SourceCheck:
        return cls("fail", message)

    @classmethod
    def unknown(cls, message: str) -> SourceCheck:
        return cls("unknown", message)


@dataclass(frozen=True)
class CancelRequest:
    """The ERP asks to cancel an invoice MyInvois validated (hook ``fetch_cancel_requests``).

    ``source_key`` is the invoice's key in the source (its ``Invoice.source_key``); ``reason``
    is shown to the buyer by MyInvois (1 to 300 characters); ``location`` says where the
    request is (a file and row, a table and id), for the messages about it.
    """

    source_key: str
    reason: str
    location: str = ""
