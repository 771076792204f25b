"""GET /api/v1.0/documentsubmissions/{uid}: status, paging, visibility, overallStatus spelling."""

from __future__ import annotations

import pytest

from .helpers import FINAL_DEADLINE_SECONDS, INTERMEDIARY, TAXPAYER_2, invoice, login, make_client, submit, wait_final

SUMMARY_FIELDS = {
    "uuid", "submissionUid", "longId", "internalId", "typeName", "typeVersionName", "issuerTin", "issuerName",
    "receiverId", "receiverName", "dateTimeIssued", "dateTimeReceived", "dateTimeValidated", "totalExcludingTax",
    "totalDiscount", "totalNetAmount", "totalPayableAmount", "status", "cancelDateTime", "rejectRequestDateTime",
    "documentStatusReason", "createdByUserId",
}


def broken(internal_id: str) -> dict:
    document = invoice(internal_id)
    del document["Invoice"][0]["InvoiceLine"]
    return document


def submission(client, headers, documents) -> str:
    response = submit(client, headers, documents)
    assert response.status_code == 202
    return response.json()["submissionUid"]


def test_submission_goes_from_in_progress_to_valid_with_every_summary_field():
    client = make_client(validation={"delay_seconds": 0.3})
    headers = login(client)
    uid = submission(client, headers, [(invoice("S-1", amount=50), "S-1")])
    early = client.get(f"/api/v1.0/documentsubmissions/{uid}", headers=headers).json()
    assert early["overallStatus"] == "in progress"
    final = wait_final(client, headers, uid)
    assert final["submissionUid"] == uid
    assert final["documentCount"] == 1
    assert final["dateTimeReceived"].endswith("Z")
    assert final["overallStatus"] == "valid"
    (summary,) = final["documentSummary"]
    assert set(summary) == SUMMARY_FIELDS
    assert summary["status"] == "Valid"
    assert summary["internalId"] == "S-1"
    assert summary["typeName"] == "Invoice"
    assert summary["typeVersionName"] == "1.0"
    assert summary["issuerName"] == "Syarikat Demo Sdn. Bhd."
    assert summary["receiverId"] == "C58101234560"
    assert summary["totalExcludingTax"] == 50
    assert summary["totalPayableAmount"] == 53
    assert len(summary["longId"]) >= 40
    assert summary["createdByUserId"].startswith("C25845632020:")


@pytest.mark.parametrize("style, expected", [
    ("documented", ("valid", "partially valid", "invalid")),
    ("title", ("Valid", "Partially Valid", "Invalid")),
    ("pascal", ("Valid", "PartiallyValid", "Invalid")),
])
def test_overall_status_follows_the_documents_in_the_configured_spelling(style, expected):
    client = make_client(overall_status_style=style)
    headers = login(client)
    valid = submission(client, headers, [(invoice("A-1"), "A-1")])
    mixed = submission(client, headers, [(invoice("B-1"), "B-1"), (broken("B-2"), "B-2")])
    invalid = submission(client, headers, [(broken("C-1"), "C-1")])
    assert tuple(wait_final(client, headers, uid)["overallStatus"] for uid in (valid, mixed, invalid)) == expected


def test_in_progress_spelling_per_style():
    for style, expected in (("documented", "in progress"), ("title", "In Progress"), ("pascal", "InProgress")):
        client = make_client(overall_status_style=style, validation={"delay_seconds": 30})
        headers = login(client)
        uid = submission(client, headers, [(invoice("P-1"), "P-1")])
        assert client.get(f"/api/v1.0/documentsubmissions/{uid}", headers=headers).json()["overallStatus"] == expected


def test_documents_finish_one_after_another():
    # Two seconds per document: the last one is final four seconds after the first, a margin
    # no busy machine eats up between two polls.
    client = make_client(validation={"delay_seconds": 0.0, "per_document_seconds": 2.0})
    headers = login(client)
    uid = submission(client, headers, [(invoice(f"O-{n}"), f"O-{n}") for n in range(3)])
    import time

    deadline = time.monotonic() + 30
    while True:
        summary = client.get(f"/api/v1.0/documentsubmissions/{uid}", headers=headers).json()["documentSummary"]
        statuses = [d["status"] for d in summary]
        if statuses[0] != "Submitted" or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert statuses[0] == "Valid" and statuses[-1] == "Submitted"


def test_paging(client):
    headers = login(client)
    uid = submission(client, headers, [(invoice(f"PG-{n}"), f"PG-{n}") for n in range(25)])
    url = f"/api/v1.0/documentsubmissions/{uid}"
    page2 = client.get(url, params={"pageNo": 2, "pageSize": 10}, headers=headers).json()
    assert page2["documentCount"] == 25
    assert [d["internalId"] for d in page2["documentSummary"]] == [f"PG-{n}" for n in range(10, 20)]
    page3 = client.get(url, params={"pageNo": 3, "pageSize": 10}, headers=headers).json()
    assert len(page3["documentSummary"]) == 5
    assert len(client.get(url, headers=headers).json()["documentSummary"]) == 25
    for bad in ({"pageSize": 101}, {"pageSize": 0}, {"pageNo": 0}, {"pageNo": "x"}):
        response = client.get(url, params=bad, headers=headers)
        assert response.status_code == 400, bad
        assert response.json()["error"]["code"] == "BadArgument"


def test_unknown_submission_is_404(client):
    response = client.get("/api/v1.0/documentsubmissions/AAAAAAAAAAAAAAAAAAAAAAAAAA", headers=login(client))
    assert response.status_code == 404
    assert response.json()["error"]["code"] == "NotFound"


def test_only_the_submitter_sees_a_submission(client):
    uid = submission(client, login(client), [(invoice("V-1"), "V-1")])
    assert client.get(f"/api/v1.0/documentsubmissions/{uid}", headers=login(client, TAXPAYER_2)).status_code == 404
    # an intermediary acting for the same taxpayer did not submit it either
    intermediary = login(client, INTERMEDIARY, onbehalfof="C25845632020")
    assert client.get(f"/api/v1.0/documentsubmissions/{uid}", headers=intermediary).status_code == 404


def test_intermediary_sees_its_own_submissions_and_the_taxpayer_sees_them_too(client):
    intermediary = login(client, INTERMEDIARY, onbehalfof="C25845632020")
    uid = submission(client, intermediary, [(invoice("I-1"), "I-1")])
    assert client.get(f"/api/v1.0/documentsubmissions/{uid}", headers=intermediary).status_code == 200
    assert client.get(f"/api/v1.0/documentsubmissions/{uid}", headers=login(client)).status_code == 200


@pytest.fixture()
def anyio_backend():
    return "asyncio"


@pytest.mark.anyio
async def test_in_process_through_httpx_asgi_transport():
    import asyncio

    import httpx

    from connector_core.simulator import create_app
    from connector_core.simulator.demo import submission_body

    from .helpers import make_config

    app = create_app(make_config())
    async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://simulator") as client:
        token = (await client.post("/connect/token", data={
            "client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret",
            "grant_type": "client_credentials"})).json()["access_token"]
        headers = {"Authorization": f"Bearer {token}"}
        response = await client.post("/api/v1.0/documentsubmissions", headers=headers,
                                     json=submission_body([(invoice("ASGI-1"), "ASGI-1")]))
        assert response.status_code == 202
        uid = response.json()["submissionUid"]
        deadline = asyncio.get_running_loop().time() + FINAL_DEADLINE_SECONDS
        while True:
            body = (await client.get(f"/api/v1.0/documentsubmissions/{uid}", headers=headers)).json()
            if body["overallStatus"] != "in progress" or asyncio.get_running_loop().time() > deadline:
                break
            await asyncio.sleep(0.02)
        assert body["overallStatus"] == "valid"
