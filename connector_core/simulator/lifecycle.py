"""After Valid: LHDN's rules for an issuer's cancellation and a buyer's rejection request.

One set of rules serves both ways a state change arrives: the API's
``PUT /api/v1.0/documents/state/{uuid}/state``, once the caller is known to be the issuer
(cancel) or the receiver (reject), and the simulator's portal events, which skip the API's
authentication and rate limits as the MyInvois portal does but meet the same rules there.

Sources: the Cancel Document and Reject Document pages (API.md §5.3/§5.4, BEYOND-V1.md §3).
A rejection request leaves the document Valid, with ``rejectRequestDateTime`` and the reason
in ``documentStatusReason``; only a cancellation makes it Cancelled.
"""

from __future__ import annotations

from starlette.responses import Response

from .config import SimulatorConfig
from .responses import api_error, detail, iso
from .store import Document, Store

CANCEL = "cancelled"
REJECT = "rejected"
MAX_REASON = 300  # the Cancel page's limit; the Reject page states none, so the same is applied


class StateChangeRefused(Exception):
    """LHDN's answer refusing a state change; ``response()`` is what the API sends."""

    def __init__(
        self, status: int, code: str, message: str, target: str | None = None, details: list[dict] | None = None
    ) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message
        self.target = target
        self.details = details

    def response(self) -> Response:
        return api_error(self.status, self.code, self.message, target=self.target, details=self.details)


def read_request(body: object) -> tuple[str, str]:
    """(wanted status, reason) from the PUT body, or the 400 BadArgument saying what is wrong."""
    if not isinstance(body, dict):
        raise StateChangeRefused(400, "BadArgument", "The body must be a JSON object with status and reason", "status")
    # The Reject page's example spells "Rejected"; the SDKs send lower case: both are taken.
    wanted = str(body.get("status", "")).strip().lower()
    if wanted not in (CANCEL, REJECT):
        raise StateChangeRefused(400, "BadArgument", "status must be 'cancelled' or 'rejected'", "status")
    return wanted, checked_reason(body.get("reason"))


def checked_reason(reason: object) -> str:
    if not isinstance(reason, str) or not reason.strip() or len(reason) > MAX_REASON:
        raise StateChangeRefused(400, "BadArgument", f"reason is required, at most {MAX_REASON} characters", "reason")
    return reason


def window_seconds(config: SimulatorConfig, wanted: str) -> float:
    return config.cancellation_window_seconds() if wanted == CANCEL else config.rejection_window_seconds()


def active_referencing(store: Store, document: Document, now: float) -> list[Document]:
    """Notes referencing the document that block it: Valid ones, and those about to become Valid.

    A note still being validated counts too (unconfirmed at LHDN): letting the original go
    while it is Submitted would leave a Valid note pointing at a Cancelled invoice a moment later.
    """
    found = []
    for uuid in store.referenced_by.get(document.uuid, ()):
        note = store.documents.get(uuid)
        if note is not None and note.valid and note.status(now) in ("Valid", "Submitted"):
            found.append(note)
    return found


def change_state(
    store: Store, config: SimulatorConfig, document: Document, wanted: str, reason: str, now: float
) -> dict:
    """Apply a cancellation or rejection request LHDN's rules allow; return the 200 body.

    Raises StateChangeRefused with ``IncorrectState``, ``OperationPeriodOver`` or
    ``ActiveReferencingDocuments`` otherwise. The caller's right to ask is checked before.
    """
    status = document.status(now)
    if status != "Valid" or (wanted == REJECT and document.reject_requested_at is not None):
        # Rejection "can happen only once"; a cancel after a rejection request is the issuer
        # accepting it, which the Cancel page describes, so that stays allowed.
        state = "already requested for rejection" if status == "Valid" else status
        raise StateChangeRefused(
            400,
            "IncorrectState",
            f"The document is {state} and cannot be {wanted}",
            "status",
            [detail("IncorrectState", f"Document status is {state}", "status")],
        )
    window = window_seconds(config, wanted)
    if now - document.ready_at > window:
        action = "cancel" if wanted == CANCEL else "reject"
        raise StateChangeRefused(
            400,
            "OperationPeriodOver",
            f"The {window / 3600:g}-hour period to {action} this document is over; "
            "issue a credit, debit or refund note instead",
            "status",
            [
                detail(
                    "OperationPeriodOver", f"The {action} period ended at {iso(document.ready_at + window)}", "status"
                )
            ],
        )
    notes = active_referencing(store, document, now)
    if notes:
        # LHDN's body for this error is not published: the message names the notes, and one
        # detail per note carries its uuid in ``target`` for a client to read.
        first = "cancel" if wanted == CANCEL else "reject"
        raise StateChangeRefused(
            400,
            "ActiveReferencingDocuments",
            f"Documents {', '.join(n.uuid for n in notes)} reference this document; {first} them first",
            "uuid",
            [
                detail(
                    "ActiveReferencingDocuments",
                    f"Document {n.uuid} ({n.internal_id}, type {n.type_code}) references this document",
                    n.uuid,
                )
                for n in notes
            ],
        )
    document.status_reason = reason
    if wanted == CANCEL:
        document.cancelled_at = now
        return {"uuid": document.uuid, "status": "Cancelled"}
    document.reject_requested_at = now
    return {"uuid": document.uuid, "status": "Requested for Rejection"}
