"""The CSV plugin's hooks.

* fetch: every file of the inbox, oldest name first, invoice by invoice;
* recorded: a file whose invoices are all in the ledger moves to the archive folder;
* results: one row per outcome appended to the outbox CSV, skipping outcomes already there,
  so a replay after a crash does not write a row twice.
"""

from __future__ import annotations

import csv
import logging
import os
import shutil
import threading
from pathlib import Path

from connector_core import hookimpl
from connector_core.contract import DocumentOutcome, Source
from myinvois_csv.options import CsvSourceOptions
from myinvois_csv.reader import read_file

log = logging.getLogger("myinvois_csv")

OUTBOX_COLUMNS = (
    "invoice_number",
    "version",
    "status",
    "uuid",
    "long_id",
    "validation_link",
    "submission_uid",
    "errors",
    "final_at",
)
SEED_MARKER = ".myinvois-seeded"

# Per source: which invoice keys each inbox file holds, and which of them the ledger recorded.
_files: dict[str, dict[Path, set[str]]] = {}
_recorded: dict[str, set[str]] = {}
_lock = threading.Lock()


@hookimpl
def register_source_kinds(register):
    register("csv", CsvSourceOptions, description="Invoice CSV files from an inbox folder; results to an outbox CSV")


@hookimpl
def fetch_pending_invoices(source: Source, limit: int):
    options: CsvSourceOptions = source.options  # type: ignore[assignment]
    options.inbox.mkdir(parents=True, exist_ok=True)
    _seed_once(options)
    files: dict[Path, set[str]] = {}
    with _lock:
        _files[source.name] = files
        recorded = _recorded.setdefault(source.name, set())
    yielded = 0
    for path in sorted(options.inbox.glob(options.pattern)):
        if not path.is_file():
            continue
        keys = files.setdefault(path, set())
        empty = True
        for item in read_file(path, company=options.company, delimiter=options.delimiter, display_name=f"{options.inbox.name}/{path.name}"):
            empty = False
            keys.add(item.source_key)
            # Recorded already, its file not yet archived (other invoices of it still pending).
            if item.source_key in recorded:
                continue
            if yielded >= limit:
                return
            yielded += 1
            yield item
        if empty:
            _archive(options, path)
            files.pop(path, None)


@hookimpl
def on_invoices_recorded(source: Source, source_keys: list[str]):
    options: CsvSourceOptions = source.options  # type: ignore[assignment]
    with _lock:
        recorded = _recorded.setdefault(source.name, set())
        recorded.update(source_keys)
        files = _files.get(source.name, {})
        done = [path for path, keys in files.items() if keys and keys <= recorded]
        for path in done:
            # Forget them once archived: a corrected file dropped in later must be read again
            # (the ledger then tells a new version from an unchanged repeat).
            recorded.difference_update(files.pop(path))
    for path in done:
        _archive(options, path)


@hookimpl
def on_submission_result(source: Source, outcomes: list[DocumentOutcome]):
    options: CsvSourceOptions = source.options  # type: ignore[assignment]
    with _lock:  # read-then-append must not interleave with another write-back
        _append_outcomes(options.outbox, outcomes)


def _append_outcomes(outbox: Path, outcomes: list[DocumentOutcome]) -> None:
    outbox.parent.mkdir(parents=True, exist_ok=True)
    already = _outbox_keys(outbox)
    new_rows = [o for o in outcomes if (o.number, str(o.version), o.state.value) not in already]
    if not new_rows:
        return
    write_header = not outbox.exists() or outbox.stat().st_size == 0
    with outbox.open("a", encoding="utf-8", newline="") as fh:
        writer = csv.writer(fh)
        if write_header:
            writer.writerow(OUTBOX_COLUMNS)
        for o in new_rows:
            writer.writerow(
                [
                    o.number,
                    o.version,
                    o.state.value,
                    o.uuid or "",
                    o.long_id or "",
                    o.validation_link or "",
                    o.submission_uid or "",
                    " | ".join(o.errors),
                    o.final_at.isoformat(timespec="seconds") if o.final_at else "",
                ]
            )
        fh.flush()
        # The ledger marks these outcomes reported as soon as we return: make them durable first.
        os.fsync(fh.fileno())


def _outbox_keys(outbox: Path) -> set[tuple[str, str, str]]:
    if not outbox.exists():
        return set()
    with outbox.open(encoding="utf-8", newline="") as fh:
        return {(row["invoice_number"], row["version"], row["status"]) for row in csv.DictReader(fh)}


def _archive(options: CsvSourceOptions, path: Path) -> None:
    options.archive.mkdir(parents=True, exist_ok=True)
    target = options.archive / path.name
    counter = 1
    while target.exists():
        # The same file name dropped again later must not overwrite the earlier one.
        target = options.archive / f"{path.stem}.{counter}{path.suffix}"
        counter += 1
    try:
        shutil.move(str(path), target)
        log.info("archived %s to %s", path.name, target)
    except FileNotFoundError:
        pass  # already moved by an earlier call


def _seed_once(options: CsvSourceOptions) -> None:
    if options.seed_dir is None:
        return
    marker = options.inbox / SEED_MARKER
    if marker.exists():
        return
    for path in sorted(options.seed_dir.glob(options.pattern)):
        shutil.copy2(path, options.inbox / path.name)
    marker.write_text("demo files copied; delete this file to copy them again\n", encoding="utf-8")
