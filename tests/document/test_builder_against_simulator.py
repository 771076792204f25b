"""Documents from the builder, submitted to the simulator over real HTTP (ASGI in-process).

The simulator's validator was written separately from the builder and from pre-validation,
against the same specification, so agreement here is evidence both read the spec the same way:
every document type comes back Valid, and invoices that pre-validation flags are refused by the
simulator for the same field.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from datetime import datetime, timezone
from decimal import Decimal

import pytest
from starlette.testclient import TestClient

from connector_core.document import build, prevalidate
from connector_core.model import DocumentType, Invoice
from connector_core.simulator import SimulatorConfig, create_app
from connector_core.simulator.config import RateLimitConfig, ValidationConfig
from tests.document.factories import make_counterparty, make_invoice, make_line, make_service_line

POLL_DEADLINE_SECONDS = 10.0
POLL_INTERVAL_SECONDS = 0.02


@pytest.fixture()
def client() -> Iterator[TestClient]:
    config = SimulatorConfig(
        validation=ValidationConfig(delay_seconds=0.0, per_document_seconds=0.0),
        rate_limits=RateLimitConfig(profile="off"),
    )
    with TestClient(create_app(config)) as test_client:
        response = test_client.post(
            "/connect/token",
            data={"client_id": "demo-taxpayer", "client_secret": "demo-taxpayer-secret", "grant_type": "client_credentials"},
        )
        assert response.status_code == 200, response.text
        test_client.headers["Authorization"] = f"Bearer {response.json()['access_token']}"
        yield test_client


def submit_and_wait(client: TestClient, invoice: Invoice) -> dict:
    """Submit one document, poll its submission until validation ends, return its summary."""
    built = build(invoice, datetime.now(timezone.utc))
    response = client.post("/api/v1.0/documentsubmissions", json={"documents": [built.submission_entry()]})
    assert response.status_code == 202, response.text
    accepted = response.json()
    assert accepted["rejectedDocuments"] == [], accepted
    [document] = accepted["acceptedDocuments"]
    assert document["invoiceCodeNumber"] == invoice.number
    uid = accepted.get("submissionUid") or accepted.get("submissionUID")

    deadline = time.monotonic() + POLL_DEADLINE_SECONDS
    while True:
        polled = client.get(f"/api/v1.0/documentsubmissions/{uid}")
        assert polled.status_code == 200, polled.text
        status = polled.json()["overallStatus"].replace(" ", "").lower()
        if status != "inprogress":
            break
        assert time.monotonic() < deadline, "the simulator never finished validating"
        time.sleep(POLL_INTERVAL_SECONDS)
    [summary] = polled.json()["documentSummary"]
    assert summary["uuid"] == document["uuid"]
    return summary


def error_paths(client: TestClient, uuid: str) -> list[str]:
    """Property paths of every validation error the simulator reports for a document."""
    details = client.get(f"/api/v1.0/documents/{uuid}/details")
    assert details.status_code == 200, details.text
    paths = []
    for step in details.json()["validationResults"]["validationSteps"]:
        for inner in (step.get("error") or {}).get("innerError") or []:
            paths.append(inner.get("propertyPath") or "")
    return paths


@pytest.mark.parametrize("document_type", list(DocumentType), ids=lambda t: t.name)
def test_every_document_type_is_valid(client: TestClient, document_type: DocumentType) -> None:
    invoice = make_invoice(document_type=document_type, number=f"SIM-{document_type.value}")
    assert prevalidate(invoice) == []
    summary = submit_and_wait(client, invoice)
    assert summary["status"] == "Valid", error_paths(client, summary["uuid"])
    assert summary["internalId"] == f"SIM-{document_type.value}"
    assert summary["longId"]


def test_foreign_currency_invoice_is_valid(client: TestClient) -> None:
    invoice = make_invoice(number="SIM-USD", currency="USD", exchange_rate=Decimal("4.4725"))
    assert submit_and_wait(client, invoice)["status"] == "Valid"


# Each case: an invoice pre-validation flags, the one field it names, and the one element the
# simulator must refuse — the same field, and nothing else in the document.
DISAGREEMENT_CASES = [
    pytest.param(
        lambda: make_invoice(number="SIM-BAD-PHONE", buyer=make_counterparty(msic_code=None, business_activity=None, phone="")),
        "buyer.phone",
        "Invoice.AccountingCustomerParty.Party.Contact.Telephone",
        id="buyer phone missing",
    ),
    pytest.param(
        lambda: make_invoice(number="SIM-NO-RATE", currency="USD"),
        "exchange_rate",
        "Invoice.TaxExchangeRate.CalculationRate",
        id="foreign currency without exchange rate",
    ),
    pytest.param(
        lambda: make_invoice(number="SIM-BAD-CLASS", lines=[make_line(), make_service_line(classification_codes=["999"])]),
        "lines[1].classification_codes[0]",
        "Invoice.InvoiceLine[1].Item.CommodityClassification.ItemClassificationCode",
        id="unknown classification code",
    ),
    pytest.param(
        lambda: make_invoice(number="SIM-BAD-TIN", buyer=make_counterparty(msic_code=None, business_activity=None, tin="C5810123456")),
        "buyer.tin",
        "Invoice.AccountingCustomerParty.Party.PartyIdentification",
        id="buyer TIN not ending in 0",
    ),
]


@pytest.mark.parametrize(("make_broken", "our_field", "simulator_path"), DISAGREEMENT_CASES)
def test_prevalidation_problems_are_refused_by_the_simulator_for_the_same_field(
    client: TestClient, make_broken, our_field: str, simulator_path: str
) -> None:
    invoice = make_broken()
    assert [p.field for p in prevalidate(invoice)] == [our_field]

    summary = submit_and_wait(client, invoice)
    assert summary["status"] == "Invalid"
    assert error_paths(client, summary["uuid"]) == [simulator_path]
