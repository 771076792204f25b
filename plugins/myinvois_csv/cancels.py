"""The CSV plugin's cancel requests: files named like ``cancel-requests*.csv`` in the inbox.

Each row asks to cancel one invoice the connector submitted from this source:

* ``invoice_number``: the invoice's number (a CSV source's key);
* ``reason``: why, 1 to 300 characters; MyInvois shows it to the buyer.

A file is read once it has settled (as invoice files are), its requests are handed to the
connector, and it moves to the archive once the connector recorded all of them. A row that is
not a request (a blank number, a reason missing or too long) is logged naming the file, the
row and the fix, and written to ``NAME.errors.txt`` beside the archived file; the other rows go
on. The answer to each request comes back as an outbox row like any outcome: ``cancelled``, or
the invoice's status again with the reason the cancel was refused in ``errors``.
"""

from __future__ import annotations

import csv
import logging
import time
from collections.abc import Iterator
from pathlib import Path

from connector_core import hookimpl
from connector_core.contract import CancelRequest, Source
from myinvois_csv.archive import archive_file, free_archive_path
from myinvois_csv.options import CsvSourceOptions

log = logging.getLogger("myinvois_csv")

COLUMNS = ("invoice_number", "reason")
MAX_REASON = 300


@hookimpl
def fetch_cancel_requests(source: Source) -> Iterator[CancelRequest]:
    options: CsvSourceOptions = source.options  # type: ignore[assignment]
    if not options.inbox.is_dir():
        return  # fetch_pending_invoices reports a missing inbox
    for path in settled_request_files(options):
        problems: list[str] = []
        yield from _read(path, options, problems)
        # Only reached once the connector recorded every request of the file (it consumes the
        # generator as it records), so archiving cannot lose a request.
        _archive_with_problems(options, path, problems)


def is_request_file(path: Path, options: CsvSourceOptions) -> bool:
    return path.match(options.cancel_requests_pattern)


def settled_request_files(options: CsvSourceOptions) -> list[Path]:
    now = time.time()
    found = []
    for path in sorted(options.inbox.glob(options.cancel_requests_pattern)):
        if path.name.startswith(".") or path.name.lower().endswith((".part", ".tmp")) or not path.is_file():
            continue
        if options.settle_seconds and now - path.stat().st_mtime < options.settle_seconds:
            continue  # still being written
        found.append(path)
    return found


def _read(path: Path, options: CsvSourceOptions, problems: list[str]) -> Iterator[CancelRequest]:
    shown = f"{options.inbox.name}/{path.name}"
    with path.open(encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=options.delimiter)
        missing = [c for c in COLUMNS if c not in (reader.fieldnames or [])]
        if missing:
            header_problem = (
                f"{shown}: no column {', '.join(missing)}; a cancel-requests file has the header "
                f"{options.delimiter.join(COLUMNS)} (found {options.delimiter.join(reader.fieldnames or []) or 'nothing'})"
            )
            log.error("%s", header_problem)
            problems.append(header_problem)
            return
        for row_number, row in enumerate(reader, start=2):
            number = (row.get("invoice_number") or "").strip()
            reason = (row.get("reason") or "").strip()
            where = f"{shown} row {row_number}"
            if not number and not reason:
                continue  # a blank line
            problem: str | None = None
            if not number:
                problem = f"{where}: invoice_number is blank; give the number of the invoice to cancel"
            elif not reason:
                problem = f"{where}: reason is blank for invoice {number}; say why it is cancelled (MyInvois shows it)"
            elif len(reason) > MAX_REASON:
                problem = (
                    f"{where}: reason for invoice {number} has {len(reason)} characters; shorten it to {MAX_REASON}"
                )
            if problem:
                log.error("%s; the row is skipped, drop it in again corrected", problem)
                problems.append(problem)
                continue
            yield CancelRequest(source_key=number, reason=reason, location=where)


def _archive_with_problems(options: CsvSourceOptions, path: Path, problems: list[str]) -> None:
    target = free_archive_path(options, path, set())
    archive_file(options, path, target)
    if problems:
        note = target.with_name(target.name + ".errors.txt")
        note.write_text("\n".join(problems) + "\n", encoding="utf-8")
