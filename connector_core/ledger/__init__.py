"""Durable per-document state: see :mod:`connector_core.ledger.store`."""

from connector_core.ledger.database import utcnow
from connector_core.ledger.records import (
    BuiltDocument,
    DocumentStatusUpdate,
    FetchedItem,
    PendingDocument,
    RecordSummary,
    SubmissionRecord,
    SubmittedDocument,
    WatchEvent,
)
from connector_core.ledger.sends import Claim
from connector_core.ledger.states import Moved, SubmissionState
from connector_core.ledger.store import Ledger, NoLedgerYet

__all__ = [
    "BuiltDocument",
    "Claim",
    "DocumentStatusUpdate",
    "FetchedItem",
    "Ledger",
    "Moved",
    "NoLedgerYet",
    "PendingDocument",
    "RecordSummary",
    "SubmissionRecord",
    "SubmissionState",
    "SubmittedDocument",
    "WatchEvent",
    "utcnow",
]
