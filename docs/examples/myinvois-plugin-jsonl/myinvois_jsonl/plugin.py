"""The hooks of the JSON-lines plugin.

* fetch: every line of the invoices file whose invoice has no valid result yet;
* recorded: remember what the ledger holds, so the next cycle skips it until its result is in;
* results: append one line per outcome to the results file, skipping any already there, so a
  replay after a crash or a failed cycle never writes an outcome twice.
"""

from __future__ import annotations

import json
import os
import threading
from pathlib import Path

from pydantic import ValidationError

from connector_core import hookimpl
from connector_core.contract import DocumentOutcome, Source
from connector_core.model import Invoice, RejectedRecord
from myinvois_jsonl.options import JsonlSourceOptions

# Per source name: keys the ledger recorded whose final result is not written back yet.
_in_flight: dict[str, set[str]] = {}
_lock = threading.Lock()
# The daemon's fetch and poll cycles run on different threads, and both may write results:
# "read what is there, then append" must not interleave.
_results_lock = threading.Lock()


@hookimpl
def register_source_kinds(register):
    register("jsonl", JsonlSourceOptions, description="Invoices from a JSON-lines file; results to another JSON-lines file")


@hookimpl
def fetch_pending_invoices(source: Source, limit: int):
    options: JsonlSourceOptions = source.options  # type: ignore[assignment]
    if not options.invoices.exists():
        return
    done = {key for key, state in _written(options.results) if state in ("valid", "cancelled")}
    with _lock:
        skip = done | _in_flight.get(source.name, set())
    with options.invoices.open(encoding="utf-8") as fh:
        for line_number, line in enumerate(fh, start=1):
            if not line.strip():
                continue
            try:
                invoice = Invoice.model_validate_json(line)
            except ValidationError as exc:
                # One bad line spoils only itself; the clerk is told where and what.
                yield RejectedRecord(
                    source_key=f"{options.invoices.name}#line={line_number}",
                    location=f"{options.invoices.name} line {line_number}",
                    errors=[f"{'.'.join(map(str, e['loc'])) or 'line'}: {e['msg']}" for e in exc.errors(include_url=False)],
                )
                continue
            if invoice.source_key not in skip:
                yield invoice  # the connector stops reading at `limit`


@hookimpl
def on_invoices_recorded(source: Source, source_keys: list[str]):
    with _lock:
        _in_flight.setdefault(source.name, set()).update(source_keys)


@hookimpl
def on_submission_result(source: Source, outcomes: list[DocumentOutcome]):
    options: JsonlSourceOptions = source.options  # type: ignore[assignment]
    options.results.parent.mkdir(parents=True, exist_ok=True)
    with _results_lock:
        already = set(_written_versions(options.results))
        with options.results.open("a", encoding="utf-8") as fh:
            for o in outcomes:
                if (o.source_key, o.version, o.state.value) in already:
                    continue  # written before a crash or a failed cycle: idempotent
                record = {
                    "source_key": o.source_key,
                    "number": o.number,
                    "version": o.version,
                    "state": o.state.value,
                    "uuid": o.uuid,
                    "long_id": o.long_id,
                    "validation_link": o.validation_link,
                    "submission_uid": o.submission_uid,
                    "errors": o.errors,
                    "final_at": o.final_at.isoformat() if o.final_at else None,
                }
                fh.write(json.dumps(record) + "\n")
            fh.flush()
            # The connector marks these outcomes reported as soon as this hook returns.
            os.fsync(fh.fileno())
    with _lock:
        # Invalid or rejected: offer the invoice again, so a corrected line becomes a new version.
        _in_flight.get(source.name, set()).difference_update(o.source_key for o in outcomes)


def _written_versions(results: Path) -> list[tuple[str, int, str]]:
    if not results.exists():
        return []
    out = []
    with results.open(encoding="utf-8") as fh:
        for line in fh:
            if line.strip():
                record = json.loads(line)
                out.append((record["source_key"], record["version"], record["state"]))
    return out


def _written(results: Path) -> list[tuple[str, str]]:
    return [(key, state) for key, _, state in _written_versions(results)]
