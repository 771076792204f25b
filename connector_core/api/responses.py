"""Reading MyInvois responses, tolerant of the differences between the docs and the wire.

The documentation and the real API disagree in places (see the research digest):

* ``submissionUid`` (real) versus ``submissionUID`` (doc tables, Recent Documents);
* ``overallStatus`` documented as ``in progress`` / ``partially valid`` but seen as ``Invalid``
  and typed ``InProgress`` / ``PartiallyValid`` by SDKs tested on the sandbox;
* two error shapes: ``{"code","message","target","details"}`` on request errors and rejected
  documents, ``{"errorCode","error","errorMS","propertyName","propertyPath","innerError"}`` in
  validation steps;
* ``supplierTIN`` / ``supplierTin`` and friends in search results.

So every reader here accepts both spellings and compares status words case-insensitively with
spaces ignored. Unknown status words map to ``UNKNOWN`` rather than failing: a poller treats
them as "not final yet" instead of crashing on a new LHDN wording.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from datetime import datetime
from decimal import Decimal, InvalidOperation
from enum import Enum
from typing import Any, NamedTuple


def _norm(word: Any) -> str:
    return "".join(str(word).split()).replace("_", "").replace("-", "").lower() if word is not None else ""


def _first(obj: dict[str, Any], *names: str) -> Any:
    """The value of the first key present (exact spelling first, then case-insensitively)."""
    for name in names:
        if name in obj:
            return obj[name]
    lowered = {k.lower(): v for k, v in obj.items()}
    for name in names:
        if name.lower() in lowered:
            return lowered[name.lower()]
    return None


def _datetime(value: Any) -> datetime | None:
    if not value or not isinstance(value, str):
        return None
    text = value.strip()
    if text.endswith("Z"):
        text = text[:-1] + "+00:00"
    # .NET prints up to 7 fractional digits; Python accepts at most 6.
    if "." in text:
        head, _, tail = text.partition(".")
        digits = "".join(ch for ch in tail if ch.isdigit())
        rest = tail[len(digits) :]
        text = f"{head}.{digits[:6]}{rest}"
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        return None


def _decimal(value: Any) -> Decimal | None:
    if value is None or value == "":
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


class SubmissionStatus(str, Enum):
    IN_PROGRESS = "in progress"
    VALID = "valid"
    PARTIALLY_VALID = "partially valid"
    INVALID = "invalid"
    #: A word we do not know: treat as not final.
    UNKNOWN = "unknown"

    @property
    def is_final(self) -> bool:
        return self in (SubmissionStatus.VALID, SubmissionStatus.PARTIALLY_VALID, SubmissionStatus.INVALID)

    @classmethod
    def parse(cls, word: Any) -> SubmissionStatus:
        return _SUBMISSION_WORDS.get(_norm(word), cls.UNKNOWN)


_SUBMISSION_WORDS = {_norm(s.value): s for s in SubmissionStatus if s is not SubmissionStatus.UNKNOWN}


class DocumentStatus(str, Enum):
    SUBMITTED = "Submitted"
    VALID = "Valid"
    INVALID = "Invalid"
    CANCELLED = "Cancelled"
    #: Answer of Reject Document: the document stays Valid until the issuer cancels it.
    REQUESTED_FOR_REJECTION = "Requested for Rejection"
    UNKNOWN = "Unknown"

    @classmethod
    def parse(cls, word: Any) -> DocumentStatus:
        normalized = _norm(word)
        if normalized in ("canceled",):
            return cls.CANCELLED
        return _DOCUMENT_WORDS.get(normalized, cls.UNKNOWN)


_DOCUMENT_WORDS = {_norm(s.value): s for s in DocumentStatus if s is not DocumentStatus.UNKNOWN}


@dataclass(frozen=True)
class ErrorDetail:
    """One error, from either wire shape, with its nested details."""

    code: str | None = None
    message: str | None = None
    target: str | None = None
    property_name: str | None = None
    property_path: str | None = None
    message_ms: str | None = None
    details: tuple[ErrorDetail, ...] = ()

    @classmethod
    def parse(cls, obj: Any) -> ErrorDetail | None:
        """Read ``{"error": {...}}``, a bare error object, or a plain string."""
        if obj is None:
            return None
        if isinstance(obj, str):
            return cls(message=obj)
        if not isinstance(obj, dict):
            return cls(message=str(obj))
        if isinstance(obj.get("error"), str) and "error_description" in obj:
            # OAuth 2 error body of /connect/token: {"error": "invalid_client", "error_description": ...}
            return cls(code=obj["error"], message=obj.get("error_description") or obj["error"])
        inner = obj.get("error")
        if isinstance(inner, dict) and not any(k in obj for k in ("code", "errorCode", "message")):
            # Wrapped: {"error": {...}} (the whole body of an HTTP error).
            return cls.parse(inner)
        # The documented shape carries the English text in "error" (a string) and the code in
        # "errorCode"; the observed shape uses "message" and "code".
        message = _first(obj, "message")
        if message is None and isinstance(inner, str):
            message = inner
        code = _first(obj, "code", "errorCode")
        nested = _first(obj, "details", "innerError") or []
        if isinstance(nested, dict):
            nested = [nested]
        return cls(
            code=None if code is None else str(code),
            message=None if message is None else str(message),
            target=_first(obj, "target"),
            property_name=_first(obj, "propertyName"),
            property_path=_first(obj, "propertyPath"),
            message_ms=_first(obj, "errorMS", "errorMs"),
            details=tuple(d for d in (cls.parse(x) for x in nested) if d is not None),
        )

    def leaves(self) -> list[ErrorDetail]:
        """The most specific errors: the details if there are any, else this error itself."""
        if not self.details:
            return [self]
        out: list[ErrorDetail] = []
        for detail in self.details:
            out.extend(detail.leaves())
        return out

    def summary(self) -> str:
        """One line: code, message and the first details, for logs and exception messages."""
        head = " ".join(p for p in (f"[{self.code}]" if self.code else "", self.message or "") if p) or "no message"
        specific = [d for d in self.leaves() if d is not self]
        if specific:
            shown = "; ".join(_detail_text(d) for d in specific[:5])
            more = f" (+{len(specific) - 5} more)" if len(specific) > 5 else ""
            return f"{head}: {shown}{more}"
        return head


def _detail_text(detail: ErrorDetail) -> str:
    where = detail.property_path or detail.property_name or detail.target
    text = detail.message or detail.code or "error"
    return f"{where}: {text}" if where else text


def parse_error_body(body: Any) -> ErrorDetail | None:
    """The error of an HTTP error response (either shape), or None when the body says nothing."""
    if not body:
        return None
    return ErrorDetail.parse(body)


class AcceptedDocument(NamedTuple):
    uuid: str
    code_number: str


class RejectedDocument(NamedTuple):
    code_number: str
    error: ErrorDetail | None


@dataclass(frozen=True)
class SubmitResult:
    """The synchronous answer to Submit Documents (202). ``submission_uid`` is None when every
    document was rejected."""

    submission_uid: str | None
    accepted: list[AcceptedDocument]
    rejected: list[RejectedDocument]

    @classmethod
    def parse(cls, body: dict[str, Any]) -> SubmitResult:
        accepted = [
            AcceptedDocument(str(_first(d, "uuid")), str(_first(d, "invoiceCodeNumber", "codeNumber")))
            for d in (_first(body, "acceptedDocuments") or [])
        ]
        rejected = [
            RejectedDocument(str(_first(d, "invoiceCodeNumber", "codeNumber")), ErrorDetail.parse(_first(d, "error")))
            for d in (_first(body, "rejectedDocuments") or [])
        ]
        return cls(
            submission_uid=_first(body, "submissionUid", "submissionUID") or None, accepted=accepted, rejected=rejected
        )


@dataclass(frozen=True)
class DocumentSummary:
    """A document's metadata as returned by Get Submission, Get Document (Details) and Search."""

    uuid: str
    submission_uid: str | None
    internal_id: str | None
    status: DocumentStatus
    long_id: str | None = None
    type_name: str | None = None
    type_version_name: str | None = None
    issuer_tin: str | None = None
    issuer_name: str | None = None
    receiver_id: str | None = None
    receiver_name: str | None = None
    date_time_issued: datetime | None = None
    date_time_received: datetime | None = None
    date_time_validated: datetime | None = None
    total_payable_amount: Decimal | None = None
    cancel_date_time: datetime | None = None
    reject_request_date_time: datetime | None = None
    document_status_reason: str | None = None
    raw: dict[str, Any] = field(default_factory=dict, repr=False, compare=False)

    @classmethod
    def parse(cls, obj: dict[str, Any]) -> DocumentSummary:
        return cls(
            uuid=str(_first(obj, "uuid")),
            submission_uid=_first(obj, "submissionUid", "submissionUID"),
            internal_id=_first(obj, "internalId", "internalID"),
            status=DocumentStatus.parse(_first(obj, "status")),
            long_id=_first(obj, "longId") or None,
            type_name=_first(obj, "typeName"),
            type_version_name=_first(obj, "typeVersionName"),
            issuer_tin=_first(obj, "issuerTin", "issuerTIN", "supplierTin", "supplierTIN"),
            issuer_name=_first(obj, "issuerName", "supplierName"),
            receiver_id=_first(obj, "receiverId", "receiverID", "buyerTin", "buyerTIN"),
            receiver_name=_first(obj, "receiverName", "buyerName"),
            date_time_issued=_datetime(_first(obj, "dateTimeIssued")),
            date_time_received=_datetime(_first(obj, "dateTimeReceived")),
            date_time_validated=_datetime(_first(obj, "dateTimeValidated")),
            total_payable_amount=_decimal(_first(obj, "totalPayableAmount", "total")),
            cancel_date_time=_datetime(_first(obj, "cancelDateTime")),
            reject_request_date_time=_datetime(_first(obj, "rejectRequestDateTime")),
            document_status_reason=_first(obj, "documentStatusReason"),
            raw=dict(obj),
        )

    def validation_link(self, portal_base_url: str) -> str | None:
        """The public validation link (what the QR code on the invoice encodes), once Valid."""
        if not self.long_id:
            return None
        return f"{portal_base_url.rstrip('/')}/{self.uuid}/share/{self.long_id}"


@dataclass(frozen=True)
class SubmissionPage:
    """One page of Get Submission."""

    submission_uid: str
    document_count: int
    date_time_received: datetime | None
    overall_status: SubmissionStatus
    documents: list[DocumentSummary]
    page_no: int
    page_size: int

    @property
    def total_pages(self) -> int:
        return max(1, math.ceil(self.document_count / self.page_size)) if self.page_size else 1

    @classmethod
    def parse(cls, body: dict[str, Any], *, page_no: int, page_size: int) -> SubmissionPage:
        return cls(
            submission_uid=str(_first(body, "submissionUid", "submissionUID")),
            document_count=int(_first(body, "documentCount") or 0),
            date_time_received=_datetime(_first(body, "dateTimeReceived")),
            overall_status=SubmissionStatus.parse(_first(body, "overallStatus")),
            documents=[DocumentSummary.parse(d) for d in (_first(body, "documentSummary") or [])],
            page_no=page_no,
            page_size=page_size,
        )


@dataclass(frozen=True)
class Submission:
    """Every page of Get Submission, put together."""

    submission_uid: str
    document_count: int
    date_time_received: datetime | None
    overall_status: SubmissionStatus
    documents: list[DocumentSummary]


@dataclass(frozen=True)
class ValidationError:
    """One problem LHDN found in a document, flattened out of the validation steps."""

    step: str | None
    code: str | None
    message: str | None
    property_path: str | None

    def clerk_message(self) -> str:
        """Plain words for the person who has to correct the invoice."""
        what = self.message or "the document failed this check"
        code = f" (code {self.code})" if self.code else ""
        if self.property_path:
            return f"MyInvois rejected field {self.property_path}: {what}{code}"
        step = f" in check '{self.step}'" if self.step else ""
        return f"MyInvois rejected the document{step}: {what}{code}"


@dataclass(frozen=True)
class ValidationStep:
    name: str | None
    status: DocumentStatus
    error: ErrorDetail | None


@dataclass(frozen=True)
class DocumentDetails:
    """Get Document Details: the summary plus the validation results."""

    summary: DocumentSummary
    validation_status: DocumentStatus
    steps: list[ValidationStep]

    @property
    def errors(self) -> list[ValidationError]:
        out: list[ValidationError] = []
        for step in self.steps:
            if step.error is None:
                continue
            for leaf in step.error.leaves():
                out.append(
                    ValidationError(
                        step=step.name,
                        code=leaf.code or step.error.code,
                        message=leaf.message or leaf.message_ms,
                        property_path=leaf.property_path or leaf.property_name,
                    )
                )
        return out

    @classmethod
    def parse(cls, body: dict[str, Any]) -> DocumentDetails:
        results = _first(body, "validationResults") or {}
        steps = [
            ValidationStep(
                name=_first(s, "name"),
                status=DocumentStatus.parse(_first(s, "status")),
                error=ErrorDetail.parse(_first(s, "error")),
            )
            for s in (_first(results, "validationSteps") or [])
        ]
        return cls(
            summary=DocumentSummary.parse(body),
            validation_status=DocumentStatus.parse(_first(results, "status") or _first(body, "status")),
            steps=steps,
        )


@dataclass(frozen=True)
class RawDocument:
    """Get Document: the summary and the document exactly as submitted (XML or JSON text)."""

    summary: DocumentSummary
    document: str

    @classmethod
    def parse(cls, body: dict[str, Any]) -> RawDocument:
        return cls(summary=DocumentSummary.parse(body), document=str(_first(body, "document") or ""))


@dataclass(frozen=True)
class SearchPage:
    """One page of Search Documents / Get Recent Documents."""

    documents: list[DocumentSummary]
    page_no: int
    total_pages: int
    total_count: int

    @classmethod
    def parse(cls, body: dict[str, Any], *, page_no: int) -> SearchPage:
        meta = _first(body, "metadata") or {}
        return cls(
            documents=[DocumentSummary.parse(d) for d in (_first(body, "result") or [])],
            page_no=page_no,
            total_pages=int(_first(meta, "totalPages") or 0),
            total_count=int(_first(meta, "totalCount") or 0),
        )


@dataclass(frozen=True)
class StateChange:
    """Answer of Cancel / Reject Document."""

    uuid: str
    status: DocumentStatus

    @classmethod
    def parse(cls, body: dict[str, Any]) -> StateChange:
        return cls(uuid=str(_first(body, "uuid")), status=DocumentStatus.parse(_first(body, "status")))


@dataclass(frozen=True)
class DocumentType:
    """One entry of Get All Document Types: LHDN's id for it and the e-invoice type code
    ("01" invoice ... "14" self-billed refund) it stands for. The id is not the code."""

    id: int
    type_code: str

    @classmethod
    def parse_all(cls, body: dict[str, Any]) -> list[DocumentType]:
        found = []
        for item in _first(body, "result") or []:
            code = _first(item, "invoiceTypeCode")
            type_id = _first(item, "id")
            if code is None or type_id is None:
                continue
            # Documented as a Number (1 for "01"): the code is two digits everywhere else.
            found.append(cls(id=int(type_id), type_code=f"{int(code):02d}"))
        return found


def workflow_hours(body: dict[str, Any], parameter: str, at: datetime) -> float | None:
    """The value, in hours, of the workflow parameter ``parameter`` (``cancellationDuration``,
    ``rejectionDuration``, ``submissionDuration``) of one Get Document Type answer that is in
    force at ``at``; None when the answer does not carry it."""
    for item in _first(body, "workflowParameters") or []:
        if _first(item, "parameter") != parameter:
            continue
        active_from = _datetime(_first(item, "activeFrom"))
        active_to = _datetime(_first(item, "activeTo"))
        if (active_from and active_from > at) or (active_to and active_to < at):
            continue
        value = _first(item, "value")
        try:
            hours = float(value)
        except (TypeError, ValueError):
            continue
        if hours > 0:
            return hours
    return None
