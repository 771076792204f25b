"""POST /api/v1.0/documentsubmissions: limits, structure, hashes, duplicates, submitter checks."""

from __future__ import annotations

import base64
import hashlib
import json
import re
import time

import pytest

from connector_core.simulator.demo import encode_document

from .helpers import (
    BUYER,
    TAXPAYER_2,
    TAXPAYER_TIN,
    invoice,
    login,
    make_client,
    submit,
    wait_final,
)

ID = re.compile(r"[A-Z0-9]{26}")
SUBMIT = "/api/v1.0/documentsubmissions"


@pytest.fixture()
def headers(client):
    return login(client)


@pytest.mark.parametrize("path", [SUBMIT, SUBMIT + "/"])
def test_accepted_submission_returns_202_with_ids(client, headers, path):
    body = {"documents": [encode_document(invoice(f"INV-{n}"), f"INV-{n}") for n in range(3)]}
    response = client.post(path, json=body, headers=headers)
    assert response.status_code == 202
    payload = response.json()
    assert ID.fullmatch(payload["submissionUid"])
    assert [d["invoiceCodeNumber"] for d in payload["acceptedDocuments"]] == ["INV-0", "INV-1", "INV-2"]
    assert all(ID.fullmatch(d["uuid"]) for d in payload["acceptedDocuments"])
    assert len({d["uuid"] for d in payload["acceptedDocuments"]}) == 3
    assert payload["rejectedDocuments"] == []
    assert response.headers["correlationId"]


def test_hundred_documents_are_accepted_and_hundred_and_one_refused(client, headers):
    docs = [(invoice(f"B-{n}"), f"B-{n}") for n in range(101)]
    refused = submit(client, headers, docs)
    assert refused.status_code == 400
    assert refused.json()["error"]["code"] == "MaximumSizeExceeded"
    assert submit(client, headers, docs[:100]).status_code == 202


def test_submission_over_5_mb_is_refused(client, headers):
    big = {"documents": [{"format": "JSON", "document": "A" * (5 * 1024 * 1024), "documentHash": "0", "codeNumber": "X"}]}
    response = client.post(SUBMIT, content=json.dumps(big), headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "MaximumSizeExceeded"
    assert "5242880" in response.json()["error"]["message"]


def test_document_over_300_kb_is_rejected_alone(client, headers):
    huge = invoice("HUGE-1", lines=700)
    raw = json.dumps(huge).encode()
    assert len(raw) > 300 * 1024
    response = submit(client, headers, [(huge, "HUGE-1"), (invoice("SMALL-1"), "SMALL-1")])
    assert response.status_code == 202
    body = response.json()
    assert [d["invoiceCodeNumber"] for d in body["acceptedDocuments"]] == ["SMALL-1"]
    rejected = body["rejectedDocuments"][0]
    assert rejected["invoiceCodeNumber"] == "HUGE-1"
    assert rejected["error"]["details"][0]["code"] == "MaximumSizeExceeded"


@pytest.mark.parametrize("body", [
    b"not json",
    b"[]",
    b'{"documents": []}',
    b'{"documents": {}}',
    b'{"docs": []}',
    b'{"documents": [{"format": "JSON", "document": "e30=", "documentHash": "x"}]}',
    b'{"documents": [{"format": "JSON", "document": "e30=", "documentHash": "x", "codeNumber": "1", "extra": 1}]}',
    b'{"documents": [{"format": "PDF", "document": "e30=", "documentHash": "x", "codeNumber": "1"}]}',
    b'{"documents": [{"format": "JSON", "document": 5, "documentHash": "x", "codeNumber": "1"}]}',
    b'{"documents": [], "extra": true}',
])
def test_malformed_envelope_is_bad_structure(client, headers, body):
    response = client.post(SUBMIT, content=body, headers={**headers, "Content-Type": "application/json"})
    assert response.status_code == 400
    error = response.json()["error"]
    assert error["code"] == "BadStructure"
    assert error["errorCode"] == "BadStructure"
    assert response.headers["correlationId"]


def test_wrong_hash_rejects_that_document_in_the_observed_shape(client, headers):
    good = encode_document(invoice("GOOD-1"), "GOOD-1")
    bad = encode_document(invoice("BAD-1"), "BAD-1")
    bad["documentHash"] = hashlib.sha256(b"something else").hexdigest()
    response = client.post(SUBMIT, json={"documents": [good, bad]}, headers=headers)
    assert response.status_code == 202
    body = response.json()
    assert [d["invoiceCodeNumber"] for d in body["acceptedDocuments"]] == ["GOOD-1"]
    (rejected,) = body["rejectedDocuments"]
    assert rejected["invoiceCodeNumber"] == "BAD-1"
    assert rejected["error"]["message"] == "Validation Error"
    assert rejected["error"]["target"] == "BAD-1"
    assert rejected["error"]["details"] == [{"code": None, "message": "Document hash is not valid.",
                                             "target": "documentHash", "propertyPath": None, "details": None}]


def test_all_documents_rejected_gives_a_null_submission_uid(client, headers):
    bad = encode_document(invoice("BAD-2"), "BAD-2")
    bad["documentHash"] = "0" * 64
    response = client.post(SUBMIT, json={"documents": [bad]}, headers=headers)
    assert response.status_code == 202
    assert response.json()["submissionUid"] is None
    assert response.json()["acceptedDocuments"] == []


def test_hash_in_upper_case_hex_or_base64_is_accepted(client, headers):
    upper = encode_document(invoice("UP-1"), "UP-1")
    upper["documentHash"] = upper["documentHash"].upper()
    b64 = encode_document(invoice("B64-1"), "B64-1")
    b64["documentHash"] = base64.b64encode(bytes.fromhex(b64["documentHash"])).decode()
    response = client.post(SUBMIT, json={"documents": [upper, b64]}, headers=headers)
    assert len(response.json()["acceptedDocuments"]) == 2


def test_undecodable_documents_are_rejected(client, headers):
    not_base64 = {"format": "JSON", "document": "***", "documentHash": "0" * 64, "codeNumber": "N1"}
    raw = b"{not json"
    not_json = {"format": "JSON", "document": base64.b64encode(raw).decode(),
                "documentHash": hashlib.sha256(raw).hexdigest(), "codeNumber": "N2"}
    raw2 = b'{"Something": []}'
    no_invoice = {"format": "JSON", "document": base64.b64encode(raw2).decode(),
                  "documentHash": hashlib.sha256(raw2).hexdigest(), "codeNumber": "N3"}
    response = client.post(SUBMIT, json={"documents": [not_base64, not_json, no_invoice]}, headers=headers)
    body = response.json()
    assert body["acceptedDocuments"] == []
    messages = {r["invoiceCodeNumber"]: r["error"]["details"][0]["message"] for r in body["rejectedDocuments"]}
    assert "Base64" in messages["N1"]
    assert "JSON is not valid" in messages["N2"]
    assert messages["N3"].startswith("ArrayItemNotValid: #/Invoice[0]")


def test_identical_payload_within_the_window_is_a_duplicate_submission(client, headers):
    documents = [(invoice("DUP-1"), "DUP-1")]
    body = json.dumps({"documents": [encode_document(invoice("DUP-1"), "DUP-1")]})
    first = client.post(SUBMIT, content=body, headers={**headers, "Content-Type": "application/json"})
    assert first.status_code == 202
    again = client.post(SUBMIT, content=body, headers={**headers, "Content-Type": "application/json"})
    assert again.status_code == 422
    assert again.json()["error"]["code"] == "DuplicateSubmission"
    retry_after = int(again.headers["Retry-After"])
    assert 590 <= retry_after <= 600
    assert again.headers["correlationId"]
    assert documents  # the same documents in a different payload (here: another issue second) are not blocked


def test_duplicate_submission_window_is_configurable():
    window = 2.0  # seconds of margin for the immediate re-send, even on a busy machine
    client = make_client(duplicate_submission_window_seconds=window)
    headers = login(client)
    body = json.dumps({"documents": [encode_document(invoice("DUP-2"), "DUP-2")]})
    content_type = {**headers, "Content-Type": "application/json"}
    assert client.post(SUBMIT, content=body, headers=content_type).status_code == 202
    accepted_by = time.time()  # the simulator took the payload before its answer came back
    again = client.post(SUBMIT, content=body, headers=content_type)
    assert again.status_code == 422
    assert 1 <= int(again.headers["Retry-After"]) <= window
    # Sleeping past the window is safe on any machine: a sleep is never shorter than asked.
    time.sleep(max(0.0, accepted_by + window - time.time()) + 0.1)
    assert client.post(SUBMIT, content=body, headers=content_type).status_code == 202


def test_same_payload_from_another_taxpayer_is_not_a_duplicate_submission(client):
    doc = invoice("X-1", supplier_tin="C10000000010", supplier_brn="201901000001")
    body = json.dumps({"documents": [encode_document(doc, "X-1")]})
    mine = login(client, TAXPAYER_2)
    first = client.post(SUBMIT, content=body, headers={**mine, "Content-Type": "application/json"})
    assert first.status_code == 202
    other = login(client)  # different taxpayer: not a duplicate, but the supplier TIN is not theirs
    second = client.post(SUBMIT, content=body, headers={**other, "Content-Type": "application/json"})
    assert second.status_code == 403


def test_supplier_tin_other_than_the_token_is_incorrect_submitter(client):
    headers = login(client, TAXPAYER_2)
    response = submit(client, headers, [(invoice("MINE-1", supplier_tin="C10000000010"), "MINE-1"),
                                        (invoice("THEIRS-1"), "THEIRS-1")])
    assert response.status_code == 403
    error = response.json()["error"]
    assert error["code"] == "IncorrectSubmitter"
    assert [d["target"] for d in error["details"]] == ["THEIRS-1"]
    assert client.get("/_simulator/stats").json()["documents_by_status"] == {}


def test_self_billed_documents_are_submitted_by_the_buyer(client):
    document = invoice("SB-1", supplier_tin="C25845632020", buyer_tin="C58101234560")
    document["Invoice"][0]["InvoiceTypeCode"][0]["_"] = "11"
    assert submit(client, login(client), [(document, "SB-1")]).status_code == 403
    response = submit(client, login(client, BUYER), [(document, "SB-1")])
    assert response.status_code == 202
    final = wait_final(client, login(client, BUYER), response.json()["submissionUid"])
    assert final["documentSummary"][0]["issuerTin"] == "C58101234560"
    assert final["documentSummary"][0]["status"] == "Valid"


def test_xml_documents_are_validated_like_json(client, headers):
    now = time.gmtime()
    xml = f"""<?xml version="1.0" encoding="UTF-8"?>
<Invoice xmlns="urn:oasis:names:specification:ubl:schema:xsd:Invoice-2"
 xmlns:cac="urn:oasis:names:specification:ubl:schema:xsd:CommonAggregateComponents-2"
 xmlns:cbc="urn:oasis:names:specification:ubl:schema:xsd:CommonBasicComponents-2">
 <cbc:ID>XML-1</cbc:ID><cbc:IssueDate>{time.strftime('%Y-%m-%d', now)}</cbc:IssueDate>
 <cbc:IssueTime>{time.strftime('%H:%M:%SZ', now)}</cbc:IssueTime>
 <cbc:InvoiceTypeCode listVersionID="1.0">01</cbc:InvoiceTypeCode>
 <cbc:DocumentCurrencyCode>MYR</cbc:DocumentCurrencyCode>
 <cac:AccountingSupplierParty><cac:Party>
  <cbc:IndustryClassificationCode name="Wholesale">46510</cbc:IndustryClassificationCode>
  <cac:PartyIdentification><cbc:ID schemeID="TIN">{TAXPAYER_TIN}</cbc:ID></cac:PartyIdentification>
  <cac:PartyIdentification><cbc:ID schemeID="BRN">202001234567</cbc:ID></cac:PartyIdentification>
  <cac:PostalAddress><cbc:CityName>KL</cbc:CityName><cbc:CountrySubentityCode>14</cbc:CountrySubentityCode>
   <cac:AddressLine><cbc:Line>Lot 1</cbc:Line></cac:AddressLine>
   <cac:Country><cbc:IdentificationCode>MYS</cbc:IdentificationCode></cac:Country></cac:PostalAddress>
  <cac:PartyLegalEntity><cbc:RegistrationName>Syarikat Demo</cbc:RegistrationName></cac:PartyLegalEntity>
  <cac:Contact><cbc:Telephone>+60123456789</cbc:Telephone></cac:Contact>
 </cac:Party></cac:AccountingSupplierParty>
 <cac:AccountingCustomerParty><cac:Party>
  <cac:PartyIdentification><cbc:ID schemeID="TIN">EI00000000010</cbc:ID></cac:PartyIdentification>
  <cac:PartyIdentification><cbc:ID schemeID="BRN">NA</cbc:ID></cac:PartyIdentification>
  <cac:PartyLegalEntity><cbc:RegistrationName>General Public</cbc:RegistrationName></cac:PartyLegalEntity>
 </cac:Party></cac:AccountingCustomerParty>
 <cac:TaxTotal><cbc:TaxAmount currencyID="MYR">0</cbc:TaxAmount><cac:TaxSubtotal>
  <cbc:TaxAmount currencyID="MYR">0</cbc:TaxAmount><cac:TaxCategory><cbc:ID>06</cbc:ID></cac:TaxCategory>
 </cac:TaxSubtotal></cac:TaxTotal>
 <cac:LegalMonetaryTotal><cbc:TaxExclusiveAmount currencyID="MYR">10</cbc:TaxExclusiveAmount>
  <cbc:TaxInclusiveAmount currencyID="MYR">10</cbc:TaxInclusiveAmount>
  <cbc:PayableAmount currencyID="MYR">10</cbc:PayableAmount></cac:LegalMonetaryTotal>
 <cac:InvoiceLine><cbc:ID>1</cbc:ID><cbc:LineExtensionAmount currencyID="MYR">10</cbc:LineExtensionAmount>
  <cac:TaxTotal><cbc:TaxAmount currencyID="MYR">0</cbc:TaxAmount><cac:TaxSubtotal>
   <cbc:TaxAmount currencyID="MYR">0</cbc:TaxAmount><cac:TaxCategory><cbc:ID>06</cbc:ID></cac:TaxCategory>
  </cac:TaxSubtotal></cac:TaxTotal>
  <cac:Item><cbc:Description>Thing</cbc:Description><cac:CommodityClassification>
   <cbc:ItemClassificationCode listID="CLASS">022</cbc:ItemClassificationCode></cac:CommodityClassification></cac:Item>
  <cac:Price><cbc:PriceAmount currencyID="MYR">10</cbc:PriceAmount></cac:Price>
  <cac:ItemPriceExtension><cbc:Amount currencyID="MYR">10</cbc:Amount></cac:ItemPriceExtension>
 </cac:InvoiceLine>
</Invoice>""".encode()
    entry = {"format": "XML", "document": base64.b64encode(xml).decode(),
             "documentHash": hashlib.sha256(xml).hexdigest(), "codeNumber": "XML-1"}
    response = client.post(SUBMIT, json={"documents": [entry]}, headers=headers)
    assert response.status_code == 202, response.text
    final = wait_final(client, headers, response.json()["submissionUid"])
    summary = final["documentSummary"][0]
    assert summary["status"] == "Valid", summary
    assert summary["internalId"] == "XML-1"
    raw = client.get(f"/api/v1.0/documents/{summary['uuid']}/raw", headers=headers).json()["document"]
    assert raw == xml.decode()


def test_submission_id_key_can_follow_the_documentation_spelling():
    client = make_client(submission_uid_key="submissionUID")
    response = submit(client, login(client), [(invoice("SP-1"), "SP-1")])
    assert ID.fullmatch(response.json()["submissionUID"])
    assert "submissionUid" not in response.json()
