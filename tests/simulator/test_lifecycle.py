"""After Valid: cancellation, rejection requests, portal events, the windows and Get Document Types.

Each rule of LHDN's Cancel Document / Reject Document pages has a test here, through the API
in-process (starlette's TestClient) and, for the portal events a test thread triggers while a
client polls, over real HTTP.
"""

from __future__ import annotations

import time
from datetime import timedelta

import httpx
import pytest

from connector_core.simulator import run_in_thread
from connector_core.simulator.cli import banner, config_from_options
from connector_core.simulator.demo import submission_body
from connector_core.simulator.lifecycle import StateChangeRefused

from .helpers import (
    BUYER,
    INTERMEDIARY,
    TAXPAYER_2,
    TAXPAYER_TIN,
    details,
    invoice,
    load_sample,
    login,
    make_client,
    make_config,
    now_utc,
    prepare_sample,
    submit,
    submit_one,
    wait_final,
)

STATE = "/api/v1.0/documents/state/{}/state"
TYPES = "/api/v1.0/documenttypes"


@pytest.fixture()
def issuer(client):
    return login(client)


@pytest.fixture()
def buyer(client):
    return login(client, BUYER)


def valid_document(client, headers, internal_id="LC-1") -> str:
    uuid = submit_one(client, headers, invoice(internal_id), internal_id)
    assert details(client, headers, uuid)["status"] == "Valid"
    return uuid


def change(client, headers, uuid, status, reason="wrong amount"):
    return client.put(STATE.format(uuid), json={"status": status, "reason": reason}, headers=headers)


def submission_of(client, headers, uuid) -> dict:
    uid = details(client, headers, uuid)["submissionUid"]
    return client.get(f"/api/v1.0/documentsubmissions/{uid}", headers=headers).json()


def searched(client, headers, uuid) -> dict:
    now = now_utc()
    params = {"uuid": uuid, "submissionDateFrom": (now - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ"),
              "submissionDateTo": (now + timedelta(minutes=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    body = client.get("/api/v1.0/documents/search", params=params, headers=headers).json()
    assert len(body["result"]) == 1, body
    return body["result"][0]


def close_windows(client) -> None:
    """Make both windows a millisecond long, then let a little more than that pass."""
    response = client.post("/_simulator/windows", json={"lifecycle_window_seconds": 0.001})
    assert response.status_code == 200, response.text
    time.sleep(0.01)


# -- what the three read APIs show ----------------------------------------------------------------

def test_a_rejection_request_keeps_the_document_valid_and_shows_time_and_reason_everywhere(client, issuer, buyer):
    uuid = valid_document(client, issuer)
    assert change(client, buyer, uuid, "rejected", "goods not received").json() == {
        "uuid": uuid, "status": "Requested for Rejection"}
    submission = submission_of(client, issuer, uuid)
    assert submission["overallStatus"] == "valid"
    views = [submission["documentSummary"][0], details(client, issuer, uuid), searched(client, issuer, uuid)]
    for view in views:
        assert view["status"] == "Valid"
        assert view["rejectRequestDateTime"] and view["cancelDateTime"] is None
        assert view["documentStatusReason"] == "goods not received"
        assert view["longId"]  # still Valid: the validation link keeps working


def test_a_cancellation_shows_cancelled_with_time_and_reason_everywhere(client, issuer):
    uuid = valid_document(client, issuer)
    assert change(client, issuer, uuid, "cancelled", "wrong buyer details").json() == {
        "uuid": uuid, "status": "Cancelled"}
    views = [submission_of(client, issuer, uuid)["documentSummary"][0], details(client, issuer, uuid),
             searched(client, issuer, uuid)]
    for view in views:
        assert view["status"] == "Cancelled"
        assert view["cancelDateTime"] and view["rejectRequestDateTime"] is None
        assert view["documentStatusReason"] == "wrong buyer details"


def test_the_issuer_accepts_a_rejection_request_by_cancelling(client, issuer, buyer):
    uuid = valid_document(client, issuer)
    change(client, buyer, uuid, "rejected", "duplicate")
    assert change(client, issuer, uuid, "cancelled", "accepted the buyer's rejection").status_code == 200
    body = details(client, issuer, uuid)
    assert body["status"] == "Cancelled" and body["rejectRequestDateTime"] and body["cancelDateTime"]
    assert body["documentStatusReason"] == "accepted the buyer's rejection"


# -- who may ----------------------------------------------------------------------------------------

def test_a_third_party_gets_403_for_cancel_and_reject(client, issuer):
    uuid = valid_document(client, issuer)
    stranger = login(client, TAXPAYER_2)
    for status in ("cancelled", "rejected"):
        response = change(client, stranger, uuid, status)
        assert response.status_code == 403, status
        assert response.json()["error"]["details"][0]["code"] == "Forbidden"
    assert details(client, issuer, uuid)["status"] == "Valid"


def test_an_intermediary_may_not_cancel_what_the_taxpayer_submitted_itself(client, issuer):
    uuid = valid_document(client, issuer)
    intermediary = login(client, INTERMEDIARY, onbehalfof=TAXPAYER_TIN)
    assert change(client, intermediary, uuid, "cancelled").status_code == 403


def test_an_unknown_uuid_is_404_for_the_api_and_the_portal(client, issuer):
    assert change(client, issuer, "NO-SUCH-DOCUMENT", "cancelled").status_code == 404
    response = client.post("/_simulator/portal/cancel/NO-SUCH-DOCUMENT", json={"reason": "x"})
    assert response.status_code == 404 and response.json()["error"]["code"] == "NotFound"


def test_for_a_self_billed_invoice_the_buyer_cancels_and_the_supplier_rejects(client):
    supplier, buyer = login(client), login(client, BUYER)
    document = invoice("SB-1")
    document["Invoice"][0]["InvoiceTypeCode"][0]["_"] = "11"
    uuid = submit_one(client, buyer, document, "SB-1")  # the buyer issues and submits it
    assert details(client, buyer, uuid)["status"] == "Valid"
    assert change(client, supplier, uuid, "cancelled").status_code == 403
    assert change(client, buyer, uuid, "rejected").status_code == 403
    assert change(client, supplier, uuid, "rejected", "never supplied").status_code == 200
    assert change(client, buyer, uuid, "cancelled", "agreed").status_code == 200


# -- the windows ----------------------------------------------------------------------------------

def test_after_the_window_both_cancel_and_reject_are_operation_period_over(client, issuer, buyer):
    uuid = valid_document(client, issuer)
    close_windows(client)
    for headers, status in ((issuer, "cancelled"), (buyer, "rejected")):
        response = change(client, headers, uuid, status)
        assert response.status_code == 400
        error = response.json()["error"]
        assert error["code"] == "OperationPeriodOver"
        assert "credit" in error["message"]
    assert details(client, issuer, uuid)["status"] == "Valid"


def test_a_window_change_applies_to_documents_already_valid(client, issuer):
    uuid = valid_document(client, issuer)
    close_windows(client)
    assert change(client, issuer, uuid, "cancelled").json()["error"]["code"] == "OperationPeriodOver"
    reopened = client.post("/_simulator/windows", json={"lifecycle_window_seconds": None}).json()
    assert reopened["effective_seconds"] == {"cancellation": 72 * 3600, "rejection": 72 * 3600}
    assert change(client, issuer, uuid, "cancelled").status_code == 200


def test_each_window_has_its_own_length():
    client = make_client(cancellation_window_hours=72, rejection_window_hours=0.001 / 3600)
    issuer, buyer = login(client), login(client, BUYER)
    uuid = valid_document(client, issuer)
    time.sleep(0.01)
    assert change(client, buyer, uuid, "rejected").json()["error"]["code"] == "OperationPeriodOver"
    assert change(client, issuer, uuid, "cancelled").status_code == 200


def test_the_windows_control_refuses_nonsense(client):
    for body in ({"lifecycle_window_seconds": 0}, {"cancellation_window_hours": -1}, {"window": 5}):
        assert client.post("/_simulator/windows", json=body).status_code == 400, body
    assert client.get("/_simulator/windows").json()["cancellation_window_hours"] == 72


# -- the other rules --------------------------------------------------------------------------------

def test_a_rejection_is_requested_once_only(client, issuer, buyer):
    uuid = valid_document(client, issuer)
    assert change(client, buyer, uuid, "rejected", "first").status_code == 200
    again = change(client, buyer, uuid, "rejected", "second")
    assert again.status_code == 400 and again.json()["error"]["code"] == "IncorrectState"
    assert details(client, issuer, uuid)["documentStatusReason"] == "first"


def test_referencing_notes_block_cancel_and_reject_and_are_named_in_the_details(client, issuer, buyer):
    original = valid_document(client, issuer, "ORIG-9")
    notes = []
    for number in ("CN-9", "CN-10"):
        note = prepare_sample(load_sample("1.0-Credit-Note-Sample.json"), internal_id=number, reference_uuid=original)
        notes.append(submit_one(client, issuer, note, number))
    for uuid in notes:
        assert details(client, issuer, uuid)["status"] == "Valid"
    for headers, status in ((issuer, "cancelled"), (buyer, "rejected")):
        error = change(client, headers, original, status).json()["error"]
        assert error["code"] == "ActiveReferencingDocuments"
        assert sorted(d["target"] for d in error["details"]) == sorted(notes)
        assert all(uuid in error["message"] for uuid in notes)
    # Cancelling one note leaves the other blocking; the original goes once both are gone.
    assert change(client, issuer, notes[0], "cancelled").status_code == 200
    error = change(client, issuer, original, "cancelled").json()["error"]
    assert [d["target"] for d in error["details"]] == [notes[1]]
    assert change(client, issuer, notes[1], "cancelled").status_code == 200
    assert change(client, issuer, original, "cancelled").status_code == 200


def test_cancel_and_reject_are_limited_to_12_per_minute_each():
    client = make_client(rate_limits={"profile": "production"})
    issuer, buyer = login(client), login(client, BUYER)
    response = submit(client, issuer, [(invoice(f"RL-{n}"), f"RL-{n}") for n in range(13)])
    uuids = [d["uuid"] for d in response.json()["acceptedDocuments"]]
    wait_final(client, issuer, response.json()["submissionUid"])
    for uuid in uuids[:12]:
        assert change(client, buyer, uuid, "rejected").status_code == 200
    refused = change(client, buyer, uuids[12], "rejected")
    assert refused.status_code == 429 and int(refused.headers["Retry-After"]) >= 1
    assert refused.headers["X-Rate-Limit-Limit"] == "12"
    # the issuer's cancellations have their own 12
    for uuid in uuids[:12]:
        assert change(client, issuer, uuid, "cancelled").status_code == 200
    assert change(client, issuer, uuids[12], "cancelled").status_code == 429


# -- portal events --------------------------------------------------------------------------------

def test_portal_events_skip_auth_and_rate_limits_but_reach_the_api():
    client = make_client(rate_limits={"profile": "production", "overrides": {"cancel": 1, "reject": 1}})
    issuer = login(client)
    first, second = valid_document(client, issuer, "P-1"), valid_document(client, issuer, "P-2")
    for uuid in (first, second):
        response = client.post(f"/_simulator/portal/reject/{uuid}", json={"reason": "price is wrong"})
        assert response.json() == {"uuid": uuid, "status": "Requested for Rejection"}
    assert details(client, issuer, first)["documentStatusReason"] == "price is wrong"
    for uuid in (first, second):
        response = client.post(f"/_simulator/portal/cancel/{uuid}", json={"reason": "cancelled at the counter"})
        assert response.json() == {"uuid": uuid, "status": "Cancelled"}
    body = details(client, issuer, second)
    assert body["status"] == "Cancelled" and body["documentStatusReason"] == "cancelled at the counter"
    stats = client.get("/_simulator/stats").json()
    assert stats["portal_events"] == {"reject": 2, "cancel": 2}
    assert "cancel" not in stats["requests"] and "reject" not in stats["requests"]


def test_portal_events_meet_the_same_rules(client, issuer):
    uuid = valid_document(client, issuer)
    assert client.post(f"/_simulator/portal/reject/{uuid}", json={}).json()["error"]["code"] == "BadArgument"
    client.post(f"/_simulator/portal/reject/{uuid}", json={"reason": "once"})
    twice = client.post(f"/_simulator/portal/reject/{uuid}", json={"reason": "twice"})
    assert twice.status_code == 400 and twice.json()["error"]["code"] == "IncorrectState"
    close_windows(client)
    late = client.post(f"/_simulator/portal/cancel/{uuid}", json={"reason": "too late"})
    assert late.status_code == 400 and late.json()["error"]["code"] == "OperationPeriodOver"


def test_in_process_portal_helpers_raise_lhdn_errors(client, issuer):
    sim = client.app.state.simulator
    uuid = valid_document(client, issuer)
    assert sim.portal_request_rejection(uuid, "wrong quantity")["status"] == "Requested for Rejection"
    assert sim.portal_cancel(uuid, "agreed")["status"] == "Cancelled"
    with pytest.raises(StateChangeRefused) as refused:
        sim.portal_cancel(uuid, "again")
    assert refused.value.code == "IncorrectState" and refused.value.status == 400
    other = valid_document(client, issuer, "LC-2")
    validated = sim.store.documents[other].ready_at
    with pytest.raises(StateChangeRefused) as late:
        sim.portal_request_rejection(other, "late", now=validated + 72 * 3600 + 1)
    assert late.value.code == "OperationPeriodOver"
    assert sim.portal_request_rejection(other, "in time", now=validated + 72 * 3600 - 1)["uuid"] == other


def test_a_portal_rejection_reaches_a_client_polling_over_http():
    config = make_config(lifecycle_window_seconds=600)
    with run_in_thread(config) as running, httpx.Client(base_url=running.base_url) as http:
        token = http.post("/connect/token", data={"client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret",
                                                  "grant_type": "client_credentials"}).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        answer = http.post("/api/v1.0/documentsubmissions", json=submission_body([(invoice("H-1"), "H-1")]),
                           headers=headers).json()
        uid, uuid = answer["submissionUid"], answer["acceptedDocuments"][0]["uuid"]
        deadline = time.monotonic() + 30
        while http.get(f"/api/v1.0/documentsubmissions/{uid}", headers=headers).json()["overallStatus"] != "valid":
            assert time.monotonic() < deadline
            time.sleep(0.02)
        running.simulator.portal_request_rejection(uuid, "not ordered")
        summary = http.get(f"/api/v1.0/documentsubmissions/{uid}", headers=headers).json()["documentSummary"][0]
        assert summary["status"] == "Valid" and summary["documentStatusReason"] == "not ordered"
        assert summary["rejectRequestDateTime"]
        rule = http.get("/api/v1.0/documenttypes/45", headers=headers).json()["workflowParameters"]
        assert {p["parameter"]: p["value"] for p in rule}["rejectionDuration"] == pytest.approx(600 / 3600)


# -- Get Document Types -----------------------------------------------------------------------------

def test_document_types_list_the_eight_types_without_workflow_parameters(client, issuer):
    body = client.get(TYPES, headers=issuer).json()
    types = body["result"]
    assert sorted(t["invoiceTypeCode"] for t in types) == [1, 2, 3, 4, 11, 12, 13, 14]
    assert all(t["id"] != t["invoiceTypeCode"] for t in types)
    invoice_type = next(t for t in types if t["invoiceTypeCode"] == 1)
    assert invoice_type["description"] == "Invoice" and "workflowParameters" not in invoice_type
    assert {v["name"] for v in invoice_type["documentTypeVersions"]} == {"1.0", "1.1", "1.2", "1.3"}
    assert all(v["status"] == "published" for v in invoice_type["documentTypeVersions"])


def test_a_document_type_carries_its_windows_in_hours(client, issuer):
    types = client.get(TYPES, headers=issuer).json()["result"]
    credit_note = next(t for t in types if t["invoiceTypeCode"] == 2)
    body = client.get(f"{TYPES}/{credit_note['id']}", headers=issuer).json()
    assert body["id"] == credit_note["id"] and body["documentTypeVersions"] == credit_note["documentTypeVersions"]
    parameters = {p["parameter"]: p for p in body["workflowParameters"]}
    assert {name: p["value"] for name, p in parameters.items()} == {
        "submissionDuration": 72, "cancellationDuration": 72, "rejectionDuration": 72}
    assert all(p["id"] and p["activeFrom"] for p in parameters.values())
    assert len({p["id"] for p in parameters.values()}) == 3


def test_workflow_parameters_follow_the_compressed_window(client, issuer):
    client.post("/_simulator/windows", json={"lifecycle_window_seconds": 90})
    values = {p["parameter"]: p["value"] for p in client.get(f"{TYPES}/45", headers=issuer).json()["workflowParameters"]}
    assert values["cancellationDuration"] == pytest.approx(0.025) and values["rejectionDuration"] == pytest.approx(0.025)
    client.post("/_simulator/windows", json={"lifecycle_window_seconds": None, "rejection_window_hours": 48})
    values = {p["parameter"]: p["value"] for p in client.get(f"{TYPES}/45", headers=issuer).json()["workflowParameters"]}
    assert values["cancellationDuration"] == 72 and values["rejectionDuration"] == 48


def test_document_type_version_and_errors(client, issuer):
    invoice_type = client.get(f"{TYPES}/45", headers=issuer).json()
    version = next(v for v in invoice_type["documentTypeVersions"] if v["name"] == "1.1")
    body = client.get(f"{TYPES}/45/versions/{version['id']}", headers=issuer).json()
    assert body == {"invoiceTypeCode": invoice_type["invoiceTypeCode"], "name": "1.1",
                    "description": version["description"], "versionNumber": 1.1, "status": "published",
                    "activeFrom": version["activeFrom"], "activeTo": None}
    assert client.get(f"{TYPES}/999", headers=issuer).status_code == 404
    assert client.get(f"{TYPES}/45/versions/1", headers=issuer).status_code == 404
    assert client.get(f"{TYPES}/abc", headers=issuer).status_code == 400
    assert client.get(TYPES).status_code == 401


# -- settings -------------------------------------------------------------------------------------

def test_the_command_line_compresses_the_windows():
    config = config_from_options(None, {"lifecycle_window_seconds": 120.0})
    assert config.cancellation_window_seconds() == 120 and config.rejection_window_seconds() == 120
    assert "cancel within 120 s, reject within 120 s" in banner(config, "http://127.0.0.1:1")
    default = config_from_options(None, {"lifecycle_window_seconds": None})
    assert default.cancellation_window_seconds() == 72 * 3600

