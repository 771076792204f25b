"""What each MyInvois endpoint does, on the simulator's state.

The HTTP plumbing common to every call (tokens, rate limits, faults, statistics) lives in
``app.py``; here each method receives an authenticated caller and the request's inputs and
returns the response MyInvois would give.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import math
import re
import secrets
import threading
import time
import uuid as uuid_module
from datetime import UTC, datetime, timedelta
from urllib.parse import parse_qs

from starlette.responses import Response

from connector_core.codes import code_table

from . import document_types, lifecycle
from .config import IntermediaryAccount, LifecycleWindows, SimulatorConfig, TaxpayerAccount
from .faults import FaultInjector
from .rate_limiter import SlidingWindowLimiter
from .responses import CompactJSONResponse, api_error, detail, iso, oauth_error
from .stats import Stats
from .store import Document, IdGenerator, Store, Submission, Token
from .validator import (
    DocumentFacts,
    UnreadableDocument,
    check_document,
    duplicate_problem,
    is_well_formed_tin,
    parse_document,
    read_facts,
    validation_steps,
)

PLACEHOLDER_CLIENT_IDS = frozenset({"", "0", "YOUR_CLIENT_ID"})
ENVELOPE_KEYS = frozenset({"documents"})
DOCUMENT_KEYS = frozenset({"format", "document", "documentHash", "codeNumber"})
ID_TYPES = ("NRIC", "PASSPORT", "BRN", "ARMY")
MAX_LISTED = 10_000
LIST_WINDOW = timedelta(days=31)
_SEARCH_QUERY = re.compile(r"[\w .\-@/]*")


def overall_status(statuses: list[str], style: str) -> str:
    if any(s == "Submitted" for s in statuses):
        kind = "in progress"
    elif all(s in ("Valid", "Cancelled") for s in statuses):
        kind = "valid"
    elif all(s == "Invalid" for s in statuses):
        kind = "invalid"
    else:
        kind = "partially valid"
    if style == "title":
        return kind.title()
    if style == "pascal":
        return kind.title().replace(" ", "")
    return kind


def qr_code_text(tin: str) -> str:
    """The Base64 text a taxpayer's profile QR code would hold (a stable uuid per TIN)."""
    return base64.b64encode(
        str(uuid_module.uuid5(uuid_module.NAMESPACE_URL, f"myinvois-simulator:{tin}")).encode()
    ).decode()


def _hash_matches(claimed: str, raw: bytes) -> bool:
    digest = hashlib.sha256(raw).digest()
    # The SDKs send lower-case hex; whether upper-case hex or Base64 is accepted is unconfirmed,
    # so both are taken (API.md §7.6).
    return claimed.lower() == digest.hex() or claimed == base64.b64encode(digest).decode()


def _int_param(params, name: str, default: int, low: int, high: int) -> int | Response:
    raw = params.get(name)
    if raw is None or raw == "":
        return default
    try:
        value = int(raw)
    except ValueError:
        return api_error(400, "BadArgument", f"{name} must be a whole number", target=name)
    if not low <= value <= high:
        return api_error(400, "BadArgument", f"{name} must be between {low} and {high}", target=name)
    return value


def _parse_moment(raw: str) -> datetime | None:
    try:
        moment = datetime.fromisoformat(raw.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


class Simulator:
    """The whole simulated service: configuration plus state, one instance per app."""

    def __init__(self, config: SimulatorConfig) -> None:
        self.config = config
        self.store = Store()
        self.stats = Stats()
        self.ids = IdGenerator()
        self.faults = FaultInjector(config.faults, config.seed)
        self.limiter = SlidingWindowLimiter(config.rate_limits.limits(), config.rate_limits.window_seconds)
        self.taxpayers: dict[str, TaxpayerAccount] = {t.client_id: t for t in config.taxpayers}
        self.intermediaries: dict[str, IntermediaryAccount] = {i.client_id: i for i in config.intermediaries}
        self.taxpayers_by_tin: dict[str, TaxpayerAccount] = {t.tin: t for t in config.taxpayers}
        # Held while a cancellation or rejection is checked and applied (API or portal).
        self.state_lock = threading.Lock()

    def reset(self) -> None:
        """Forget documents, submissions, counters and rate windows; tokens stay valid."""
        self.store.clear_documents()
        self.stats.reset()
        self.limiter.reset()

    # -- identity ----------------------------------------------------------------------------

    @staticmethod
    def login_form(body: bytes) -> dict[str, str]:
        fields = parse_qs(body.decode("utf-8", "replace"), keep_blank_values=True)
        return {k: v[0] for k, v in fields.items()}

    def login(self, form: dict[str, str], onbehalfof: str | None, now: float) -> Response:
        client_id = form.get("client_id", "").strip()
        if client_id in PLACEHOLDER_CLIENT_IDS:
            return oauth_error(400, "invalid_request", "client_id is missing or a placeholder; such calls are blocked")
        if form.get("grant_type") != "client_credentials":
            return oauth_error(400, "unsupported_grant_type", "grant_type must be client_credentials")
        scope = form.get("scope") or "InvoicingAPI"
        if scope != "InvoicingAPI":
            return oauth_error(400, "invalid_scope", f"scope {scope!r} is not known; use InvoicingAPI")
        secret = form.get("client_secret", "")
        taxpayer = self.taxpayers.get(client_id)
        intermediary = self.intermediaries.get(client_id)
        account = taxpayer or intermediary
        if account is None or not secrets.compare_digest(account.client_secret.encode(), secret.encode()):
            return oauth_error(400, "invalid_client", "client id or client secret is not valid")
        if intermediary is not None:
            if not onbehalfof:
                return oauth_error(400, "invalid_request", "an intermediary must send the onbehalfof header")
            tin, _, brn = onbehalfof.strip().partition(":")
            if tin not in intermediary.acts_for:
                return oauth_error(
                    400, "invalid_grant", f"the intermediary is not authorised to act on behalf of {tin}"
                )
            represented = self.taxpayers_by_tin.get(tin)
            if brn and represented is not None and represented.brn and brn != represented.brn:
                return oauth_error(400, "invalid_grant", f"{brn} is not the registration number of {tin}")
            name = represented.name if represented else tin
            token = Token(
                secrets.token_urlsafe(32), client_id, tin, name, client_id, now + self.config.token_lifetime_seconds
            )
        else:
            token = Token(
                secrets.token_urlsafe(32),
                client_id,
                account.tin,
                account.name,
                None,
                now + self.config.token_lifetime_seconds,
            )
        self.store.tokens[token.value] = token
        self.stats.count_login(client_id)
        return CompactJSONResponse(
            {
                "access_token": token.value,
                "token_type": "Bearer",
                "expires_in": self.config.token_lifetime_seconds,
                "scope": "InvoicingAPI",
            }
        )

    def revoke_tokens(self, client_id: str | None = None) -> int:
        revoked = 0
        for token in self.store.tokens.values():
            if not token.revoked and (client_id is None or token.client_id == client_id):
                token.revoked = True
                revoked += 1
        return revoked

    # -- who may see what --------------------------------------------------------------------

    @staticmethod
    def is_issuer(token: Token, principal: tuple[str, str | None], issuer_tin: str) -> bool:
        """An intermediary sees only what it submitted; a taxpayer sees everything it issued."""
        if token.intermediary is not None:
            return principal == token.principal()
        return issuer_tin == token.tin

    @staticmethod
    def is_receiver(token: Token, document: Document) -> bool:
        return token.intermediary is None and bool(document.receiver_tin) and document.receiver_tin == token.tin

    # -- submit ------------------------------------------------------------------------------

    def submit(self, token: Token, body: bytes, now: float) -> Response:
        config = self.config
        if len(body) > config.max_submission_bytes:
            return api_error(
                400,
                "MaximumSizeExceeded",
                f"Submission size {len(body)} bytes exceeds the maximum of {config.max_submission_bytes} bytes",
                target="submission",
                details=[
                    detail(
                        "MaximumSizeExceeded",
                        f"Maximum submission size is {config.max_submission_bytes} bytes",
                        "submission",
                    )
                ],
            )
        envelope = self._envelope(body)
        if isinstance(envelope, Response):
            return envelope
        if len(envelope) > config.max_documents_per_submission:
            return api_error(
                400,
                "MaximumSizeExceeded",
                f"Submission contains {len(envelope)} documents; at most {config.max_documents_per_submission} are allowed",
                target="documents",
                details=[
                    detail(
                        "MaximumSizeExceeded",
                        f"Maximum number of documents is {config.max_documents_per_submission}",
                        "documents",
                    )
                ],
            )
        payload_key = hashlib.sha256(f"{token.tin}|{token.intermediary}|".encode() + body).digest()
        wait = self.store.seen_payload(payload_key, now, config.duplicate_submission_window_seconds)
        if wait is not None:
            retry_after = max(1, math.ceil(wait))
            return api_error(
                422,
                "DuplicateSubmission",
                "An identical submission was received in the last 10 minutes; it will not be processed again",
                target="submission",
                headers={"Retry-After": str(retry_after)},
            )

        received = datetime.fromtimestamp(now, UTC)
        rejected: list[dict] = []
        readable: list[tuple[dict, bytes, dict, DocumentFacts]] = []
        wrong_submitter: list[dict] = []
        for item in envelope:
            code_number = item["codeNumber"]
            outcome = self._decode(item, code_number)
            if isinstance(outcome, dict):
                rejected.append(outcome)
                continue
            raw, invoice = outcome
            facts = read_facts(invoice)
            if facts.issuer_tin != token.tin:
                wrong_submitter.append(
                    detail(
                        "IncorrectSubmitter",
                        f"The issuer TIN {facts.issuer_tin or '(missing)'} of document {code_number} is not the "
                        f"authenticated taxpayer {token.tin}",
                        code_number,
                    )
                )
                continue
            readable.append((item, raw, invoice, facts))
        if wrong_submitter:
            return api_error(
                403,
                "IncorrectSubmitter",
                "The authenticated TIN and the documents' issuer TIN do not match",
                target="submission",
                details=wrong_submitter,
            )

        accepted: list[dict] = []
        submission_uid = self.ids.new() if readable else None
        slow_extra = self.faults.slow_validation_extra() if readable else 0.0
        if slow_extra:
            self.stats.count_fault("slow_validation")
        validation = config.validation
        created_by = f"{token.tin}:{token.client_id}"
        principal = token.principal()
        document_uuids = []
        for position, (item, raw, invoice, facts) in enumerate(readable, start=1):
            document_uuid = self.ids.new()
            while document_uuid in self.store.documents:
                document_uuid = self.ids.new()
            problems = check_document(invoice, facts, received, validation)
            if not problems:
                key = facts.duplicate_key()
                earlier = self.store.earlier_duplicate(key, now, validation.duplicate_document_window_seconds)
                if earlier is not None:
                    problems.append(duplicate_problem(earlier, document_uuid))
                else:
                    self.store.remember_document_key(key, document_uuid, now)
            ready_at = now + validation.delay_seconds + validation.per_document_seconds * position + slow_extra
            assert submission_uid is not None  # there is a document, so the submission has a uid
            document = Document(
                document_uuid,
                submission_uid,
                facts,
                now,
                ready_at,
                problems,
                raw if config.keep_raw_documents else None,
                item["format"].upper(),
                principal,
                created_by,
            )
            self.store.documents[document_uuid] = document
            if not problems:
                for original in facts.referenced_uuids:
                    if original in self.store.documents:
                        self.store.referenced_by.setdefault(original, []).append(document_uuid)
            invoice_key = f"{facts.issuer_tin}|{facts.internal_id}"
            self.store.accepted_by_invoice[invoice_key] = self.store.accepted_by_invoice.get(invoice_key, 0) + 1
            document_uuids.append(document_uuid)
            accepted.append({"uuid": document_uuid, "invoiceCodeNumber": item["codeNumber"]})
        if submission_uid is not None:
            self.store.submissions[submission_uid] = Submission(
                submission_uid, now, token.client_id, principal, document_uuids
            )
        self.store.remember_payload(payload_key, now, config.duplicate_submission_window_seconds)
        self.stats.submissions += 1
        return CompactJSONResponse(
            {config.submission_uid_key: submission_uid, "acceptedDocuments": accepted, "rejectedDocuments": rejected},
            status_code=202,
        )

    @staticmethod
    def _envelope(body: bytes) -> list[dict] | Response:
        def bad(message: str) -> Response:
            return api_error(
                400,
                "BadStructure",
                message,
                target="submission",
                details=[detail("BadStructure", message, "submission")],
            )

        try:
            envelope = json.loads(body)
        except ValueError:
            return bad("JSON is not valid")
        if not isinstance(envelope, dict) or set(envelope) != ENVELOPE_KEYS:
            return bad("Invalid structured submission: the body must be an object holding only 'documents'")
        documents = envelope["documents"]
        if not isinstance(documents, list) or not documents:
            return bad("Invalid structured submission: 'documents' must be a non-empty array")
        for index, item in enumerate(documents):
            if not isinstance(item, dict) or set(item) != DOCUMENT_KEYS:
                return bad(
                    f"Invalid structured submission: documents[{index}] must hold exactly "
                    "format, document, documentHash and codeNumber"
                )
            if not all(isinstance(item[k], str) for k in DOCUMENT_KEYS):
                return bad(f"Invalid structured submission: documents[{index}] fields must be strings")
            if item["format"].upper() not in ("JSON", "XML"):
                return bad(f"Invalid structured submission: documents[{index}].format must be JSON or XML")
        return documents

    def _decode(self, item: dict, code_number: str) -> tuple[bytes, dict] | dict:
        """The document's bytes and parsed Invoice, or the rejectedDocuments entry saying why not."""

        def rejection(message: str, target: str, property_path: str | None = None, code: str | None = None) -> dict:
            return {
                "invoiceCodeNumber": code_number,
                "error": {
                    "code": code,
                    "message": "Validation Error",
                    "target": code_number,
                    "propertyPath": None,
                    "details": [detail(code, message, target, property_path)],
                },
            }

        try:
            raw = base64.b64decode(item["document"], validate=True)
        except (binascii.Error, ValueError):
            return rejection("Document is not valid Base64.", "document")
        if len(raw) > self.config.max_document_bytes:
            return rejection(
                f"Document size {len(raw)} bytes exceeds the maximum of {self.config.max_document_bytes} bytes.",
                "document",
                code="MaximumSizeExceeded",
            )
        if not _hash_matches(item["documentHash"], raw):
            return rejection("Document hash is not valid.", "documentHash")
        try:
            invoice = parse_document(raw, item["format"].upper())
        except UnreadableDocument as exc:
            return rejection(str(exc), "document", exc.property_path, code="3")
        return raw, invoice

    # -- reading submissions and documents ---------------------------------------------------

    def summary(self, document: Document, now: float) -> dict:
        excluding, discount, net, payable = document.totals
        status = document.status(now)
        return {
            "uuid": document.uuid,
            "submissionUid": document.submission_uid,
            "longId": document.long_id(now),
            "internalId": document.internal_id,
            "typeName": code_table("EInvoiceTypes").get(document.type_code, document.type_code),
            "typeVersionName": document.version,
            "issuerTin": document.issuer_tin,
            "issuerName": document.issuer_name,
            "receiverId": document.receiver_tin or document.receiver_id,  # observed: holds the TIN
            "receiverName": document.receiver_name,
            "dateTimeIssued": iso(document.issued_at),
            "dateTimeReceived": iso(document.received_at),
            "dateTimeValidated": iso(document.ready_at) if status != "Submitted" else None,
            "totalExcludingTax": excluding,
            "totalDiscount": discount,
            "totalNetAmount": net,
            "totalPayableAmount": payable,
            "status": status,
            "cancelDateTime": iso(document.cancelled_at),
            "rejectRequestDateTime": iso(document.reject_requested_at),
            "documentStatusReason": document.status_reason,
            "createdByUserId": document.created_by,
        }

    def get_submission(self, token: Token, uid: str, params, now: float) -> Response:
        submission = self.store.submissions.get(uid)
        if submission is None or not self.is_issuer(token, submission.principal, submission.principal[0]):
            return api_error(404, "NotFound", f"Submission {uid} was not found", target="submissionUid")
        page_no = _int_param(params, "pageNo", 1, 1, 1_000_000)
        if isinstance(page_no, Response):
            return page_no
        page_size = _int_param(params, "pageSize", 100, 1, 100)
        if isinstance(page_size, Response):
            return page_size
        documents = [self.store.documents[u] for u in submission.document_uuids if u in self.store.documents]
        statuses = [d.status(now) for d in documents]
        page = documents[(page_no - 1) * page_size : page_no * page_size]
        return CompactJSONResponse(
            {
                "submissionUid": submission.uid,
                "documentCount": len(documents),
                "dateTimeReceived": iso(submission.received_at),
                "overallStatus": overall_status(statuses, self.config.overall_status_style),
                "documentSummary": [self.summary(d, now) for d in page],
            }
        )

    def _readable_document(self, token: Token, uuid: str, now: float) -> Document | None:
        document = self.store.documents.get(uuid)
        if document is None:
            return None
        if self.is_issuer(token, document.principal, document.issuer_tin):
            return document
        if self.is_receiver(token, document) and document.status(now) in ("Valid", "Cancelled"):
            return document
        return None

    def get_document_details(self, token: Token, uuid: str, now: float) -> Response:
        document = self._readable_document(token, uuid, now)
        if document is None:
            return api_error(404, "NotFound", f"Document {uuid} was not found", target="uuid")
        body = self.summary(document, now)
        status = body["status"]
        final = "Valid" if status == "Cancelled" else status
        body["validationResults"] = {"status": final, "validationSteps": validation_steps(document.problems, final)}
        return CompactJSONResponse(body)

    def get_document(self, token: Token, uuid: str, now: float) -> Response:
        document = self._readable_document(token, uuid, now)
        if document is None or document.status(now) == "Invalid":
            return api_error(
                404,
                "NotFound",
                f"Document {uuid} was not found (invalid documents are only available through Get Document Details)",
                target="uuid",
            )
        body = self.summary(document, now)
        body["document"] = document.raw_text()
        return CompactJSONResponse(body)

    # -- cancel and reject -------------------------------------------------------------------

    def change_state(self, token: Token, uuid: str, body: object, now: float) -> Response:
        """The API's door: the caller must be the issuer to cancel, the receiver to reject."""
        try:
            wanted, reason = lifecycle.read_request(body)
            document = self.store.documents.get(uuid)
            if document is None:
                raise lifecycle.StateChangeRefused(404, "NotFound", f"Document {uuid} was not found", "uuid")
            if wanted == lifecycle.CANCEL:
                allowed = self.is_issuer(token, document.principal, document.issuer_tin)
            else:
                allowed = self.is_receiver(token, document)
            if not allowed:
                # The pages answer 403 for a document "not issued by them" / "not received by
                # them", which covers third parties too; the body is the one observed on the wire.
                who = "issuer" if wanted == lifecycle.CANCEL else "receiver"
                raise lifecycle.StateChangeRefused(
                    403,
                    "AccessDenied",
                    "The document cannot be cancelled or requested for rejection",
                    "Update Document Status",
                    [
                        detail(
                            "Forbidden",
                            f"Only the document's {who} may do this; "
                            "it seems that you are not authorized to update document status",
                            "Document.UUID",
                        )
                    ],
                )
            with self.state_lock:
                outcome = lifecycle.change_state(self.store, self.config, document, wanted, reason, now)
        except lifecycle.StateChangeRefused as refused:
            return refused.response()
        return CompactJSONResponse(outcome)

    # -- portal events: what the issuer or the buyer does on the MyInvois portal -------------

    def portal_cancel(self, uuid: str, reason: str, now: float | None = None) -> dict:
        """The issuer cancels the document on the portal; raises StateChangeRefused like the API."""
        return self._portal_event(uuid, lifecycle.CANCEL, reason, now)

    def portal_request_rejection(self, uuid: str, reason: str, now: float | None = None) -> dict:
        """The buyer requests rejection on the portal: the document stays Valid, with the reason."""
        return self._portal_event(uuid, lifecycle.REJECT, reason, now)

    def _portal_event(self, uuid: str, wanted: str, reason: object, now: float | None) -> dict:
        # No token and no rate limit: the portal is LHDN's own front end. Its rules are the API's.
        moment = time.time() if now is None else now
        checked = lifecycle.checked_reason(reason)
        document = self.store.documents.get(uuid)
        if document is None:
            raise lifecycle.StateChangeRefused(404, "NotFound", f"Document {uuid} was not found", "uuid")
        # Tests call this from their own thread while uvicorn serves in another: one change at a time.
        with self.state_lock:
            outcome = lifecycle.change_state(self.store, self.config, document, wanted, checked, moment)
        self.stats.count_portal_event("cancel" if wanted == lifecycle.CANCEL else "reject")
        return outcome

    def portal_event_response(self, uuid: str, wanted: str, body: object) -> Response:
        reason = body.get("reason") if isinstance(body, dict) else None
        try:
            return CompactJSONResponse(self._portal_event(uuid, wanted, reason, None))
        except lifecycle.StateChangeRefused as refused:
            return refused.response()

    # -- lifecycle windows and document types (Platform API) ---------------------------------

    def windows(self) -> dict:
        config = self.config
        return {
            "cancellation_window_hours": config.cancellation_window_hours,
            "rejection_window_hours": config.rejection_window_hours,
            "lifecycle_window_seconds": config.lifecycle_window_seconds,
            "effective_seconds": {
                "cancellation": config.cancellation_window_seconds(),
                "rejection": config.rejection_window_seconds(),
            },
        }

    def set_windows(self, change: LifecycleWindows) -> dict:
        """Apply at once, to documents already Valid too: a test can close a window on demand."""
        given = change.model_fields_set
        for name in ("cancellation_window_hours", "rejection_window_hours"):
            value = getattr(change, name)
            if name in given and value is not None:
                setattr(self.config, name, value)
        if "lifecycle_window_seconds" in given:
            self.config.lifecycle_window_seconds = change.lifecycle_window_seconds
        return self.windows()

    def get_document_types(self) -> Response:
        return CompactJSONResponse(document_types.all_document_types())

    def get_document_type(self, raw_id: str, raw_version: str | None = None) -> Response:
        try:
            type_id = int(raw_id)
            version_id = int(raw_version) if raw_version is not None else None
        except ValueError:
            return api_error(400, "BadArgument", "document type and version ids are numbers", target="id")
        if version_id is None:
            found = document_types.document_type(type_id, self.config)
        else:
            found = document_types.document_type_version(type_id, version_id)
        if found is None:
            what = f"Document type {raw_id}" + (f" version {raw_version}" if raw_version is not None else "")
            return api_error(404, "NotFound", f"{what} was not found", target="id")
        return CompactJSONResponse(found)

    # -- listing: recent and search ----------------------------------------------------------

    def _list_item(self, document: Document, now: float, tin_spelling: str) -> dict:
        summary = self.summary(document, now)
        excluding, discount, net, payable = document.totals
        intermediary = self.intermediaries.get(document.principal[1] or "")
        item = {
            "uuid": document.uuid,
            "submissionUID": document.submission_uid,
            "longId": summary["longId"],
            "internalId": document.internal_id,
            "typeName": summary["typeName"],
            "typeVersionName": document.version,
            "issuerTin": document.issuer_tin,
            "issuerName": document.issuer_name,
            "receiverId": summary["receiverId"],
            "receiverName": document.receiver_name,
            "dateTimeIssued": summary["dateTimeIssued"],
            "dateTimeReceived": summary["dateTimeReceived"],
            "dateTimeValidated": summary["dateTimeValidated"],
            "totalSales": excluding,
            "totalDiscount": discount,
            "netAmount": net,
            "total": payable,
            "status": summary["status"],
            "cancelDateTime": summary["cancelDateTime"],
            "rejectRequestDateTime": summary["rejectRequestDateTime"],
            "documentStatusReason": document.status_reason,
            "createdByUserId": document.created_by,
            "supplierName": document.supplier_name,
            "submissionChannel": "ERP",
            "intermediaryName": intermediary.name if intermediary else None,
            "intermediaryTin": intermediary.tin if intermediary else None,
            "intermediaryRob": intermediary.brn if intermediary else None,
            "buyerName": document.buyer_name,
        }
        item["supplier" + tin_spelling] = document.supplier_tin
        item["buyer" + tin_spelling] = document.buyer_tin
        return item

    @staticmethod
    def _range(params, prefix: str) -> tuple[float, float] | Response | None:
        """The (from, to) timestamps of one date pair, None when absent, or the 400 saying why not."""
        raw_from, raw_to = params.get(f"{prefix}DateFrom"), params.get(f"{prefix}DateTo")
        if not raw_from and not raw_to:
            return None
        if not raw_from or not raw_to:
            return api_error(
                400,
                "BadArgument",
                f"{prefix}DateFrom and {prefix}DateTo must be given together",
                target=f"{prefix}DateFrom",
            )
        start, end = _parse_moment(raw_from), _parse_moment(raw_to)
        if start is None or end is None:
            return api_error(
                400,
                "BadArgument",
                f"{prefix}DateFrom/{prefix}DateTo must be UTC date-times",
                target=f"{prefix}DateFrom",
            )
        if start >= end:
            return api_error(
                400, "BadArgument", f"{prefix}DateFrom must be earlier than {prefix}DateTo", target=f"{prefix}DateFrom"
            )
        if end - start > LIST_WINDOW:
            return api_error(
                400, "BadArgument", f"the {prefix} date range may span at most 31 days", target=f"{prefix}DateTo"
            )
        return start.timestamp(), end.timestamp()

    def list_documents(self, token: Token, params, now: float, search: bool) -> Response:
        submitted = self._range(params, "submission")
        if isinstance(submitted, Response):
            return submitted
        issued = self._range(params, "issue")
        if isinstance(issued, Response):
            return issued
        if search and submitted is None and issued is None:
            return api_error(
                400,
                "BadArgument",
                "either submissionDateFrom/To or issueDateFrom/To is required",
                target="submissionDateFrom",
            )
        page_no = _int_param(params, "pageNo", 1, 1, 1_000_000)
        if isinstance(page_no, Response):
            return page_no
        page_size = _int_param(params, "pageSize", 100, 1, 100)
        if isinstance(page_size, Response):
            return page_size
        direction = params.get("invoiceDirection") or params.get("InvoiceDirection") or ""
        if direction and direction not in ("Sent", "Received"):
            return api_error(400, "BadArgument", "InvoiceDirection must be Sent or Received", target="InvoiceDirection")
        status = params.get("status") or ""
        if status and status not in ("Valid", "Invalid", "Cancelled", "Submitted"):
            return api_error(
                400, "BadArgument", "status must be Valid, Invalid, Cancelled or Submitted", target="status"
            )
        document_type = params.get("documentType") or ""
        if document_type and document_type not in code_table("EInvoiceTypes"):
            return api_error(400, "BadArgument", "documentType must be an e-invoice type code", target="documentType")
        query = (params.get("searchQuery") or "").strip()
        if search and not _SEARCH_QUERY.fullmatch(query):
            return api_error(400, "BadArgument", "searchQuery may not contain special characters", target="searchQuery")
        wanted_uuid = params.get("uuid") if search else None
        receiver_tin = params.get("receiverTin") if not search else None
        issuer_tin = params.get("issuerTin") if not search else None
        receiver_id = params.get("receiverId") if not search else None
        issuer_id = params.get("issuerId") if not search else None
        if (receiver_tin or receiver_id) and direction != "Sent":
            return api_error(400, "BadArgument", "receiver filters need InvoiceDirection=Sent", target="receiverTin")
        if (issuer_tin or issuer_id) and direction != "Received":
            return api_error(400, "BadArgument", "issuer filters need InvoiceDirection=Received", target="issuerTin")

        oldest = now - LIST_WINDOW.total_seconds()
        # Real MyInvois indexes documents asynchronously: a listing does not see the newest ones yet.
        indexed_before = now - self.faults.config.search_lag_seconds
        hidden = False
        matches: list[Document] = []
        lowered = query.lower()
        for document in self.store.documents.values():
            if document.received_at < oldest:
                continue
            doc_status = document.status(now)
            sent = self.is_issuer(token, document.principal, document.issuer_tin)
            received = not sent and self.is_receiver(token, document) and doc_status in ("Valid", "Cancelled")
            if not (sent or received):
                continue
            if (direction == "Sent" and not sent) or (direction == "Received" and not received):
                continue
            if status and doc_status != status:
                continue
            if document_type and document.type_code != document_type:
                continue
            if wanted_uuid and document.uuid != wanted_uuid:
                continue
            if submitted and not submitted[0] <= document.received_at <= submitted[1]:
                continue
            if issued and (document.issued_at is None or not issued[0] <= document.issued_at <= issued[1]):
                continue
            if receiver_tin and document.receiver_tin != receiver_tin:
                continue
            if receiver_id and document.receiver_id != receiver_id:
                continue
            if issuer_tin and document.issuer_tin != issuer_tin:
                continue
            if lowered and not any(
                lowered in str(v).lower()
                for v in (
                    document.uuid,
                    document.buyer_tin,
                    document.supplier_tin,
                    document.buyer_name,
                    document.supplier_name,
                    document.internal_id,
                    document.totals[3],
                )
            ):
                continue
            if document.received_at > indexed_before:
                hidden = True  # it would have matched: only the indexing lag hides it
                continue
            matches.append(document)
        if hidden:
            # Once per listing call that left out at least one not-yet-indexed document.
            self.stats.count_fault("search_lag")
        matches.sort(key=lambda d: d.received_at, reverse=True)
        matches = matches[:MAX_LISTED]
        page = matches[(page_no - 1) * page_size : page_no * page_size]
        spelling = self.config.search_tin_spelling if search else "Tin"
        return CompactJSONResponse(
            {
                "result": [self._list_item(d, now, spelling) for d in page],
                "metadata": {"totalPages": math.ceil(len(matches) / page_size), "totalCount": len(matches)},
            }
        )

    # -- taxpayer APIs -----------------------------------------------------------------------

    def validate_tin(self, tin: str, params) -> Response:
        id_type, id_value = params.get("idType") or "", params.get("idValue") or ""
        if not is_well_formed_tin(tin):
            return api_error(400, "BadArgument", f"{tin} is not a well-formed TIN", target="tin")
        if id_type not in ID_TYPES or not id_value:
            return api_error(
                400, "BadArgument", "idType (NRIC, PASSPORT, BRN or ARMY) and idValue are required", target="idType"
            )
        known = self.taxpayers_by_tin.get(tin)
        if known is not None:
            if id_type == "BRN" and id_value == known.brn:
                return Response(status_code=200)
            return api_error(404, "NotFound", f"TIN {tin} with {id_type} {id_value} was not found", target="tin")
        if self.config.accept_unknown_tins:
            return Response(status_code=200)
        return api_error(404, "NotFound", f"TIN {tin} was not found", target="tin")

    def search_tin(self, params) -> Response:
        name = (params.get("taxpayerName") or "").strip().lower()
        id_type, id_value = params.get("idType") or "", params.get("idValue") or ""
        file_type = params.get("fileType") or ""
        if not name and not (id_type and id_value):
            return api_error(
                400, "BadArgument", "taxpayerName or idType with idValue is required", target="taxpayerName"
            )
        if id_type and id_type not in ID_TYPES:
            return api_error(400, "BadArgument", "idType must be NRIC, PASSPORT, BRN or ARMY", target="idType")
        if file_type and file_type not in ("1", "2"):
            return api_error(
                400, "BadArgument", "fileType must be 1 (individual) or 2 (non-individual)", target="fileType"
            )
        found = []
        for taxpayer in self.taxpayers_by_tin.values():
            if name and name not in taxpayer.name.lower():
                continue
            if id_type and not (id_type == "BRN" and taxpayer.brn == id_value):
                continue
            if file_type and (file_type == "1") != taxpayer.tin.startswith("IG"):
                continue
            found.append(taxpayer.tin)
        if not found:
            return api_error(404, "NotFound", "No taxpayer matches the search criteria", target="taxpayerName")
        if len(found) > 1:
            return api_error(
                400,
                "BadArgument",
                "Search criteria in not conclusive, more than one TIN matches",
                target="taxpayerName",
            )
        return CompactJSONResponse({"tin": found[0]})

    def qr_info(self, qr_text: str, now: float) -> Response:
        for taxpayer in self.taxpayers_by_tin.values():
            code = qr_code_text(taxpayer.tin)
            if qr_text in (code, base64.b64decode(code).decode()):
                return CompactJSONResponse(
                    {
                        "tin": taxpayer.tin,
                        "name": taxpayer.name,
                        "idType": "BRN",
                        "idNumber": taxpayer.brn,
                        "sst": "NA",
                        "email": None,
                        "contactNumber": None,
                        "ttx": "NA",
                        "businessActivityDescriptionBM": None,
                        "businessActivityDescriptionEN": None,
                        "msic": None,
                        "addressLine0": None,
                        "addressLine1": None,
                        "addressLine2": None,
                        "postalZone": None,
                        "city": None,
                        "state": None,
                        "country": "MYS",
                        "generatedTimestamp": iso(now),
                    }
                )
        return api_error(404, "NotFound", "No taxpayer has this QR code", target="qrCodeText")

    # -- statistics --------------------------------------------------------------------------

    def stats_document(self, now: float) -> dict:
        by_status, valid = self.store.status_counts(now)
        return {
            "window_seconds": self.limiter.window,
            "limits": dict(self.limiter.limits),
            "requests": self.stats.requests,
            "max_requests_per_window": self.limiter.peaks,
            "logins": self.stats.logins,
            "submissions": self.stats.submissions,
            "documents_by_status": by_status,
            "accepted_by_invoice": self.store.accepted_by_invoice,
            "valid_by_invoice": valid,
            "duplicate_documents": sum(max(0, n - 1) for n in valid.values()),
            "faults_injected": self.stats.faults_injected,
            "portal_events": self.stats.portal_events,
        }
