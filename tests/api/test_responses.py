"""Parsing of MyInvois answers in both the documented and the observed spellings."""

from __future__ import annotations

from decimal import Decimal

import pytest

from connector_core.api import (
    DocumentDetails,
    DocumentStatus,
    ErrorDetail,
    SearchPage,
    SubmissionPage,
    SubmissionStatus,
    SubmitResult,
    ValidationError,
)


@pytest.mark.parametrize(
    ("word", "expected"),
    [
        ("in progress", SubmissionStatus.IN_PROGRESS),
        ("InProgress", SubmissionStatus.IN_PROGRESS),
        ("IN PROGRESS", SubmissionStatus.IN_PROGRESS),
        ("partially valid", SubmissionStatus.PARTIALLY_VALID),
        ("PartiallyValid", SubmissionStatus.PARTIALLY_VALID),
        ("Valid", SubmissionStatus.VALID),
        ("valid", SubmissionStatus.VALID),
        ("invalid", SubmissionStatus.INVALID),
        ("Invalid", SubmissionStatus.INVALID),
        ("Something new", SubmissionStatus.UNKNOWN),
        (None, SubmissionStatus.UNKNOWN),
    ],
)
def test_overall_status_ignores_case_and_spaces(word, expected):
    assert SubmissionStatus.parse(word) is expected


def test_unknown_overall_status_is_not_final():
    assert not SubmissionStatus.UNKNOWN.is_final
    assert not SubmissionStatus.IN_PROGRESS.is_final
    assert SubmissionStatus.PARTIALLY_VALID.is_final


@pytest.mark.parametrize("uid_key", ["submissionUid", "submissionUID"])
def test_submit_result_reads_both_uid_spellings(uid_key):
    body = {
        uid_key: "E3BNZRC5GBKWJ19H91XBJZYJ10",
        "acceptedDocuments": [{"uuid": "NYEA8PYC59ED2WJB91XBJZYJ10", "invoiceCodeNumber": "Inv-6862160103749"}],
        "rejectedDocuments": [],
    }
    result = SubmitResult.parse(body)
    assert result.submission_uid == "E3BNZRC5GBKWJ19H91XBJZYJ10"
    [(uuid, code_number)] = result.accepted
    assert (uuid, code_number) == ("NYEA8PYC59ED2WJB91XBJZYJ10", "Inv-6862160103749")
    assert result.rejected == []


def test_submit_result_all_rejected_observed_shape():
    body = {
        "submissionUid": None,
        "acceptedDocuments": [],
        "rejectedDocuments": [
            {
                "invoiceCodeNumber": "705725225958",
                "error": {
                    "code": None,
                    "message": "Validation Error",
                    "target": "705725225958",
                    "propertyPath": None,
                    "details": [
                        {
                            "code": None,
                            "message": "Document hash is not valid.",
                            "target": "documentHash",
                            "propertyPath": None,
                            "details": None,
                        }
                    ],
                },
            }
        ],
    }
    result = SubmitResult.parse(body)
    assert result.submission_uid is None
    [(code_number, error)] = result.rejected
    assert code_number == "705725225958"
    assert error.message == "Validation Error"
    assert [d.message for d in error.leaves()] == ["Document hash is not valid."]
    assert "documentHash: Document hash is not valid." in error.summary()


def test_http_error_body_observed_shape():
    body = {
        "error": {
            "code": "ValidationError",
            "message": None,
            "target": None,
            "details": [{"code": "submission", "target": "submission", "message": "Invalid structured submission."}],
        }
    }
    detail = ErrorDetail.parse(body)
    assert detail.code == "ValidationError"
    assert detail.details[0].message == "Invalid structured submission."


def test_error_documented_shape_with_inner_errors():
    body = {
        "error": {
            "propertyName": None,
            "propertyPath": None,
            "errorCode": "Error03",
            "error": "Duplicated Submission Validator",
            "errorMS": "Pengesah Penyerahan Pendua",
            "innerError": [
                {
                    "propertyName": "document",
                    "propertyPath": "document",
                    "errorCode": "DS302",
                    "error": "This document is already submitted",
                    "errorMs": "Dokumen ini telah dihantar",
                }
            ],
        }
    }
    detail = ErrorDetail.parse(body)
    assert (detail.code, detail.message, detail.message_ms) == (
        "Error03",
        "Duplicated Submission Validator",
        "Pengesah Penyerahan Pendua",
    )
    [inner] = detail.details
    assert (inner.code, inner.property_path, inner.message_ms) == ("DS302", "document", "Dokumen ini telah dihantar")


def test_oauth_error_body():
    detail = ErrorDetail.parse({"error": "invalid_client", "error_description": "User blocked"})
    assert (detail.code, detail.message) == ("invalid_client", "User blocked")


def test_submission_page_and_summary_fields():
    body = {
        "submissionUid": "JFYDDJW42KY77HGJEYQF1D1K10",
        "documentCount": 234,
        "dateTimeReceived": "2015-02-13T14:20:10Z",
        "overallStatus": "partially valid",
        "documentSummary": [
            {
                "uuid": "F9D425P6DS7D8IU",
                "submissionUid": "JFYDDJW42KY77HGJEYQF1D1K10",
                "longId": "LIJAF97HJJKH8298KHADH09908570FDKK9S2LSIUHB377373",
                "internalId": "PZ-234-A",
                "typeName": "invoice",
                "status": "Valid",
                "totalPayableAmount": 10.10,
                "dateTimeValidated": "2015-02-13T14:20:12.1234567Z",
            }
        ],
    }
    page = SubmissionPage.parse(body, page_no=1, page_size=100)
    assert page.overall_status is SubmissionStatus.PARTIALLY_VALID
    assert page.total_pages == 3
    [doc] = page.documents
    assert doc.status is DocumentStatus.VALID
    assert doc.total_payable_amount == Decimal("10.1")
    assert doc.date_time_validated.microsecond == 123456
    assert doc.validation_link("https://preprod.myinvois.hasil.gov.my/") == (
        "https://preprod.myinvois.hasil.gov.my/F9D425P6DS7D8IU/share/LIJAF97HJJKH8298KHADH09908570FDKK9S2LSIUHB377373"
    )


def test_invalid_document_has_no_validation_link():
    page = SubmissionPage.parse(
        {
            "submissionUid": "X",
            "documentCount": 1,
            "overallStatus": "Invalid",
            "documentSummary": [{"uuid": "U", "status": "Invalid", "longId": ""}],
        },
        page_no=1,
        page_size=100,
    )
    assert page.documents[0].validation_link("https://myinvois.hasil.gov.my") is None


def test_search_page_reads_either_tin_casing():
    body = {
        "result": [
            {
                "uuid": "A",
                "submissionUID": "S",
                "status": "Cancelled",
                "supplierTIN": "C1",
                "buyerTin": "C2",
                "total": 5,
            },
        ],
        "metadata": {"totalPages": 4, "totalCount": 310},
    }
    page = SearchPage.parse(body, page_no=2)
    [doc] = page.documents
    assert (doc.submission_uid, doc.issuer_tin, doc.receiver_id, doc.status) == (
        "S",
        "C1",
        "C2",
        DocumentStatus.CANCELLED,
    )
    assert (page.total_pages, page.total_count) == (4, 310)


def test_document_details_flatten_validation_steps_into_clerk_messages():
    body = {
        "uuid": "U1",
        "submissionUid": "S1",
        "internalId": "INV-9",
        "status": "Invalid",
        "validationResults": {
            "status": "Invalid",
            "validationSteps": [
                {"name": "Step01-Structure Validator", "status": "Valid"},
                {
                    "name": "Step02-Core Fields Validator",
                    "status": "Invalid",
                    "error": {
                        "errorCode": "Error02",
                        "error": "Core fields validation failed",
                        "innerError": [
                            {
                                "propertyPath": "Invoice.AccountingCustomerParty.Party.Contact.Telephone",
                                "errorCode": "CF349",
                                "error": "Contact number is required - BUYER",
                            },
                            {
                                "propertyName": "IssueDate",
                                "errorCode": "CF321",
                                "error": "Issuance date time value is too old",
                            },
                        ],
                    },
                },
                {
                    "name": "Step03-Duplicated Submission Validator",
                    "status": "Invalid",
                    "error": {"errorCode": "DS302", "error": "Duplicate document"},
                },
            ],
        },
    }
    details = DocumentDetails.parse(body)
    assert details.validation_status is DocumentStatus.INVALID
    assert details.errors == [
        ValidationError(
            "Step02-Core Fields Validator",
            "CF349",
            "Contact number is required - BUYER",
            "Invoice.AccountingCustomerParty.Party.Contact.Telephone",
        ),
        ValidationError("Step02-Core Fields Validator", "CF321", "Issuance date time value is too old", "IssueDate"),
        ValidationError("Step03-Duplicated Submission Validator", "DS302", "Duplicate document", None),
    ]
    assert details.errors[1].clerk_message() == (
        "MyInvois rejected field IssueDate: Issuance date time value is too old (code CF321)"
    )
    assert details.errors[2].clerk_message() == (
        "MyInvois rejected the document in check 'Step03-Duplicated Submission Validator': "
        "Duplicate document (code DS302)"
    )
