"""Submission entries for client tests, made from LHDN's official sample without the document builder.

The API client must not depend on the builder, and neither do its tests: the sample is edited
just enough for the simulator to take it (our demo taxpayer as supplier, issued now, a unique
invoice number), then encoded the way every submission entry is (UTF-8, SHA-256 hex, Base64).
"""

from __future__ import annotations

import base64
import copy
import hashlib
import json
import uuid
from datetime import datetime, timezone

from tests.conftest import load_sample

DEMO_TIN = "C25845632020"
DEMO_BUYER_TIN = "C58101234560"

_SAMPLE = load_sample("1.0-Invoice-Sample.json")


def invoice_bytes(code_number: str, *, supplier_tin: str = DEMO_TIN, buyer_tin: str = DEMO_BUYER_TIN) -> bytes:
    doc = copy.deepcopy(_SAMPLE)
    inv = doc["Invoice"][0]
    now = datetime.now(timezone.utc)
    inv["ID"] = [{"_": code_number}]
    inv["IssueDate"] = [{"_": now.strftime("%Y-%m-%d")}]
    inv["IssueTime"] = [{"_": now.strftime("%H:%M:%SZ")}]
    parties = [
        (inv["AccountingSupplierParty"][0]["Party"][0], supplier_tin),
        (inv["AccountingCustomerParty"][0]["Party"][0], buyer_tin),
        # The sample ships to the buyer; its shipping recipient has a placeholder TIN as well.
        *(
            (delivery_party, buyer_tin)
            for d in inv.get("Delivery", [])
            for delivery_party in d.get("DeliveryParty", [])
        ),
    ]
    for party, tin in parties:
        for ident in party["PartyIdentification"]:
            if ident["ID"][0]["schemeID"] == "TIN":
                ident["ID"][0]["_"] = tin
    return json.dumps(doc, separators=(",", ":"), ensure_ascii=False).encode("utf-8")


def entry(code_number: str | None = None, **kwargs) -> dict:
    code_number = code_number or f"T-{uuid.uuid4().hex[:10].upper()}"
    raw = invoice_bytes(code_number, **kwargs)
    return {
        "format": "JSON",
        "document": base64.b64encode(raw).decode("ascii"),
        "documentHash": hashlib.sha256(raw).hexdigest(),
        "codeNumber": code_number,
    }
