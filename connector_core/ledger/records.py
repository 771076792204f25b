"""The values the ledger hands to the pipeline and takes from it."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from connector_core.contract import DocumentState


@dataclass(frozen=True)
class FetchedItem:
    """One invoice (or unreadable record) as the pipeline hands it to the ledger."""

    source_key: str
    number: str
    fingerprint: str
    invoice_json: str | None
    document_type: str | None = None
    issuer_tin: str | None = None
    problems: list[str] = field(default_factory=list)

    @property
    def state(self) -> DocumentState:
        return DocumentState.LOCALLY_INVALID if self.problems else DocumentState.PENDING


@dataclass
class RecordSummary:
    new: int = 0
    new_versions: int = 0
    updated: int = 0
    unchanged: int = 0
    locally_invalid: int = 0
    #: Edited while a version is at MyInvois: the edit waits for its outcome (state ``held``).
    changed_after_submit: list[str] = field(default_factory=list)
    #: Edited after MyInvois validated it: written back as ``changed_after_valid``.
    changed_after_valid: list[str] = field(default_factory=list)
    #: Unchanged and already final: the same outcome is written back again.
    reported_again: int = 0
    #: Same invoice number as another ERP row of the profile: refused, naming that row.
    number_taken: list[str] = field(default_factory=list)

    @property
    def recorded(self) -> int:
        return self.new + self.new_versions + self.updated


@dataclass(frozen=True)
class PendingDocument:
    id: int
    source: str
    source_key: str
    version: int
    number: str
    fingerprint: str
    invoice_json: str
    document: str | None
    document_hash: str | None
    issued_at: datetime | None


@dataclass(frozen=True)
class BuiltDocument:
    """A document ready to be claimed: the bytes that will go on the wire and what they were
    built from. ``fresh`` bytes are stored by the claim; reused ones must still be the stored ones."""

    id: int
    number: str
    fingerprint: str
    content: str | None
    document_hash: str
    issued_at: datetime
    fresh: bool


@dataclass(frozen=True)
class SubmittedDocument:
    id: int
    number: str
    uuid: str | None
    document: str | None
    document_hash: str | None
    issued_at: datetime | None
    state: str
    document_type: str | None = None


@dataclass(frozen=True)
class SubmissionRecord:
    id: int
    profile: str
    state: str
    submission_uid: str | None
    payload_hash: str
    document_count: int
    created_at: datetime
    sent_at: datetime | None
    first_sent_at: datetime | None
    poll_count: int
    reconcile_attempts: int
    sender: str | None = None
    documents: list[SubmittedDocument] = field(default_factory=list)


@dataclass(frozen=True)
class DocumentStatusUpdate:
    """What Get Submission (plus Get Document Details for invalid ones) said about a document."""

    uuid: str
    state: DocumentState
    long_id: str | None = None
    validation_link: str | None = None
    errors: list[str] = field(default_factory=list)
    error_details: list[dict[str, Any]] = field(default_factory=list)
    #: For a Valid one: when MyInvois validated it, and until when it is watched (the end of
    #: its cancellation window plus the margin).
    validated_at: datetime | None = None
    watch_until: datetime | None = None


@dataclass(frozen=True)
class WatchEvent:
    """What a watch poll (Get Submission after Valid) found about one document: a buyer's
    rejection request (``rejection_requested``) or a cancellation (``cancelled``), with
    MyInvois's reason and the time it happened."""

    uuid: str
    state: DocumentState
    reason: str | None
    at: datetime | None
