"""Helpers for the simulator's tests: a fast in-process simulator, logins, and prepared samples.

Everything goes through HTTP (starlette's TestClient in-process, or uvicorn on loopback);
the simulator itself is never mocked. Validation delays are a few hundredths of a second
so the whole directory runs quickly.
"""

from __future__ import annotations

import copy
import json
import time
import warnings
from datetime import datetime, timezone
from pathlib import Path

with warnings.catch_warnings():
    # starlette announces its TestClient will need another httpx package; irrelevant to these tests.
    warnings.simplefilter("ignore")
    from starlette.testclient import TestClient

from connector_core.simulator import SimulatorConfig, create_app
from connector_core.simulator.demo import demo_invoice, submission_body

SAMPLES_DIR = Path(__file__).parent.parent / "fixtures" / "samples"

TAXPAYER = ("demo-taxpayer", "demo-taxpayer-secret")
TAXPAYER_TIN = "C25845632020"
TAXPAYER_BRN = "202001234567"
TAXPAYER_2 = ("demo-taxpayer-2", "demo-taxpayer-2-secret")
TAXPAYER_2_TIN = "C10000000010"
BUYER = ("demo-buyer", "demo-buyer-secret")
BUYER_TIN = "C58101234560"
BUYER_BRN = "200501012345"
INTERMEDIARY = ("demo-intermediary", "demo-intermediary-secret")

FAST_VALIDATION = {"delay_seconds": 0.05, "per_document_seconds": 0.001}

#: How long the polling helpers wait for a validation of a few hundredths of a second. They
#: return as soon as it is over, so only a broken simulator ever waits this long; the margin
#: is for a busy machine, where one request can take a second.
FINAL_DEADLINE_SECONDS = 30.0


def make_config(**overrides) -> SimulatorConfig:
    data = {"validation": dict(FAST_VALIDATION), "rate_limits": {"profile": "off"}}
    for key, value in overrides.items():
        if isinstance(value, dict) and isinstance(data.get(key), dict):
            data[key] = {**data[key], **value}
        else:
            data[key] = value
    return SimulatorConfig.model_validate(data)


def make_client(**overrides) -> TestClient:
    return TestClient(create_app(make_config(**overrides)))


def login(client, credentials=TAXPAYER, onbehalfof: str | None = None) -> dict[str, str]:
    headers = {"onbehalfof": onbehalfof} if onbehalfof else {}
    response = client.post("/connect/token", headers=headers, data={
        "client_id": credentials[0], "client_secret": credentials[1],
        "grant_type": "client_credentials", "scope": "InvoicingAPI"})
    assert response.status_code == 200, response.text
    return {"Authorization": f"Bearer {response.json()['access_token']}"}


def submit(client, headers, documents: list[tuple[dict | bytes, str]]):
    return client.post("/api/v1.0/documentsubmissions", json=submission_body(documents), headers=headers)


def submit_one(client, headers, document: dict, code: str = "INV-1") -> str:
    """Submit one document and return its uuid (asserting it was accepted)."""
    response = submit(client, headers, [(document, code)])
    assert response.status_code == 202, response.text
    accepted = response.json()["acceptedDocuments"]
    assert len(accepted) == 1, response.json()
    return accepted[0]["uuid"]


def wait_final(client, headers, submission_uid: str, timeout: float = FINAL_DEADLINE_SECONDS) -> dict:
    """Poll Get Submission until no document is Submitted any more."""
    deadline = time.monotonic() + timeout
    while True:
        body = client.get(f"/api/v1.0/documentsubmissions/{submission_uid}", headers=headers).json()
        if all(d["status"] != "Submitted" for d in body["documentSummary"]):
            return body
        assert time.monotonic() < deadline, f"submission {submission_uid} still in progress: {body}"
        time.sleep(0.02)


def details(client, headers, uuid: str, timeout: float = FINAL_DEADLINE_SECONDS) -> dict:
    """Document details once the document has left Submitted."""
    deadline = time.monotonic() + timeout
    while True:
        response = client.get(f"/api/v1.0/documents/{uuid}/details", headers=headers)
        assert response.status_code == 200, response.text
        body = response.json()
        if body["status"] != "Submitted":
            return body
        assert time.monotonic() < deadline, f"document {uuid} still Submitted: {body}"
        time.sleep(0.02)


def error_codes(detail_body: dict) -> list[str]:
    """Every inner errorCode of the document's invalid validation steps."""
    codes = []
    for step in detail_body["validationResults"]["validationSteps"]:
        if step["status"] == "Invalid":
            codes.extend(inner["errorCode"] for inner in step["error"]["innerError"])
    return codes


def now_utc() -> datetime:
    return datetime.now(timezone.utc)


def invoice(internal_id: str = "INV-1", **kwargs) -> dict:
    return demo_invoice(internal_id, **kwargs)


def load_sample(name: str) -> dict:
    return json.loads((SAMPLES_DIR / name).read_text("utf-8"))


def prepare_sample(sample: dict, *, issuer_tin: str = TAXPAYER_TIN, issuer_brn: str = TAXPAYER_BRN,
                   internal_id: str | None = None, reference_uuid: str = "NA", when: datetime | None = None) -> dict:
    """An official sample made submittable: issued now, placeholders replaced by well-formed identifiers.

    The issuer (supplier, or buyer for self-billed types) becomes ``issuer_tin``; the other party
    becomes the demo buyer.
    """
    document = copy.deepcopy(sample)
    invoice_node = document["Invoice"][0]
    self_billed = invoice_node["InvoiceTypeCode"][0]["_"] in {"11", "12", "13", "14"}
    issuer, other = ("Buyer", "Supplier") if self_billed else ("Supplier", "Buyer")
    replacements = {
        f"{issuer}'s TIN": issuer_tin, f"{issuer}'s BRN": issuer_brn,
        f"{other}'s TIN": BUYER_TIN, f"{other}'s BRN": BUYER_BRN,
        "Recipient's TIN": BUYER_TIN, "Recipient's BRN": BUYER_BRN,
        "Reference Invoice UUID": reference_uuid,
    }

    def walk(node):
        if isinstance(node, dict):
            for key, value in node.items():
                if key == "_" and isinstance(value, str) and value in replacements:
                    node[key] = replacements[value]
                else:
                    walk(value)
        elif isinstance(node, list):
            for item in node:
                walk(item)

    walk(document)
    moment = when or now_utc()
    invoice_node["IssueDate"] = [{"_": moment.strftime("%Y-%m-%d")}]
    invoice_node["IssueTime"] = [{"_": moment.strftime("%H:%M:%SZ")}]
    if internal_id is not None:
        invoice_node["ID"] = [{"_": internal_id}]
    return document

