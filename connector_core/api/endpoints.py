"""The MyInvois endpoints the connector calls, their routes, and LHDN's per-minute limits.

Limits are per client id and per API, in requests per minute (LHDN "Integration Practices",
rate-limit table). The sandbox has lower limits since 28 April 2025, but LHDN does not publish
them: :data:`SANDBOX_LIMITS` is *our own* conservative guess (half of production, at least one),
to be replaced if LHDN ever publishes figures.
"""

from __future__ import annotations

from enum import Enum
from typing import NamedTuple


class Endpoint(str, Enum):
    """One MyInvois API, as far as rate limits and error handling are concerned."""

    login = "login"
    submit = "submit"
    get_submission = "get_submission"
    get_document = "get_document"
    get_document_details = "get_document_details"
    cancel = "cancel"
    reject = "reject"
    recent = "recent"
    search = "search"
    validate_tin = "validate_tin"
    search_tin = "search_tin"
    qr = "qr"
    document_types = "document_types"
    document_type = "document_type"


class Route(NamedTuple):
    method: str
    #: Path template relative to the API base (the identity base for login).
    path: str


ROUTES: dict[Endpoint, Route] = {
    Endpoint.login: Route("POST", "/connect/token"),
    # No trailing slash: what every community SDK sends, and what the server accepts.
    Endpoint.submit: Route("POST", "/api/v1.0/documentsubmissions"),
    Endpoint.get_submission: Route("GET", "/api/v1.0/documentsubmissions/{uid}"),
    Endpoint.get_document: Route("GET", "/api/v1.0/documents/{uuid}/raw"),
    Endpoint.get_document_details: Route("GET", "/api/v1.0/documents/{uuid}/details"),
    # Cancel and reject share one route; the body's status tells them apart.
    Endpoint.cancel: Route("PUT", "/api/v1.0/documents/state/{uuid}/state"),
    Endpoint.reject: Route("PUT", "/api/v1.0/documents/state/{uuid}/state"),
    Endpoint.recent: Route("GET", "/api/v1.0/documents/recent"),
    Endpoint.search: Route("GET", "/api/v1.0/documents/search"),
    Endpoint.validate_tin: Route("GET", "/api/v1.0/taxpayer/validate/{tin}"),
    Endpoint.search_tin: Route("GET", "/api/v1.0/taxpayer/search/tin"),
    Endpoint.qr: Route("GET", "/api/v1.0/taxpayers/qrcodeinfo/{text}"),
    # The Platform API: Get All Document Types and Get Document Type (its workflow parameters).
    Endpoint.document_types: Route("GET", "/api/v1.0/documenttypes"),
    Endpoint.document_type: Route("GET", "/api/v1.0/documenttypes/{id}"),
}

#: LHDN's limits are per minute: the length of its counting window, in seconds.
LHDN_WINDOW_SECONDS = 60.0

#: Requests per minute per client id in production (LHDN integration practices).
PRODUCTION_LIMITS: dict[Endpoint, int] = {
    Endpoint.login: 12,
    Endpoint.submit: 100,
    Endpoint.get_submission: 300,
    Endpoint.cancel: 12,
    Endpoint.reject: 12,
    Endpoint.get_document: 60,
    Endpoint.get_document_details: 125,
    Endpoint.recent: 12,
    Endpoint.search: 12,
    Endpoint.search_tin: 60,
    # Not in the integration-practices table; the Validate TIN page itself says 60 RPM.
    Endpoint.validate_tin: 60,
    Endpoint.qr: 60,
    # LHDN publishes no figure for the Platform API's document types: our guess is the lowest
    # published one. The connector reads them about once a day (the cancellation window).
    Endpoint.document_types: 12,
    Endpoint.document_type: 12,
}

#: Our guess for the sandbox (unpublished by LHDN): half of production, never below one.
SANDBOX_LIMITS: dict[Endpoint, int] = {endpoint: max(1, limit // 2) for endpoint, limit in PRODUCTION_LIMITS.items()}

#: Minimum spacing between calls, in seconds of a 60-second window, where LHDN states one besides
#: the per-minute figure: Search Documents says "1 request every 5 seconds" per taxpayer.
MIN_SPACING_SECONDS: dict[Endpoint, float] = {Endpoint.search: 5.0}

PROFILES: dict[str, dict[Endpoint, int]] = {"production": PRODUCTION_LIMITS, "sandbox": SANDBOX_LIMITS}
