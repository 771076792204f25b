"""What each refusal of a cancel tells the clerk: MyInvois's error bodies, as the simulator sends
them, read by the API client's parser and turned into advice (connector_core.pipeline.cancel)."""

from __future__ import annotations

from connector_core.api.endpoints import Endpoint
from connector_core.api.errors import NotFound, RateLimited, RequestRefused, RetriableError
from connector_core.api.responses import parse_error_body
from connector_core.pipeline.cancel import refusal_of


def refused(status: int, code: str, message: str, details: list[dict] | None = None) -> RequestRefused:
    body = {"error": {"code": code, "errorCode": code, "message": message, "target": "status", "details": details}}
    detail = parse_error_body(body)
    return RequestRefused(message, endpoint=Endpoint.cancel, status=status, code=code, detail=detail)


def no_numbers(uuids):
    return {}


def test_operation_period_over_says_to_issue_a_credit_note():
    refusal = refusal_of(
        refused(400, "OperationPeriodOver", "The 72-hour period to cancel this document is over"), "p", no_numbers
    )
    assert refusal is not None and refusal.code == "OperationPeriodOver"
    assert refusal.advice == "the 72-hour window to cancel it is over: issue a credit note instead"


def test_incorrect_state_says_the_state_myinvois_reports():
    def state(name: str) -> str:
        error = refused(
            400,
            "IncorrectState",
            f"The document is {name} and cannot be cancelled",
            [{"code": "IncorrectState", "message": f"Document status is {name}", "target": "status"}],
        )
        refusal = refusal_of(error, "p", no_numbers)
        assert refusal is not None
        return refusal.advice

    assert "already cancelled" in state("Cancelled")
    assert "invalid" in state("Invalid") and "needs no cancellation" in state("Invalid")
    assert "submitted" in state("Submitted")


def test_active_referencing_documents_names_the_notes_by_our_number_when_known():
    error = refused(
        400,
        "ActiveReferencingDocuments",
        "Documents N1, N2 reference this document; cancel them first",
        [
            {"code": "ActiveReferencingDocuments", "message": "Document N1 references this document", "target": "N1"},
            {"code": "ActiveReferencingDocuments", "message": "Document N2 references this document", "target": "N2"},
        ],
    )
    refusal = refusal_of(error, "p", lambda uuids: {"N1": "CN-0001"} if "N1" in uuids else {})
    assert refusal is not None
    assert refusal.notes == {"N1": "CN-0001", "N2": None}
    assert "CN-0001 (uuid N1)" in refusal.advice and "uuid N2" in refusal.advice
    assert "cancel those notes first" in refusal.advice


def test_forbidden_says_the_profile_is_not_the_issuer():
    refusal = refusal_of(refused(403, "Forbidden", "The caller is not the issuer"), "branch-2", no_numbers)
    assert refusal is not None and refusal.code == "Forbidden"
    assert "profile 'branch-2' are not those of the document's issuer" in refusal.advice


def test_not_found_and_other_refusals_carry_what_myinvois_said():
    refusal = refusal_of(NotFound("no such document", endpoint=Endpoint.cancel, status=404), "p", no_numbers)
    assert refusal is not None and refusal.code == "NotFound"
    other = refusal_of(refused(400, "BadArgument", "reason is required"), "p", no_numbers)
    assert other is not None and "reason is required" in other.advice


def test_no_answer_and_throttling_are_not_refusals():
    assert refusal_of(RetriableError("timeout", endpoint=Endpoint.cancel), "p", no_numbers) is None
    assert refusal_of(RateLimited("429", endpoint=Endpoint.cancel, status=429), "p", no_numbers) is None
