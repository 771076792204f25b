"""CPU per document of the ledger's hot writes, stage by stage, on a SQLite file ledger:

* intake     — ``Intake.record_fetched``, pages of new invoices;
* claim      — ``Sends.pending_documents`` then ``Sends.claim`` of 100;
* answer     — ``Sends.submission_accepted`` (a 202 naming all 100);
* poll       — ``Polls.record_poll`` (all Valid);
* writeback  — ``WriteBack.unreported_outcomes`` then ``mark_reported``.

Process CPU time (user + sys) per document, so the database's own work counts too. A micro-
benchmark to compare two versions of the ledger, not a test:

    .venv/bin/python benchmarks/ledger_writes.py --documents 10000
    PYTHONPATH=/path/to/other/checkout .venv/bin/python benchmarks/ledger_writes.py --documents 10000
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

if not os.environ.get("PYTHONPATH"):
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from connector_core.contract import DocumentState
from connector_core.ledger import BuiltDocument, DocumentStatusUpdate, FetchedItem, Ledger

#: A realistic size for the stored invoice JSON and built document (a one-line invoice).
INVOICE_JSON = '{"invoice": "' + "x" * 2000 + '"}'
DOCUMENT = '{"Invoice": "' + "y" * 4600 + '"}'


def cpu() -> float:
    return time.process_time()


def run(documents: int, page: int, batch: int) -> dict[str, float]:
    work = Path(tempfile.mkdtemp(prefix="ledger-writes-"))
    ledger = Ledger(f"sqlite:///{work / 'ledger.sqlite'}", sender="bench")
    spent = dict.fromkeys(("intake", "claim", "answer", "poll", "writeback"), 0.0)
    now = datetime.now(UTC).replace(microsecond=0)
    for start in range(0, documents, page):
        items = [
            FetchedItem(
                source_key=f"K{i}", number=f"INV-{i}", fingerprint=f"{i:064d}", invoice_json=INVOICE_JSON,
                document_type="01", issuer_tin="C25845632020",
            )
            for i in range(start, min(documents, start + page))
        ]  # fmt: skip
        t = cpu()
        ledger.intake.record_fetched(source="s", profile="p", items=items)
        spent["intake"] += cpu() - t
    while True:
        t = cpu()
        pending = ledger.sends.pending_documents("p", batch)
        if not pending:
            break
        built = [BuiltDocument(d.id, d.number, d.fingerprint, DOCUMENT, "h" * 64, now, fresh=True) for d in pending]
        claim = ledger.sends.claim(profile="p", built=built)
        spent["claim"] += cpu() - t
        assert claim.submission_id is not None
        t = cpu()
        ledger.sends.submission_accepted(
            claim.submission_id,
            submission_uid=f"SUB{claim.submission_id}",
            accepted=[(d.number, f"U{d.id}") for d in pending],
            rejected=[],
            next_poll_at=now,
        )
        spent["answer"] += cpu() - t
        t = cpu()
        ledger.polls.record_poll(
            claim.submission_id,
            overall_status="Valid",
            updates=[
                DocumentStatusUpdate(uuid=f"U{d.id}", state=DocumentState.VALID, long_id=f"L{d.id}") for d in pending
            ],
            next_poll_at=None,
        )
        spent["poll"] += cpu() - t
    while True:
        t = cpu()
        outcomes = ledger.writeback.unreported_outcomes("s", 500)
        if not outcomes:
            break
        ledger.writeback.mark_reported([doc_id for doc_id, _ in outcomes])
        spent["writeback"] += cpu() - t
    ledger.close()
    per_doc = {k: round(v / documents * 1000, 4) for k, v in spent.items()}
    per_doc["total"] = round(sum(spent.values()) / documents * 1000, 4)
    return per_doc


def main() -> None:
    parser = argparse.ArgumentParser(description="ms of CPU per document of the ledger's hot writes")
    parser.add_argument("--documents", type=int, default=10_000)
    parser.add_argument("--page", type=int, default=1000, help="invoices per record_fetched")
    parser.add_argument("--batch", type=int, default=100, help="documents per submission")
    parser.add_argument("--repeat", type=int, default=3, help="runs; the fastest is kept (a busy machine)")
    args = parser.parse_args()
    runs = [run(args.documents, args.page, args.batch) for _ in range(args.repeat)]
    best = min(runs, key=lambda r: r["total"])
    print(json.dumps({"documents": args.documents, "ms_per_document": best, "load_average": os.getloadavg()}))


if __name__ == "__main__":
    main()
