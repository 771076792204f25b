"""Errors of the MyInvois client, each named for the decision it asks of the caller.

============================  ==================================================================
Error                         What the caller does
============================  ==================================================================
``RetriableError``            Nothing was changed on the server (or the call is a read): try the
                              same call again later.
``RateBackendUnavailable``    A ``RetriableError``: the shared rate-limit backend (Redis,
                              PostgreSQL, SQLite) failed, so nothing was sent. Record the call as
                              not sent, pause sending, tell the operator; it recovers by itself.
``SubmitOutcomeUnknown``      The submission may have reached LHDN. Do NOT resubmit blindly:
                              reconcile first (search the documents), then decide.
``DuplicateSubmission``       LHDN already has this exact payload (422): not a failure; find the
                              earlier submission instead of sending it again.
``BatchRefused``              The submission envelope was refused (400/403): fix the batch; sending
                              it unchanged will fail the same way.
``AuthenticationFailed``      Login refused or impossible: fix the client id/secret/on-behalf-of
                              setting. Retrying with the same credentials does not help.
``RateLimited``               LHDN throttled us for longer than the client waits by itself: come back
                              after ``retry_after`` seconds.
``NotFound``                  The object does not exist (or is not visible to this taxpayer).
``RequestRefused``            Any other 4xx: the request is wrong as sent (bad argument, wrong state,
                              no permission); do not repeat it unchanged.
============================  ==================================================================

Messages never contain a token or a secret; they carry the endpoint, the HTTP status, LHDN's
error code and the ``correlationId`` to quote to LHDN support.

:func:`error_class_for_status` is the single place mapping an HTTP status to one of these
classes; pass another function to ``MyInvoisClient(classify=...)`` to change the mapping.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from .endpoints import Endpoint

if TYPE_CHECKING:
    from .responses import ErrorDetail


class ApiError(Exception):
    """Base class of every error raised by the MyInvois client."""

    def __init__(
        self,
        message: str,
        *,
        endpoint: Endpoint | None = None,
        status: int | None = None,
        code: str | None = None,
        correlation_id: str | None = None,
        detail: ErrorDetail | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.endpoint = endpoint
        self.status = status
        self.code = code
        self.correlation_id = correlation_id
        self.detail = detail

    def __str__(self) -> str:
        parts = [self.message]
        if self.correlation_id:
            parts.append(f"(LHDN correlationId {self.correlation_id})")
        return " ".join(parts)


class RetriableError(ApiError):
    """A transient failure (timeout, connection error, 5xx on a read): the same call may be repeated."""


class RateBackendUnavailable(RetriableError):
    """The rate-limit backend failed before the request was sent: the call was certainly not made.

    Raised for every endpoint, login included, instead of the driver's own error (which a caller
    could not tell from a failure after sending). ``backend`` is the backend's URL without
    credentials. The rate policy tries the backend again on each call and carries on once it
    answers; until then sending cannot be paced, so it must not go on.
    """

    def __init__(self, message: str, *, backend: str | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.backend = backend


class SubmitOutcomeUnknown(ApiError):
    """The submission may or may not have reached LHDN. Never resubmit without reconciling first."""


class DuplicateSubmission(ApiError):
    """422: LHDN received this exact payload within the last 10 minutes. The earlier one stands."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class BatchRefused(ApiError):
    """400/403 on a submission envelope: the whole batch is refused; fix it before sending again."""

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        code: str | None = None,
        details: tuple[ErrorDetail, ...] = (),
        **kwargs: Any,
    ) -> None:
        super().__init__(message, status=status, code=code, **kwargs)
        self.details = details


class AuthenticationFailed(ApiError):
    """Login refused, or refused locally (placeholder credentials), or the token keeps being rejected."""


class RateLimited(ApiError):
    """429 with a wait longer than the client sleeps through by itself."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class NotFound(ApiError):
    """404: the object does not exist, or this taxpayer may not see it."""


class RequestRefused(ApiError):
    """Another 4xx: the request is wrong as sent (argument, state or permission)."""


def error_class_for_status(endpoint: Endpoint, status: int) -> type[ApiError] | None:
    """Map an HTTP status of ``endpoint`` to the error class to raise; ``None`` for success.

    401 is listed for completeness: the client first refreshes its token and repeats the call
    once, and only a second 401 reaches this mapping.
    """
    if status < 400:
        return None
    if status == 429:
        return RateLimited
    if endpoint is Endpoint.login:
        # Login is idempotent: a server error may be retried; any 4xx means the credentials
        # (or the on-behalf-of taxpayer) were refused.
        return RetriableError if status >= 500 else AuthenticationFailed
    if status == 401:
        return AuthenticationFailed
    if endpoint is Endpoint.submit:
        if status == 422:
            return DuplicateSubmission
        if status >= 500 or status == 408:
            # The server may have stored the submission before failing: the outcome is unknown.
            return SubmitOutcomeUnknown
        return BatchRefused
    if status == 404:
        return NotFound
    if status >= 500 or status == 408:
        return RetriableError
    return RequestRefused
