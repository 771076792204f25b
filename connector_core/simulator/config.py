"""Everything the simulator can be told: accounts, delays, limits, faults.

One pydantic model, loadable from TOML, so the command line, the tests and the benchmarks
configure the simulator the same way. Unknown keys are refused: a misspelt fault name must
not silently turn into "no fault".
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

#: Every endpoint the simulator names in its statistics, rate limits and fault settings.
ENDPOINTS = (
    "login",
    "submit",
    "get_submission",
    "get_document",
    "get_document_details",
    "cancel",
    "reject",
    "recent",
    "search",
    "validate_tin",
    "search_tin",
    "qr",
    "document_types",
)

#: LHDN's published requests-per-minute per client id (integration-practices page). The
#: Platform API's document types have no published figure, so they are not limited.
PRODUCTION_LIMITS_PER_MINUTE: dict[str, int] = {
    "login": 12,
    "submit": 100,
    "get_submission": 300,
    "get_document": 60,
    "get_document_details": 125,
    "cancel": 12,
    "reject": 12,
    "recent": 12,
    "search": 12,
    "validate_tin": 60,
    "search_tin": 60,
    "qr": 60,
}

#: LHDN says sandbox limits are "lower" but publishes no figures; half of production
#: (rounded down) keeps every ratio and is what the sandbox profile assumes.
SANDBOX_LIMITS_PER_MINUTE: dict[str, int] = {k: v // 2 for k, v in PRODUCTION_LIMITS_PER_MINUTE.items()}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TaxpayerAccount(_Strict):
    """An ERP system registered for one taxpayer: its credentials and who it is."""

    client_id: str
    client_secret: str
    tin: str
    brn: str = ""
    name: str


class IntermediaryAccount(_Strict):
    """An intermediary's ERP: its own credentials plus the taxpayers it may act for."""

    client_id: str
    client_secret: str
    name: str
    tin: str = ""
    brn: str = ""
    acts_for: list[str] = Field(default_factory=list, description="TINs this intermediary may act for")


def _default_taxpayers() -> list[TaxpayerAccount]:
    return [
        TaxpayerAccount(
            client_id="demo-taxpayer",
            client_secret="demo-taxpayer-secret",
            tin="C25845632020",
            brn="202001234567",
            name="Syarikat Demo Sdn. Bhd.",
        ),
        TaxpayerAccount(
            client_id="demo-taxpayer-2",
            client_secret="demo-taxpayer-2-secret",
            tin="C10000000010",
            brn="201901000001",
            name="Kedai Contoh Enterprise",
        ),
        TaxpayerAccount(
            client_id="demo-buyer",
            client_secret="demo-buyer-secret",
            tin="C58101234560",
            brn="200501012345",
            name="Pembeli Demo Sdn. Bhd.",
        ),
    ]


def _default_intermediaries() -> list[IntermediaryAccount]:
    return [
        IntermediaryAccount(
            client_id="demo-intermediary",
            client_secret="demo-intermediary-secret",
            name="Perantara Demo Sdn. Bhd.",
            tin="C20000000020",
            brn="201801000002",
            acts_for=["C25845632020", "C10000000010"],
        )
    ]


#: A fault rate is either one probability for every endpoint or a per-endpoint mapping
#: (endpoints not named get 0).
FaultRate = float | dict[str, float]


class LatencySpec(_Strict):
    fixed_ms: float = Field(0.0, ge=0)
    jitter_ms: float = Field(0.0, ge=0, description="uniform random extra, 0..jitter_ms")


class FaultsConfig(_Strict):
    """Injected misbehaviour. All random draws come from random.Random(seed), so a run repeats."""

    latency_ms: float = Field(0.0, ge=0, description="fixed latency added to every API call")
    latency_jitter_ms: float = Field(0.0, ge=0, description="uniform random latency 0..jitter on every API call")
    latency_by_endpoint: dict[str, LatencySpec] = Field(
        default_factory=dict, description="per-endpoint latency, replacing the global figures for that endpoint"
    )
    error_rate: FaultRate = Field(0.0, description="share of calls answered 500/503 without being processed")
    spurious_429_rate: FaultRate = Field(0.0, description="share of calls answered 429 although under the limit")
    lost_response_rate: FaultRate = Field(
        0.0, description="share of calls processed (state committed) whose response never arrives"
    )
    revoke_rate: FaultRate = Field(0.0, description="share of authenticated calls whose token is revoked (401)")
    slow_validation_rate: float = Field(0.0, ge=0, le=1, description="share of submissions validated slowly")
    slow_validation_seconds: float = Field(30.0, ge=0, description="extra validation time of a slow submission")
    search_lag_seconds: float = Field(
        0.0,
        ge=0,
        description=(
            "documents appear in Search Documents and Recent Documents only this many seconds after they "
            "were received (MyInvois indexes asynchronously); Get Submission and Get Document are not delayed"
        ),
    )

    @field_validator("error_rate", "spurious_429_rate", "lost_response_rate", "revoke_rate")
    @classmethod
    def _rates_are_probabilities(cls, value: FaultRate) -> FaultRate:
        rates = value.values() if isinstance(value, dict) else [value]
        for rate in rates:
            if not 0.0 <= rate <= 1.0:
                raise ValueError(f"a fault rate is a probability between 0 and 1, got {rate}")
        if isinstance(value, dict):
            unknown = set(value) - set(ENDPOINTS)
            if unknown:
                raise ValueError(f"unknown endpoint(s) {sorted(unknown)}; known: {', '.join(ENDPOINTS)}")
        return value

    @field_validator("latency_by_endpoint")
    @classmethod
    def _known_endpoints(cls, value: dict[str, LatencySpec]) -> dict[str, LatencySpec]:
        unknown = set(value) - set(ENDPOINTS)
        if unknown:
            raise ValueError(f"unknown endpoint(s) {sorted(unknown)}; known: {', '.join(ENDPOINTS)}")
        return value


class RateLimitConfig(_Strict):
    profile: Literal["production", "sandbox", "off"] = "production"
    window_seconds: float = Field(60.0, gt=0, description="length of a rate window; limits are per window")
    overrides: dict[str, int | None] = Field(
        default_factory=dict, description="per-endpoint limit replacing the profile's (null = unlimited)"
    )

    def limits(self) -> dict[str, int | None]:
        if self.profile == "off":
            base: dict[str, int | None] = dict.fromkeys(ENDPOINTS)
        elif self.profile == "sandbox":
            base = dict(SANDBOX_LIMITS_PER_MINUTE)
        else:
            base = dict(PRODUCTION_LIMITS_PER_MINUTE)
        base.update(self.overrides)
        return base


class ValidationConfig(_Strict):
    delay_seconds: float = Field(2.0, ge=0, description="time before the first document of a submission is decided")
    per_document_seconds: float = Field(0.05, ge=0, description="extra time per document, in submission order")
    max_issue_age_hours: float = Field(72.0, gt=0, description="older issue date-times are refused")
    future_tolerance_seconds: float = Field(
        60.0, ge=0, description="clock skew allowed before an issue date-time counts as in the future"
    )
    duplicate_document_window_seconds: float = Field(2 * 3600.0, ge=0)


class SimulatorConfig(_Strict):
    """The whole simulator configuration; the defaults are the documented demo set-up."""

    token_lifetime_seconds: int = Field(3600, gt=0)
    overall_status_style: Literal["documented", "title", "pascal"] = Field(
        "documented",
        description=(
            "spelling of overallStatus: documented = 'in progress'/'valid'/'partially valid'/'invalid'; "
            "title = 'In Progress'/'Valid'/...; pascal = 'InProgress'/'Valid'/'PartiallyValid'/'Invalid'"
        ),
    )
    submission_uid_key: Literal["submissionUid", "submissionUID"] = Field(
        "submissionUid",
        description="key of the submission id in the Submit Documents answer: as observed on the wire, or as documented",
    )
    search_tin_spelling: Literal["TIN", "Tin"] = Field(
        "TIN", description="Search Documents items: supplierTIN/buyerTIN as documented, or supplierTin/buyerTin"
    )
    taxpayers: list[TaxpayerAccount] = Field(default_factory=_default_taxpayers)
    intermediaries: list[IntermediaryAccount] = Field(default_factory=_default_intermediaries)
    seed: int = 0
    faults: FaultsConfig = Field(default_factory=FaultsConfig)
    rate_limits: RateLimitConfig = Field(default_factory=RateLimitConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)
    max_documents_per_submission: int = 100
    max_submission_bytes: int = 5 * 1024 * 1024
    max_document_bytes: int = 300 * 1024
    duplicate_submission_window_seconds: float = Field(600.0, ge=0)
    cancellation_window_hours: float = Field(
        72.0, gt=0, description="hours after validation the issuer may cancel (workflowParameters cancellationDuration)"
    )
    rejection_window_hours: float = Field(
        72.0, gt=0, description="hours after validation the buyer may request rejection (rejectionDuration)"
    )
    lifecycle_window_seconds: float | None = Field(
        None,
        gt=0,
        description=(
            "when set, both windows last this many seconds instead of the hours above: compressed time, "
            "so a test or the demo sees the whole 72-hour lifecycle in seconds or minutes"
        ),
    )
    accept_unknown_tins: bool = Field(
        True, description="Validate Taxpayer's TIN answers 200 for well-formed TINs that are not configured"
    )
    portal_base_url: str = "https://preprod.myinvois.hasil.gov.my"
    keep_raw_documents: bool = Field(True, description="store submitted documents (compressed) for Get Document")

    def cancellation_window_seconds(self) -> float:
        if self.lifecycle_window_seconds is not None:
            return self.lifecycle_window_seconds
        return self.cancellation_window_hours * 3600

    def rejection_window_seconds(self) -> float:
        if self.lifecycle_window_seconds is not None:
            return self.lifecycle_window_seconds
        return self.rejection_window_hours * 3600


class LifecycleWindows(_Strict):
    """What ``POST /_simulator/windows`` may change at run time; fields left out stay as they are."""

    cancellation_window_hours: float | None = Field(None, gt=0)
    rejection_window_hours: float | None = Field(None, gt=0)
    # Explicit null clears the compression and brings the hour figures back into force.
    lifecycle_window_seconds: float | None = Field(None, gt=0)
