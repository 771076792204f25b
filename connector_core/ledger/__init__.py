"""Durable per-document state: see :mod:`connector_core.ledger.store`."""

from connector_core.ledger.store import (
    DocumentStatusUpdate,
    FetchedItem,
    Ledger,
    PendingDocument,
    RecordSummary,
    SubmissionRecord,
    SubmissionState,
    SubmittedDocument,
)

__all__ = [
    "DocumentStatusUpdate",
    "FetchedItem",
    "Ledger",
    "PendingDocument",
    "RecordSummary",
    "SubmissionRecord",
    "SubmissionState",
    "SubmittedDocument",
]
