"""The simulator's in-memory state: tokens, submissions, documents and the duplicate indexes.

Sized for 100,000+ documents: a document is one slotted object holding only what the API
reports, the problems found (invalid documents only) and the submitted bytes compressed.
Validation outcomes are decided at submission; a document's *visible* status is computed
from its ``ready_at`` time when asked, so no timers run and nothing needs to wake up.
"""

from __future__ import annotations

import hashlib
import os
import string
import sys
import time
import zlib
from dataclasses import dataclass, field

from .validator import DocumentFacts, Problem

ID_ALPHABET = string.ascii_uppercase + string.digits


class IdGenerator:
    """26 upper-case alphanumerics, like MyInvois submission and document ids.

    Not seeded: a connector's ledger outlives a simulator run, and ids repeated by the next
    run would collide with the ones it already recorded. Only the faults are repeatable.
    """

    def new(self) -> str:
        # One read of the OS random source per id; the slight modulo bias does not matter here.
        return "".join(ID_ALPHABET[b % 36] for b in os.urandom(26))


@dataclass(slots=True)
class Token:
    value: str
    client_id: str
    tin: str  # the taxpayer the token acts for (the onbehalfof TIN for an intermediary)
    name: str
    intermediary: str | None  # the intermediary's client id, None for a taxpayer's own login
    expires_at: float
    revoked: bool = False

    def principal(self) -> tuple[str, str | None]:
        """Who counts as the submitter: the taxpayer, through itself or through one intermediary."""
        return (self.tin, self.intermediary)


@dataclass(slots=True)
class Submission:
    uid: str
    received_at: float
    client_id: str
    principal: tuple[str, str | None]
    document_uuids: list[str]


class Document:
    """One accepted document. Slotted and flat to keep 100,000 of them small."""

    __slots__ = (
        "buyer_name",
        "buyer_tin",
        "cancelled_at",
        "created_by",
        "format",
        "internal_id",
        "issued_at",
        "issuer_name",
        "issuer_tin",
        "principal",
        "problems",
        "raw",
        "ready_at",
        "received_at",
        "receiver_id",
        "receiver_name",
        "receiver_tin",
        "referenced_uuids",
        "reject_requested_at",
        "status_reason",
        "submission_uid",
        "supplier_name",
        "supplier_tin",
        "totals",
        "type_code",
        "uuid",
        "valid",
        "version",
    )

    def __init__(
        self,
        uuid: str,
        submission_uid: str,
        facts: DocumentFacts,
        received_at: float,
        ready_at: float,
        problems: list[Problem],
        raw: bytes | None,
        document_format: str,
        principal: tuple[str, str | None],
        created_by: str,
    ) -> None:
        self.uuid = uuid
        self.submission_uid = submission_uid
        # Parties, codes and names repeat across thousands of documents: keep one copy of each.
        shared = sys.intern
        self.internal_id = facts.internal_id
        self.type_code = shared(facts.type_code)
        self.version = shared(facts.version)
        self.issuer_tin = shared(facts.issuer_tin)
        self.issuer_name = shared(facts.issuer_name)
        self.receiver_tin = shared(facts.receiver_tin)
        self.receiver_name = shared(facts.receiver_name)
        self.receiver_id = shared(facts.supplier_id if facts.self_billed else facts.buyer_id)
        self.supplier_tin = shared(facts.supplier_tin)
        self.supplier_name = shared(facts.supplier_name)
        self.buyer_tin = shared(facts.buyer_tin)
        self.buyer_name = shared(facts.buyer_name)
        self.issued_at = facts.issued_at.timestamp() if facts.issued_at else None
        self.received_at = received_at
        self.ready_at = ready_at
        self.valid = not problems
        self.totals = (
            facts.total_excluding_tax,
            facts.total_discount,
            facts.total_net_amount,
            facts.total_payable_amount,
        )
        self.problems = tuple(problems) if problems else ()
        self.raw = zlib.compress(raw, 1) if raw is not None else None
        self.format = sys.intern(document_format)
        self.principal = principal
        self.created_by = sys.intern(created_by)
        self.cancelled_at: float | None = None
        self.reject_requested_at: float | None = None
        self.status_reason: str | None = None
        self.referenced_uuids = facts.referenced_uuids

    def status(self, now: float) -> str:
        if self.cancelled_at is not None:
            return "Cancelled"
        if now < self.ready_at:
            return "Submitted"
        return "Valid" if self.valid else "Invalid"

    def raw_text(self) -> str | None:
        return zlib.decompress(self.raw).decode("utf-8", "replace") if self.raw is not None else None

    def long_id(self, now: float) -> str:
        """Derived from the uuid rather than stored: costs nothing per document."""
        if self.status(now) not in ("Valid", "Cancelled"):
            return ""
        digest = hashlib.sha256(f"longid:{self.uuid}".encode()).digest()
        alphabet = ID_ALPHABET
        return "".join(alphabet[b % len(alphabet)] for b in digest + hashlib.sha256(digest).digest()[:13])


@dataclass
class Store:
    """All mutable state. Every method runs on the event loop thread; no awaits inside."""

    tokens: dict[str, Token] = field(default_factory=dict)
    submissions: dict[str, Submission] = field(default_factory=dict)
    documents: dict[str, Document] = field(default_factory=dict)
    # sha256 of (principal, request body) -> when it was accepted: the 10-minute duplicate-submission rule
    recent_payloads: dict[bytes, float] = field(default_factory=dict)
    # duplicate_key -> (uuid, accepted at): the 2-hour duplicate-document rule, valid candidates only
    document_keys: dict[tuple, tuple[str, float]] = field(default_factory=dict)
    # uuid of an original -> uuids of notes that reference it
    referenced_by: dict[str, list[str]] = field(default_factory=dict)
    accepted_by_invoice: dict[str, int] = field(default_factory=dict)

    def clear_documents(self) -> None:
        self.submissions.clear()
        self.documents.clear()
        self.recent_payloads.clear()
        self.document_keys.clear()
        self.referenced_by.clear()
        self.accepted_by_invoice.clear()

    # -- duplicate submission (whole payload, 10 minutes) -------------------------------------

    def seen_payload(self, digest: bytes, now: float, window: float) -> float | None:
        """Seconds until the identical payload may be sent again, or None if it may be sent now."""
        accepted_at = self.recent_payloads.get(digest)
        if accepted_at is None:
            return None
        remaining = accepted_at + window - now
        if remaining <= 0:
            del self.recent_payloads[digest]
            return None
        return remaining

    def remember_payload(self, digest: bytes, now: float, window: float) -> None:
        # Drop expired entries now and then so a long benchmark does not grow this forever.
        if len(self.recent_payloads) > 10_000:
            cutoff = now - window
            for key in [k for k, t in self.recent_payloads.items() if t < cutoff]:
                del self.recent_payloads[key]
        self.recent_payloads[digest] = now

    # -- duplicate documents (same type, version, issue moment, number, issuer; 2 hours) ---------

    def earlier_duplicate(self, key: tuple, now: float, window: float) -> str | None:
        found = self.document_keys.get(key)
        if found is None:
            return None
        uuid, accepted_at = found
        if now - accepted_at > window:
            return None
        document = self.documents.get(uuid)
        if document is None or document.cancelled_at is not None:
            return None
        return uuid

    def remember_document_key(self, key: tuple, uuid: str, now: float) -> None:
        self.document_keys[key] = (uuid, now)

    def status_counts(self, now: float) -> tuple[dict[str, int], dict[str, int]]:
        """(documents per visible status, Valid documents per "issuerTin|internalId"), in one pass."""
        by_status: dict[str, int] = {}
        valid_by_invoice: dict[str, int] = {}
        for document in self.documents.values():
            status = document.status(now)
            by_status[status] = by_status.get(status, 0) + 1
            if status == "Valid":
                key = f"{document.issuer_tin}|{document.internal_id}"
                valid_by_invoice[key] = valid_by_invoice.get(key, 0) + 1
        return by_status, valid_by_invoice


def now() -> float:
    return time.time()
