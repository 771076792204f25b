"""The MyInvois HTTP client: login and token cache, rate policies, retries, errors, responses.

Knows nothing of the ledger, the plugins or the pipeline. Start with :class:`MyInvoisClient`;
the error classes say what the caller should do next (see :mod:`connector_core.api.errors`).
"""

from .client import MyInvoisClient
from .endpoints import PRODUCTION_LIMITS, ROUTES, SANDBOX_LIMITS, Endpoint
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
from .events import ApiCall, Listener
from .ratelimit import RateLimitSettings, RatePolicy
from .responses import (
    AcceptedDocument,
    DocumentDetails,
    DocumentStatus,
    DocumentSummary,
    DocumentType,
    ErrorDetail,
    RawDocument,
    RejectedDocument,
    SearchPage,
    StateChange,
    Submission,
    SubmissionPage,
    SubmissionStatus,
    SubmitResult,
    ValidationError,
    ValidationStep,
    workflow_hours,
)
from .retry import RetrySettings
from .token import CachedToken, Credentials, TokenCache, TokenKey, TokenProvider

__all__ = [
    "PRODUCTION_LIMITS",
    "ROUTES",
    "SANDBOX_LIMITS",
    "AcceptedDocument",
    "ApiCall",
    "ApiError",
    "AuthenticationFailed",
    "BatchRefused",
    "CachedToken",
    "Credentials",
    "DocumentDetails",
    "DocumentStatus",
    "DocumentSummary",
    "DocumentType",
    "DuplicateSubmission",
    "Endpoint",
    "ErrorDetail",
    "Listener",
    "MyInvoisClient",
    "NotFound",
    "RateBackendUnavailable",
    "RateLimitSettings",
    "RateLimited",
    "RatePolicy",
    "RawDocument",
    "RejectedDocument",
    "RequestRefused",
    "RetriableError",
    "RetrySettings",
    "SearchPage",
    "StateChange",
    "Submission",
    "SubmissionPage",
    "SubmissionStatus",
    "SubmitOutcomeUnknown",
    "SubmitResult",
    "TokenCache",
    "TokenKey",
    "TokenProvider",
    "ValidationError",
    "ValidationStep",
    "error_class_for_status",
    "workflow_hours",
]
