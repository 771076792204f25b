"""The MyInvois HTTP client (synchronous, thread-safe; the daemon uses threads).

It knows HTTP, tokens, rate limits, retries and LHDN's response shapes — nothing of the
ledger, the plugins or the pipeline. What each failure means for the caller is told by the
class of the error raised (see :mod:`.errors`).

Retry rules, by what the server may have done:

* 401: the token expired or was revoked. Forget it, log in once, repeat the call once (the
  server did not process the call, so this is safe for submissions too).
* 429: not processed either. Record the ``Retry-After`` as a shared cool-down (every process
  using the same rate-limit backend waits), then repeat — up to the limits in
  :class:`.retry.RetrySettings`, after which ``RateLimited`` goes to the caller.
* reads (``GET``): a timeout, a dropped connection or a 5xx is retried with back-off and jitter.
* submit: retried only when the request certainly did not leave this machine (the connection
  could not be opened). Once the request may have been sent — read/write timeout, connection
  dropped, 5xx, unreadable 2xx — it raises :class:`.errors.SubmitOutcomeUnknown` and is never
  repeated here: repeating it could create a duplicate, which LHDN treats as abuse. The caller
  reconciles (Search Documents by date and internal id) before deciding.
* cancel / reject: not repeated once possibly sent either (they change state); a transient
  failure raises ``RetriableError`` and the caller checks the document's status first.
* the rate-limit backend fails (Redis, PostgreSQL or SQLite down or locked): nothing is sent,
  for any endpoint, login included; :class:`.errors.RateBackendUnavailable` goes to the caller
  at once (repeating within the call would not bring the backend back).

Logs carry the endpoint, status, attempt and LHDN's ``correlationId``; never a token, a secret
or an ``Authorization`` header.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterable, Iterator
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import httpx
import orjson

from .endpoints import ROUTES, Endpoint
from .errors import (
    ApiError,
    AuthenticationFailed,
    BatchRefused,
    DuplicateSubmission,
    NotFound,
    RateBackendUnavailable,
    RateLimited,
    RequestRefused,
    RetriableError,
    SubmitOutcomeUnknown,
    error_class_for_status,
)
from .events import ApiCall, Listener, notify
from .ratelimit import RatePolicy, Slot
from .responses import (
    DocumentDetails,
    DocumentType,
    ErrorDetail,
    RawDocument,
    SearchPage,
    StateChange,
    Submission,
    SubmissionPage,
    SubmitResult,
    parse_error_body,
)
from .retry import RetrySettings, backoff_delay, parse_retry_after, rate_limited_delay, should_wait_for
from .send_watch import SendWatch
from .token import Credentials, TokenCache, TokenProvider

log = logging.getLogger(__name__)

#: LHDN's limits on one submission (Submit Documents page).
MAX_DOCUMENTS_PER_SUBMISSION = 100
MAX_SUBMISSION_BYTES = 5 * 1024 * 1024
MAX_DOCUMENT_BYTES = 300 * 1024
MAX_PAGE_SIZE = 100

Classifier = Callable[[Endpoint, int], "type[ApiError] | None"]

# Errors raised before a single byte of the request left this machine: safe to repeat for any call.
_NOT_SENT = (httpx.ConnectError, httpx.ConnectTimeout, httpx.PoolTimeout, httpx.UnsupportedProtocol)


def _utc(value: datetime) -> str:
    if value.tzinfo is None:
        value = value.replace(tzinfo=UTC)
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


class MyInvoisClient:
    """Calls MyInvois for one ERP system (client id), optionally acting for one taxpayer."""

    def __init__(
        self,
        api_base_url: str,
        identity_base_url: str,
        credentials: Credentials,
        *,
        http: httpx.Client | None = None,
        token_provider: TokenProvider | None = None,
        rate_policy: RatePolicy | None = None,
        retry_settings: RetrySettings | None = None,
        listeners: Iterable[Listener] = (),
        token_cache: TokenCache | None = None,
        classify: Classifier = error_class_for_status,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.api_base_url = api_base_url.rstrip("/")
        self.credentials = credentials
        self.retry_settings = retry_settings or RetrySettings()
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=self.retry_settings.timeout())
        self._own_rate_policy = rate_policy is None
        self.rate_policy = rate_policy or RatePolicy()
        self.listeners = tuple(listeners)
        self.classify = classify
        self._sleep = sleep
        self.tokens = token_provider or TokenProvider(
            identity_base_url,
            credentials,
            http=self._http,
            cache=token_cache,
            retry_settings=self.retry_settings,
            rate_policy=self.rate_policy,
            listeners=self.listeners,
        )

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        if self._own_http:
            self._http.close()
        if self._own_rate_policy:
            self.rate_policy.close()

    def __enter__(self) -> MyInvoisClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- public API --------------------------------------------------------------------------

    def login(self) -> None:
        """Make sure a valid token is cached (logs in only if none is). Raises AuthenticationFailed."""
        self.rate_policy.check_backend(Endpoint.login)
        self.tokens.token()

    def submit(self, entries: list[dict[str, Any]]) -> SubmitResult:
        """Submit up to 100 prepared documents (``format``, ``document``, ``documentHash``, ``codeNumber``).

        Raises ``SubmitOutcomeUnknown`` (reconcile, never resend blindly), ``DuplicateSubmission``,
        ``BatchRefused``, ``RateLimited``, ``AuthenticationFailed``.
        """
        body = self._submission_body(entries)
        response = self._call(Endpoint.submit, content=body)
        try:
            return SubmitResult.parse(response.json())
        except (ValueError, TypeError, AttributeError):
            # 2xx: LHDN took the submission, but we cannot tell its id.
            raise SubmitOutcomeUnknown(
                f"MyInvois accepted the submission (HTTP {response.status_code}) but its answer could not be read; "
                "reconcile with Search Documents before sending these documents again",
                endpoint=Endpoint.submit,
                status=response.status_code,
                correlation_id=response.headers.get("correlationId"),
            ) from None

    def get_submission(self, uid: str, page_no: int = 1, page_size: int = MAX_PAGE_SIZE) -> SubmissionPage:
        """One page of a submission's status (poll every 3–5 s at most, per LHDN)."""
        page_size = max(1, min(MAX_PAGE_SIZE, page_size))
        response = self._call(
            Endpoint.get_submission, path_args={"uid": uid}, params={"pageNo": page_no, "pageSize": page_size}
        )
        return SubmissionPage.parse(self._json(Endpoint.get_submission, response), page_no=page_no, page_size=page_size)

    def get_submission_all(self, uid: str, page_size: int = MAX_PAGE_SIZE) -> Submission:
        """Every page of a submission (each page one rate-limited call)."""
        first = self.get_submission(uid, 1, page_size)
        documents = list(first.documents)
        page = first
        while page.documents and len(documents) < first.document_count and page.page_no < first.total_pages:
            page = self.get_submission(uid, page.page_no + 1, page_size)
            documents.extend(page.documents)
        return Submission(
            submission_uid=first.submission_uid,
            document_count=first.document_count,
            date_time_received=first.date_time_received,
            overall_status=page.overall_status,
            documents=documents,
        )

    def get_document_details(self, uuid: str) -> DocumentDetails:
        """A document's summary and validation results (for the errors of Invalid documents)."""
        response = self._call(Endpoint.get_document_details, path_args={"uuid": uuid})
        return DocumentDetails.parse(self._json(Endpoint.get_document_details, response))

    def get_document_raw(self, uuid: str) -> RawDocument:
        """A document as submitted, with its metadata (not available for Invalid documents)."""
        response = self._call(Endpoint.get_document, path_args={"uuid": uuid})
        return RawDocument.parse(self._json(Endpoint.get_document, response))

    def search_documents(
        self,
        submission_date_from: datetime,
        submission_date_to: datetime,
        *,
        page_no: int = 1,
        page_size: int = MAX_PAGE_SIZE,
        status: str | None = None,
        document_type: str | None = None,
        invoice_direction: str | None = None,
        search_query: str | None = None,
    ) -> SearchPage:
        """One page of Search Documents (range at most 31 days; 12 calls per minute)."""
        params: dict[str, Any] = {
            "submissionDateFrom": _utc(submission_date_from),
            "submissionDateTo": _utc(submission_date_to),
            "pageNo": page_no,
            "pageSize": max(1, min(MAX_PAGE_SIZE, page_size)),
        }
        for name, value in (
            ("status", status),
            ("documentType", document_type),
            ("invoiceDirection", invoice_direction),
            ("searchQuery", search_query),
        ):
            if value is not None:
                params[name] = value
        response = self._call(Endpoint.search, params=params)
        return SearchPage.parse(self._json(Endpoint.search, response), page_no=page_no)

    def iter_search_documents(
        self, submission_date_from: datetime, submission_date_to: datetime, **filters: Any
    ) -> Iterator[SearchPage]:
        """Every page of a search, same filters on each page (as LHDN requires)."""
        filters.pop("page_no", None)
        page_no = 1
        while True:
            page = self.search_documents(submission_date_from, submission_date_to, page_no=page_no, **filters)
            yield page
            if not page.documents or page_no >= page.total_pages:
                return
            page_no += 1

    def get_document_types(self) -> list[DocumentType]:
        """Every e-invoice document type with LHDN's id for it (Platform API)."""
        response = self._call(Endpoint.document_types)
        return DocumentType.parse_all(self._json(Endpoint.document_types, response))

    def get_document_type(self, type_id: int) -> dict[str, Any]:
        """One document type with its ``workflowParameters`` (read them with
        :func:`~connector_core.api.responses.workflow_hours`)."""
        response = self._call(Endpoint.document_type, path_args={"id": str(type_id)})
        return self._json(Endpoint.document_type, response)

    def cancel_document(self, uuid: str, reason: str) -> StateChange:
        """Cancel a Valid document we issued (within 72 h of validation)."""
        return self._change_state(Endpoint.cancel, uuid, "cancelled", reason)

    def reject_document(self, uuid: str, reason: str) -> StateChange:
        """Ask the issuer to cancel a document we received (within 72 h, once)."""
        return self._change_state(Endpoint.reject, uuid, "rejected", reason)

    def validate_tin(self, tin: str, id_type: str, id_value: str) -> bool:
        """Whether LHDN knows this TIN with this ID (BRN, NRIC, PASSPORT, ARMY). Cache the answer."""
        try:
            self._call(Endpoint.validate_tin, path_args={"tin": tin}, params={"idType": id_type, "idValue": id_value})
        except NotFound:
            return False
        return True

    # -- internals ---------------------------------------------------------------------------

    def _change_state(self, endpoint: Endpoint, uuid: str, status: str, reason: str) -> StateChange:
        reason = reason.strip()
        if not reason or len(reason) > 300:
            raise RequestRefused(
                f"{endpoint.value} of document {uuid} needs a reason of 1 to 300 characters", endpoint=endpoint
            )
        response = self._call(endpoint, path_args={"uuid": uuid}, json_body={"status": status, "reason": reason})
        return StateChange.parse(self._json(endpoint, response))

    @staticmethod
    def _json(endpoint: Endpoint, response: httpx.Response) -> dict[str, Any]:
        """The JSON object of a successful answer; an unreadable one is a transient server fault."""
        try:
            body = response.json()
        except ValueError:
            body = None
        if not isinstance(body, dict):
            raise RetriableError(
                f"MyInvois {endpoint.value} answered HTTP {response.status_code} without a readable JSON object; "
                "try again later",
                endpoint=endpoint,
                status=response.status_code,
                correlation_id=response.headers.get("correlationId"),
            )
        return body

    @staticmethod
    def _submission_body(entries: list[dict[str, Any]]) -> bytes:
        if not entries:
            raise BatchRefused("a submission needs at least one document", endpoint=Endpoint.submit, code="Empty")
        if len(entries) > MAX_DOCUMENTS_PER_SUBMISSION:
            raise BatchRefused(
                f"a submission holds at most {MAX_DOCUMENTS_PER_SUBMISSION} documents, this one has {len(entries)}; "
                "split the batch",
                endpoint=Endpoint.submit,
                code="MaximumSizeExceeded",
            )
        for entry in entries:
            missing = [k for k in ("format", "document", "documentHash", "codeNumber") if not entry.get(k)]
            if missing:
                raise BatchRefused(
                    f"document {entry.get('codeNumber', '?')} lacks {', '.join(missing)} in the submission entry",
                    endpoint=Endpoint.submit,
                    code="BadStructure",
                )
            # The base64 text is 4/3 of the document; LHDN's limit is on the document itself.
            if len(entry["document"]) * 3 // 4 > MAX_DOCUMENT_BYTES:
                raise BatchRefused(
                    f"document {entry['codeNumber']} is larger than {MAX_DOCUMENT_BYTES // 1024} KB; split its lines "
                    "over several invoices",
                    endpoint=Endpoint.submit,
                    code="MaximumSizeExceeded",
                )
        # Compact and deterministic: LHDN detects duplicates by hashing the whole payload. orjson
        # writes the same bytes as json.dumps(separators=(",", ":"), ensure_ascii=False) for these
        # string entries, at a fraction of the CPU (it was ~1.3% of the connector's).
        body = orjson.dumps({"documents": entries})
        if len(body) > MAX_SUBMISSION_BYTES:
            raise BatchRefused(
                f"the submission is {len(body) // 1024} KB, above LHDN's 5 MB; send fewer documents per batch",
                endpoint=Endpoint.submit,
                code="MaximumSizeExceeded",
            )
        return body

    def _call(
        self,
        endpoint: Endpoint,
        *,
        path_args: dict[str, str] | None = None,
        params: dict[str, Any] | None = None,
        json_body: Any = None,
        content: bytes | None = None,
    ) -> httpx.Response:
        route = ROUTES[endpoint]
        path = route.path.format(**{k: _quote(v) for k, v in (path_args or {}).items()})
        url = self.api_base_url + path
        if json_body is not None:
            content = json.dumps(json_body, separators=(",", ":")).encode("utf-8")
        is_read = route.method == "GET"
        settings = self.retry_settings
        client_id = self.credentials.client_id

        attempt = 0
        failures = 0  # transient failures so far (drives back-off and the attempt limit)
        refreshed_token = False  # we dropped a token and logged in again for this call
        stale_repeats = 0  # 401s with a token another thread had already replaced
        rate_limited = 0
        while True:
            attempt += 1
            # A backend that has failed is asked before the token is: a login refused only because
            # our own backend is down would count against the token provider's login back-off and
            # hold up logins after the backend is back.
            self.rate_policy.check_backend(endpoint)
            try:
                token = self.tokens.token()
            except RateBackendUnavailable:
                raise
            except RetriableError:
                # Login is idempotent and throttled by the provider's own back-off.
                failures += 1
                if is_read and failures < settings.read_max_attempts:
                    self._sleep(backoff_delay(failures, settings))
                    continue
                raise
            slot = self.rate_policy.take(client_id, endpoint)  # raises RateBackendUnavailable before anything is sent
            headers = {
                "Accept": "application/json",
                "Accept-Language": "en",
                "Authorization": f"Bearer {token}",
            }
            if content is not None:
                headers["Content-Type"] = "application/json"
            started = time.monotonic()
            try:
                response = self._send(slot, route.method, url, params=params, content=content, headers=headers)
            except httpx.TransportError as exc:
                duration = time.monotonic() - started
                sent = not isinstance(exc, _NOT_SENT)
                error = self._transport_error(endpoint, exc, sent)
                notify(self.listeners, ApiCall(endpoint, route.method, None, duration, attempt, type(error).__name__))
                # DEBUG: the error goes to the caller, which tells the operator once per outage
                # (pipeline.availability); a line per attempt drowned the log while LHDN was down.
                log.debug("MyInvois %s attempt %d: %s", endpoint.value, attempt, type(exc).__name__)
                if isinstance(error, RetriableError) and (is_read or not sent):
                    failures += 1
                    if failures < settings.read_max_attempts:
                        self._sleep(backoff_delay(failures, settings))
                        continue
                raise error from None

            duration = time.monotonic() - started
            status = response.status_code
            correlation_id = response.headers.get("correlationId")
            retry_after = parse_retry_after(response.headers.get("Retry-After"))
            error_class = self.classify(endpoint, status)
            repeat_401 = False
            if status == 401:
                # A 401 means "not processed", so repeating is safe for every call. Repeat once
                # after our own fresh login; a 401 that only shows our token was stale (another
                # thread had already logged in again) does not use up that one repeat.
                if not self.tokens.invalidate(token) and stale_repeats < settings.stale_token_max_repeats:
                    stale_repeats += 1
                    repeat_401 = True
                elif not refreshed_token:
                    refreshed_token = True
                    repeat_401 = True
                if repeat_401:
                    error_class = None
            notify(
                self.listeners,
                ApiCall(
                    endpoint,
                    route.method,
                    status,
                    duration,
                    attempt,
                    "Unauthorized"
                    if status == 401 and error_class is None
                    else (error_class.__name__ if error_class else None),
                    retry_after,
                    correlation_id,
                ),
            )
            log.log(
                logging.DEBUG if status < 400 else logging.INFO,
                "MyInvois %s %s: HTTP %s in %.2f s (attempt %d, correlationId %s)",
                route.method,
                endpoint.value,
                status,
                duration,
                attempt,
                correlation_id,
            )

            if repeat_401:
                continue
            if status == 429:
                wait = rate_limited_delay(retry_after, settings)
                self.rate_policy.record_retry_after(client_id, endpoint, wait)
                if rate_limited < settings.rate_limited_max_retries and should_wait_for(wait, settings):
                    rate_limited += 1
                    continue  # acquire() sleeps through the cool-down we just recorded
            if error_class is None:
                return response

            error = self._http_error(endpoint, error_class, response, retry_after, correlation_id)
            if isinstance(error, RetriableError) and is_read:
                failures += 1
                if failures < settings.read_max_attempts:
                    self._sleep(backoff_delay(failures, settings))
                    continue
            raise error

    def _send(self, slot: Slot, method: str, url: str, **request: Any) -> httpx.Response:
        watch = SendWatch()
        try:
            return self._http.request(method, url, extensions=watch.extensions, **request)
        finally:
            # MyInvois counts the call when the request arrives: the slot is counted from when it
            # was completely sent (or, never seen sent, from its failure), not from the grant nor
            # the answer (see api/ratelimit.py).
            self.rate_policy.release(slot, sent_seconds_ago=watch.sent_seconds_ago())

    def _transport_error(self, endpoint: Endpoint, exc: httpx.TransportError, sent: bool) -> ApiError:
        kind = type(exc).__name__
        if endpoint is Endpoint.submit and sent:
            return SubmitOutcomeUnknown(
                f"the submission may have reached MyInvois but no answer came back ({kind}); do not resend it: "
                "reconcile with Search Documents first",
                endpoint=endpoint,
            )
        where = "could not connect to" if not sent else "no answer from"
        extra = ""
        if endpoint in (Endpoint.cancel, Endpoint.reject) and sent:
            extra = "; the change may have been applied: read the document's status before repeating it"
        return RetriableError(
            f"{where} MyInvois at {self.api_base_url} for {endpoint.value} ({kind}){extra}", endpoint=endpoint
        )

    def _http_error(
        self,
        endpoint: Endpoint,
        error_class: type[ApiError],
        response: httpx.Response,
        retry_after: float | None,
        correlation_id: str | None,
    ) -> ApiError:
        try:
            detail: ErrorDetail | None = parse_error_body(response.json())
        except ValueError:
            detail = None
        status = response.status_code
        said = f": {detail.summary()}" if detail else ""
        common: dict[str, Any] = {
            "endpoint": endpoint,
            "status": status,
            "code": detail.code if detail else None,
            "correlation_id": correlation_id,
            "detail": detail,
        }
        what = f"MyInvois {endpoint.value} answered HTTP {status}{said}"
        if error_class is DuplicateSubmission:
            return DuplicateSubmission(
                f"{what}; LHDN already received this exact submission in the last 10 minutes — "
                "it is not a failure: look up the earlier submission instead of sending it again",
                retry_after=retry_after,
                **common,
            )
        if error_class is BatchRefused:
            hint = {
                403: "the authenticated taxpayer may not submit these documents (supplier TIN must match the login "
                "or the on-behalf-of TIN, and an intermediary needs the taxpayer's permission)",
            }.get(status, "fix the batch before sending it again; unchanged it will be refused again")
            return BatchRefused(f"{what}; {hint}", details=detail.details if detail else (), **common)
        if error_class is SubmitOutcomeUnknown:
            return SubmitOutcomeUnknown(
                f"{what}; the submission may have been stored all the same — reconcile with Search Documents "
                "before sending it again",
                **common,
            )
        if error_class is RateLimited:
            return RateLimited(
                f"{what}; LHDN asks to wait {retry_after if retry_after is not None else 'a while'} s — "
                "lower the rate limit settings if this repeats",
                retry_after=retry_after,
                **common,
            )
        if error_class is AuthenticationFailed:
            return AuthenticationFailed(
                f"{what} even with a fresh token; check that client id {self.credentials.client_id} may use this API"
                + (f" for taxpayer {self.credentials.on_behalf_of}" if self.credentials.on_behalf_of else ""),
                **common,
            )
        if error_class is NotFound:
            return NotFound(f"{what}; it does not exist or this taxpayer may not see it", **common)
        if error_class is RetriableError:
            return RetriableError(f"{what}; LHDN had a transient failure, try again later", **common)
        return error_class(f"{what}; the request is not acceptable as sent", **common)


def _quote(value: str) -> str:
    # Ids come from LHDN or the ERP; never let one smuggle a "/" or "?" into the path.
    return quote(str(value), safe=":")
