"""Document details and raw, cancel and reject, recent and search, and the taxpayer APIs."""

from __future__ import annotations

import base64
import json
import time
from datetime import timedelta

import pytest

from connector_core.simulator.service import qr_code_text

from .helpers import (
    BUYER,
    BUYER_TIN,
    INTERMEDIARY,
    TAXPAYER_2,
    TAXPAYER_TIN,
    details,
    invoice,
    load_sample,
    login,
    make_client,
    now_utc,
    prepare_sample,
    submit_one,
)

STATE = "/api/v1.0/documents/state/{}/state"


@pytest.fixture()
def issuer(client):
    return login(client)


@pytest.fixture()
def buyer(client):
    return login(client, BUYER)


def valid_document(client, headers, internal_id="D-1", **kwargs) -> str:
    uuid = submit_one(client, headers, invoice(internal_id, **kwargs), internal_id)
    assert details(client, headers, uuid)["status"] == "Valid"
    return uuid


def invalid_document(client, headers, internal_id="BAD-1") -> str:
    document = invoice(internal_id)
    del document["Invoice"][0]["InvoiceLine"]
    uuid = submit_one(client, headers, document, internal_id)
    assert details(client, headers, uuid)["status"] == "Invalid"
    return uuid


def change(client, headers, uuid, status, reason="wrong amount"):
    return client.put(STATE.format(uuid), json={"status": status, "reason": reason}, headers=headers)


# -- details and raw ---------------------------------------------------------------------------

def test_receiver_reads_valid_documents_but_not_invalid_ones(client, issuer, buyer):
    good = valid_document(client, issuer)
    bad = invalid_document(client, issuer)
    assert client.get(f"/api/v1.0/documents/{good}/details", headers=buyer).status_code == 200
    assert client.get(f"/api/v1.0/documents/{bad}/details", headers=buyer).status_code == 404
    assert client.get(f"/api/v1.0/documents/{bad}/details", headers=issuer).status_code == 200
    stranger = login(client, TAXPAYER_2)
    assert client.get(f"/api/v1.0/documents/{good}/details", headers=stranger).status_code == 404


def test_receiver_cannot_see_a_document_still_submitted():
    client = make_client(validation={"delay_seconds": 30})
    uuid = submit_one(client, login(client), invoice("WAIT-1"))
    assert client.get(f"/api/v1.0/documents/{uuid}/details", headers=login(client, BUYER)).status_code == 404


def test_raw_returns_the_submitted_document_unchanged(client, issuer, buyer):
    document = invoice("RAW-1")
    uuid = valid_document(client, issuer, "RAW-1")
    body = client.get(f"/api/v1.0/documents/{uuid}/raw", headers=buyer).json()
    assert json.loads(body["document"])["Invoice"][0]["ID"][0]["_"] == "RAW-1"
    assert body["uuid"] == uuid and body["status"] == "Valid" and body["longId"]
    assert document  # the bytes submitted were the compact dump of this dict


def test_raw_is_not_available_for_invalid_documents(client, issuer):
    bad = invalid_document(client, issuer)
    response = client.get(f"/api/v1.0/documents/{bad}/raw", headers=issuer)
    assert response.status_code == 404


def test_unknown_document_is_404(client, issuer):
    assert client.get("/api/v1.0/documents/NOPE/details", headers=issuer).status_code == 404
    assert client.get("/api/v1.0/documents/NOPE/raw", headers=issuer).status_code == 404
    assert change(client, issuer, "NOPE", "cancelled").status_code == 404


# -- cancel ------------------------------------------------------------------------------------

def test_issuer_cancels_a_valid_document(client, issuer, buyer):
    uuid = valid_document(client, issuer)
    response = change(client, issuer, uuid, "cancelled", "duplicate billing")
    assert response.status_code == 200
    assert response.json() == {"uuid": uuid, "status": "Cancelled"}
    body = details(client, issuer, uuid)
    assert body["status"] == "Cancelled"
    assert body["cancelDateTime"] and body["documentStatusReason"] == "duplicate billing"
    assert client.get(f"/api/v1.0/documents/{uuid}/details", headers=buyer).json()["status"] == "Cancelled"
    again = change(client, issuer, uuid, "cancelled")
    assert again.status_code == 400 and again.json()["error"]["code"] == "IncorrectState"


def test_receiver_may_not_cancel(client, issuer, buyer):
    uuid = valid_document(client, issuer)
    response = change(client, buyer, uuid, "cancelled")
    assert response.status_code == 403
    assert response.json()["error"]["details"][0]["code"] == "Forbidden"


def test_invalid_and_pending_documents_cannot_be_cancelled(client, issuer):
    bad = invalid_document(client, issuer)
    assert change(client, issuer, bad, "cancelled").json()["error"]["code"] == "IncorrectState"
    slow = make_client(validation={"delay_seconds": 30})
    headers = login(slow)
    pending = submit_one(slow, headers, invoice("PEND"))
    assert change(slow, headers, pending, "cancelled").json()["error"]["code"] == "IncorrectState"


def test_cancellation_window_is_over_after_the_configured_hours():
    client = make_client(cancellation_window_hours=0.2 / 3600)
    headers = login(client)
    uuid = valid_document(client, headers)
    time.sleep(0.25)
    response = change(client, headers, uuid, "cancelled")
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "OperationPeriodOver"


def test_a_referenced_document_cannot_be_cancelled_until_the_note_is(client, issuer):
    original = valid_document(client, issuer, "ORIG-1")
    note = prepare_sample(load_sample("1.0-Credit-Note-Sample.json"), internal_id="CN-1", reference_uuid=original)
    note_uuid = submit_one(client, issuer, note, "CN-1")
    assert details(client, issuer, note_uuid)["status"] == "Valid"
    blocked = change(client, issuer, original, "cancelled")
    assert blocked.status_code == 400
    assert blocked.json()["error"]["code"] == "ActiveReferencingDocuments"
    assert note_uuid in blocked.json()["error"]["message"]
    assert change(client, issuer, note_uuid, "cancelled").status_code == 200
    assert change(client, issuer, original, "cancelled").status_code == 200


@pytest.mark.parametrize("body", [{"status": "deleted", "reason": "x"}, {"status": "cancelled"},
                                  {"status": "cancelled", "reason": "x" * 301}, ["cancelled"]])
def test_state_change_body_is_checked(client, issuer, body):
    uuid = valid_document(client, issuer)
    response = client.put(STATE.format(uuid), json=body, headers=issuer)
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "BadArgument"


def test_intermediary_cancels_what_it_submitted(client):
    headers = login(client, INTERMEDIARY, onbehalfof=TAXPAYER_TIN)
    uuid = valid_document(client, headers, "INT-C")
    assert change(client, headers, uuid, "cancelled").status_code == 200


# -- reject ------------------------------------------------------------------------------------

def test_receiver_requests_rejection_once_and_the_document_stays_valid(client, issuer, buyer):
    uuid = valid_document(client, issuer)
    response = change(client, buyer, uuid, "rejected", "goods not received")
    assert response.status_code == 200
    assert response.json() == {"uuid": uuid, "status": "Requested for Rejection"}
    body = details(client, issuer, uuid)
    assert body["status"] == "Valid"
    assert body["rejectRequestDateTime"] and body["documentStatusReason"] == "goods not received"
    again = change(client, buyer, uuid, "Rejected")
    assert again.status_code == 400 and again.json()["error"]["code"] == "IncorrectState"
    # the issuer then cancels it
    assert change(client, issuer, uuid, "cancelled").status_code == 200


def test_issuer_may_not_reject_its_own_document(client, issuer):
    uuid = valid_document(client, issuer)
    assert change(client, issuer, uuid, "rejected").status_code == 403


def test_rejection_window_is_over_after_the_configured_hours():
    client = make_client(rejection_window_hours=0.2 / 3600)
    uuid = valid_document(client, login(client))
    time.sleep(0.25)
    response = change(client, login(client, BUYER), uuid, "rejected")
    assert response.json()["error"]["code"] == "OperationPeriodOver"


def test_cancelled_documents_cannot_be_rejected(client, issuer, buyer):
    uuid = valid_document(client, issuer)
    change(client, issuer, uuid, "cancelled")
    assert change(client, buyer, uuid, "rejected").json()["error"]["code"] == "IncorrectState"


def test_cancel_and_reject_have_separate_rate_limits():
    client = make_client(rate_limits={"profile": "production", "overrides": {"cancel": 1, "reject": 1}})
    issuer, buyer = login(client), login(client, BUYER)
    first, second = valid_document(client, issuer, "L-1"), valid_document(client, issuer, "L-2")
    assert change(client, buyer, first, "rejected").status_code == 200
    assert change(client, issuer, first, "cancelled").status_code == 200
    assert change(client, issuer, second, "cancelled").status_code == 429
    requests = client.get("/_simulator/stats").json()["requests"]
    assert requests["cancel"] == {"200": 1, "429": 1} and requests["reject"] == {"200": 1}


# -- recent and search -------------------------------------------------------------------------

def iso(moment) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


def test_recent_lists_sent_and_received_documents_newest_first(client, issuer, buyer):
    first = valid_document(client, issuer, "R-1")
    second = valid_document(client, issuer, "R-2")
    bad = invalid_document(client, issuer, "R-3")
    sent = client.get("/api/v1.0/documents/recent", params={"InvoiceDirection": "Sent"}, headers=issuer).json()
    assert [d["uuid"] for d in sent["result"]] == [bad, second, first]
    assert sent["metadata"] == {"totalPages": 1, "totalCount": 3}
    item = sent["result"][-1]
    assert item["submissionUID"] and item["supplierTin"] == TAXPAYER_TIN and item["buyerTin"] == BUYER_TIN
    assert item["total"] == 106 and item["submissionChannel"] == "ERP"
    received = client.get("/api/v1.0/documents/recent", params={"InvoiceDirection": "Received"}, headers=buyer).json()
    assert [d["uuid"] for d in received["result"]] == [second, first]  # never the invalid one
    only_invalid = client.get("/api/v1.0/documents/recent", params={"status": "Invalid"}, headers=issuer).json()
    assert [d["uuid"] for d in only_invalid["result"]] == [bad]


def test_recent_paging_and_argument_checks(client, issuer):
    for n in range(5):
        valid_document(client, issuer, f"RP-{n}")
    page = client.get("/api/v1.0/documents/recent", params={"pageSize": 2, "pageNo": 3}, headers=issuer).json()
    assert len(page["result"]) == 1 and page["metadata"] == {"totalPages": 3, "totalCount": 5}
    now = now_utc()
    for params in ({"submissionDateFrom": iso(now)},
                   {"submissionDateFrom": iso(now), "submissionDateTo": iso(now - timedelta(days=1))},
                   {"submissionDateFrom": iso(now - timedelta(days=32)), "submissionDateTo": iso(now)},
                   {"InvoiceDirection": "Sideways"}, {"status": "Lost"}, {"documentType": "99"},
                   {"receiverTin": BUYER_TIN}, {"issuerTin": TAXPAYER_TIN, "InvoiceDirection": "Sent"},
                   {"pageSize": 1000}):
        response = client.get("/api/v1.0/documents/recent", params=params, headers=issuer)
        assert response.status_code == 400, params
        assert response.json()["error"]["code"] == "BadArgument"
    filtered = client.get("/api/v1.0/documents/recent", headers=issuer, params={
        "InvoiceDirection": "Sent", "receiverTin": BUYER_TIN, "documentType": "01",
        "submissionDateFrom": iso(now - timedelta(minutes=1)), "submissionDateTo": iso(now + timedelta(minutes=1))})
    assert filtered.json()["metadata"]["totalCount"] == 5


def test_search_needs_a_date_range_of_at_most_31_days(client, issuer):
    valid_document(client, issuer, "SR-1")
    now = now_utc()
    assert client.get("/api/v1.0/documents/search", headers=issuer).status_code == 400
    too_long = {"issueDateFrom": iso(now - timedelta(days=31, seconds=1)), "issueDateTo": iso(now)}
    assert client.get("/api/v1.0/documents/search", params=too_long, headers=issuer).status_code == 400
    ok = {"issueDateFrom": iso(now - timedelta(days=30)), "issueDateTo": iso(now + timedelta(days=1))}
    body = client.get("/api/v1.0/documents/search", params=ok, headers=issuer).json()
    assert body["metadata"]["totalCount"] == 1
    assert body["result"][0]["supplierTIN"] == TAXPAYER_TIN and body["result"][0]["buyerTIN"] == BUYER_TIN


def test_search_filters(client, issuer, buyer):
    a = valid_document(client, issuer, "SF-1")
    b = valid_document(client, issuer, "SF-2", buyer_tin="IG12345678912", buyer_name="Ali bin Abu")
    now = now_utc()
    window = {"submissionDateFrom": iso(now - timedelta(hours=1)), "submissionDateTo": iso(now + timedelta(minutes=1))}

    def uuids(**params):
        response = client.get("/api/v1.0/documents/search", params={**window, **params}, headers=issuer)
        assert response.status_code == 200, response.text
        return {d["uuid"] for d in response.json()["result"]}

    assert uuids() == {a, b}
    assert uuids(uuid=a) == {a}
    assert uuids(searchQuery="Ali bin") == {b}
    assert uuids(searchQuery="SF-1") == {a}
    assert uuids(invoiceDirection="Received") == set()
    assert uuids(status="Cancelled") == set()
    bad = client.get("/api/v1.0/documents/search", params={**window, "searchQuery": "a;drop"}, headers=issuer)
    assert bad.status_code == 400
    received = client.get("/api/v1.0/documents/search", params={**window, "invoiceDirection": "Received"},
                          headers=buyer).json()
    assert {d["uuid"] for d in received["result"]} == {a}


# -- taxpayer APIs -----------------------------------------------------------------------------

def test_validate_tin(client, issuer):
    url = "/api/v1.0/taxpayer/validate/{}"
    assert client.get(url.format(TAXPAYER_TIN), params={"idType": "BRN", "idValue": "202001234567"},
                      headers=issuer).status_code == 200
    assert client.get(url.format(TAXPAYER_TIN), params={"idType": "BRN", "idValue": "1"}, headers=issuer).status_code == 404
    assert client.get(url.format("IG12345678912"), params={"idType": "NRIC", "idValue": "900101015555"},
                      headers=issuer).status_code == 200
    for tin, params in (("C0", {"idType": "BRN", "idValue": "1"}), (TAXPAYER_TIN, {"idType": "TIN", "idValue": "1"}),
                        (TAXPAYER_TIN, {})):
        response = client.get(url.format(tin), params=params, headers=issuer)
        assert response.status_code == 400 and response.json()["error"]["code"] == "BadArgument"


def test_validate_tin_can_refuse_unknown_taxpayers():
    client = make_client(accept_unknown_tins=False)
    response = client.get("/api/v1.0/taxpayer/validate/IG12345678912", params={"idType": "NRIC", "idValue": "9"},
                          headers=login(client))
    assert response.status_code == 404


def test_search_tin(client, issuer):
    url = "/api/v1.0/taxpayer/search/tin"
    assert client.get(url, params={"taxpayerName": "kedai contoh"}, headers=issuer).json() == {"tin": "C10000000010"}
    assert client.get(url, params={"idType": "BRN", "idValue": "200501012345"}, headers=issuer).json() == {"tin": BUYER_TIN}
    assert client.get(url, params={"taxpayerName": "Sdn. Bhd."}, headers=issuer).status_code == 400  # not conclusive
    assert client.get(url, params={"taxpayerName": "Nobody"}, headers=issuer).status_code == 404
    assert client.get(url, headers=issuer).status_code == 400


def test_qr_code_info(client, issuer):
    code = qr_code_text(TAXPAYER_TIN)
    body = client.get(f"/api/v1.0/taxpayers/qrcodeinfo/{code}", headers=issuer).json()
    assert body["tin"] == TAXPAYER_TIN and body["idNumber"] == "202001234567"
    decoded = base64.b64decode(code).decode()
    assert client.get(f"/api/v1.0/taxpayers/qrcodeinfo/{decoded}", headers=issuer).status_code == 200
    assert client.get("/api/v1.0/taxpayers/qrcodeinfo/unknown", headers=issuer).status_code == 404


def test_search_tin_spelling_is_configurable():
    client = make_client(search_tin_spelling="Tin")
    headers = login(client)
    valid_document(client, headers, "SP-1")
    now = now_utc()
    window = {"issueDateFrom": iso(now - timedelta(days=1)), "issueDateTo": iso(now + timedelta(days=1))}
    (item,) = client.get("/api/v1.0/documents/search", params=window, headers=headers).json()["result"]
    assert item["supplierTin"] == TAXPAYER_TIN and "supplierTIN" not in item
