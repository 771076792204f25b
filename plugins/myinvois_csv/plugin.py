"""The CSV plugin's hooks.

* fetch: every complete file of the inbox, oldest name first, invoice by invoice;
* recorded: a file whose invoices are all in the ledger moves to the archive folder;
* results: one row per outcome appended to the outbox CSV, skipping outcomes already there,
  so a replay after a crash does not write a row twice; and a PNG of the validation link's QR
  code per valid invoice in the ``qr`` folder beside the outbox.

A file is complete when its writer is done with it: by convention the ERP writes ``NAME.part``
(or ``.tmp``) and renames it when done, and a file is read only once it has not been modified
for ``settle_seconds``. A half-written file read anyway would be refused row by row, or worse,
submitted short of its last invoices.
"""

from __future__ import annotations

import csv
import logging
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from stat import S_ISREG

from connector_core import hookimpl
from connector_core.contract import DocumentOutcome, DocumentState, Source
from connector_core.document.qr import qr_png
from connector_core.model import Invoice, RejectedRecord
from connector_core.settings import ConfigError
from myinvois_csv.archive import archive_file, free_archive_path
from myinvois_csv.cancels import fetch_cancel_requests, is_request_file  # noqa: F401 - the hook, in its own module
from myinvois_csv.check import check_source  # noqa: F401 - a hook of this plugin, kept in its own module
from myinvois_csv.options import CsvSourceOptions
from myinvois_csv.reader import ParsedFile, build_invoices, parse_file

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
    # After Valid: the buyer's or issuer's reason and when it happened (rejection_requested,
    # cancelled), and until when a valid invoice may still be cancelled.
    "reason",
    "event_at",
    "cancellable_until",
)
#: Outboxes created before the three columns above: rows keep that file's columns (warned once).
_old_outboxes_warned: set[Path] = set()
SEED_MARKER = ".myinvois-seeded"
#: Folder beside the outbox that holds a QR code image (PNG) per valid invoice.
QR_FOLDER = "qr"
_UNSAFE_IN_FILE_NAME = re.compile(r"[^A-Za-z0-9._-]")
REUSED_NUMBER_HINT = (
    "if the file holds another invoice that reuses this number, give that invoice its own number in the ERP "
    "and drop it in the inbox again"
)
#: Names a writer gives a file it has not finished; it renames the file when done.
IN_PROGRESS_SUFFIXES = (".part", ".tmp")


class FolderMissing(ConfigError):
    """A folder of the source's options does not exist. One line per folder, naming its key."""

    def __str__(self) -> str:
        return "; ".join(self.problems)


@dataclass
class _InboxFile:
    """What the plugin remembers of one inbox file until it is archived."""

    identity: tuple[int, int]  # size, mtime: a file replaced under the same name is another file
    archive_to: Path | None = None
    keys: set[str] = field(default_factory=set)
    recorded: set[str] = field(default_factory=set)


# Per source: the inbox files of the latest fetch, from which of them each key came, and keys
# recorded that came from no file read yet (the hook may be called before any fetch).
_files: dict[str, dict[Path, _InboxFile]] = {}
_origins: dict[str, dict[str, list[Path]]] = {}
_loose: dict[str, set[str]] = {}
_lock = threading.Lock()


@hookimpl
def register_source_kinds(register):
    register("csv", CsvSourceOptions, description="Invoice CSV files from an inbox folder; results to an outbox CSV")


@hookimpl
def fetch_pending_invoices(source: Source, limit: int):
    options: CsvSourceOptions = source.options  # type: ignore[assignment]
    _check_folders(source.name, options)
    _seed_once(options)
    scans = _scan_complete_files(source.name, options)
    with _lock:
        files = _files[source.name]
        origins: dict[str, list[Path]] = {}
        _origins[source.name] = origins
    for scan in scans:
        if scan.has_no_invoices:
            log.info("%s has a header row and no invoices; archived", scan.shown)
            with _lock:
                entry = files.pop(scan.path)
            archive_file(options, scan.path, entry.archive_to)
    return _yield_invoices(options, [s for s in scans if not s.has_no_invoices], files, origins, limit)


@dataclass
class _Scan:
    """What the first pass over a file keeps: enough to compare invoice numbers across files.

    Not the rows themselves: a backlog of many files would be held in memory all at once. The
    file is parsed again when its turn comes (parsing is a fifth of the cost of building).
    """

    path: Path
    identity: tuple[int, int]
    name: str
    shown: str
    keys: set[str]
    has_no_invoices: bool
    #: invoice number -> ("rows 2, 3", digest of what those rows say)
    numbers: dict[str, tuple[str, bytes]]


def _yield_invoices(
    options: CsvSourceOptions,
    scans: list[_Scan],
    files: dict[Path, _InboxFile],
    origins: dict[str, list[Path]],
    limit: int,
) -> Iterator[Invoice | RejectedRecord]:
    # Keys recorded from a file in an earlier fetch whose file still waits for the rest.
    todo = {scan.path: scan.keys - files[scan.path].recorded for scan in scans}
    conflicts, duplicates = _same_number_in_several_files(scans, todo)
    for scan in scans:
        for key in scan.keys:
            origins.setdefault(key, []).append(scan.path)
    yielded = 0
    for scan in scans:
        parsed = _parse_unchanged(
            scan.path, scan.identity, delimiter=options.delimiter, name=scan.name, shown=scan.shown
        )
        if parsed is None or parsed.source_keys != scan.keys:
            # Rewritten since the first pass (the writer ignored the conventions): next fetch.
            log.info(
                "%s changed while it was read; it is read again once it has not changed for %g s",
                scan.path,
                options.settle_seconds,
            )
            with _lock:
                files.pop(scan.path, None)
            continue
        wanted = todo[scan.path] - duplicates.get(scan.path, set())
        for item in build_invoices(parsed, company=options.company, only=wanted):
            if item.source_key not in wanted:
                continue
            if item.source_key in conflicts:
                # In place of the first file's invoice; the other files' ones are not offered.
                if conflicts[item.source_key] is None:
                    continue
                item, conflicts[item.source_key] = conflicts[item.source_key], None
            if yielded >= limit:
                return
            yielded += 1
            yield item


def _same_number_in_several_files(scans: list[_Scan], todo: dict[Path, set[str]]):
    """An invoice number in several files of one fetch. The same rows twice are one invoice
    (the later copies are noted and not read again); different rows are a conflict that neither
    file wins: one record names them all, so the clerk renumbers one."""
    seen: dict[str, list[tuple[_Scan, str, bytes]]] = {}
    for scan in scans:
        for number, (rows, digest) in scan.numbers.items():
            if number in todo[scan.path]:
                seen.setdefault(number, []).append((scan, rows, digest))
    conflicts: dict[str, RejectedRecord | None] = {}
    duplicates: dict[Path, set[str]] = {}
    for number, places in seen.items():
        if len(places) < 2:
            continue
        where = [f"{scan.shown} {rows}" for scan, rows, _ in places]
        if len({digest for _, _, digest in places}) == 1:
            for scan, _, _ in places[1:]:
                duplicates.setdefault(scan.path, set()).add(number)
            log.info("invoice %s is in %s with the same content; it is read once", number, " and in ".join(where))
            continue
        conflicts[number] = RejectedRecord(
            source_key=number,
            number=number,
            location=" and ".join(where),
            errors=[
                (
                    f"invoice number {number} is used with different content in {len(places)} files: {'; '.join(where)}. "
                    "Neither is sent, since one number must not name two invoices: give one of them its own invoice "
                    "number in the ERP (renumber it), then drop the corrected file in the inbox again"
                )
            ],
        )
    return conflicts, duplicates


def _scan_complete_files(source_name: str, options: CsvSourceOptions) -> list[_Scan]:
    """Scan every complete file of the inbox, and remember each under its archive path."""
    now = time.time()
    with _lock:
        previous = _files.get(source_name, {})
    files: dict[Path, _InboxFile] = {}
    reserved: set[Path] = set()
    candidates = []
    for path in sorted(options.inbox.glob(options.pattern)):
        if path.name.startswith(".") or path.name.lower().endswith(IN_PROGRESS_SUFFIXES):
            continue
        if is_request_file(path, options):
            continue  # the ERP's cancel requests: read by fetch_cancel_requests
        try:
            stat = path.stat()
        except FileNotFoundError:
            continue  # moved away since the folder was listed
        if not S_ISREG(stat.st_mode):
            continue
        age = now - stat.st_mtime
        if options.settle_seconds and age < options.settle_seconds:
            log.info(
                "%s was modified %.1f s ago; it is read once it has not changed for %g s (settle_seconds)",
                path,
                max(age, 0.0),
                options.settle_seconds,
            )
            continue
        identity = (stat.st_size, stat.st_mtime_ns)
        known = previous.get(path)
        if known is not None and known.identity == identity:
            files[path] = known
            reserved.add(known.archive_to)  # type: ignore[arg-type]
        else:
            files[path] = _InboxFile(identity=identity)
        candidates.append(path)
    scans: list[_Scan] = []
    for path in candidates:
        entry = files[path]
        if entry.archive_to is None:
            entry.archive_to = free_archive_path(options, path, reserved)
            reserved.add(entry.archive_to)
        # Shown as the clerk would type it: "config/../var" (a config-relative path) reads as "var".
        shown = os.path.normpath(entry.archive_to)
        parsed = _parse_unchanged(
            path, entry.identity, delimiter=options.delimiter, name=f"{options.inbox.name}/{path.name}", shown=shown
        )
        if parsed is None:
            log.info(
                "%s changed while it was read; it is read again once it has not changed for %g s",
                path,
                options.settle_seconds,
            )
            del files[path]
            continue
        entry.keys = parsed.source_keys
        with _lock:
            entry.recorded |= entry.keys & _loose.get(source_name, set())
        numbers = {number: (group.rows_text(), group.digest()) for number, group in parsed.groups.items()}
        scans.append(_Scan(path, entry.identity, parsed.name, shown, entry.keys, parsed.has_no_invoices, numbers))
    with _lock:
        _files[source_name] = files
    return scans


def _parse_unchanged(
    path: Path, identity: tuple[int, int], *, delimiter: str, name: str, shown: str
) -> ParsedFile | None:
    """The file parsed, or None if it changed (size or modification time) or went away
    before or while it was read."""
    try:
        parsed = parse_file(path, delimiter=delimiter, name=name, shown=shown)
        stat = path.stat()
    except FileNotFoundError:
        return None
    return parsed if (stat.st_size, stat.st_mtime_ns) == identity else None


def _check_folders(source_name: str, options: CsvSourceOptions) -> None:
    """A missing inbox is a wrong path (or an unmounted share), not an empty inbox."""
    problems = []
    key = f"sources.{source_name}.options"

    def missing(folder: Path) -> str:
        return "is a file, not a folder" if folder.exists() else "does not exist"

    if options.seed_dir is not None and not options.seed_dir.is_dir():
        problems.append(
            f"{key}.seed_dir: the folder {options.seed_dir.resolve()} {missing(options.seed_dir)}; correct the path, or remove "
            "seed_dir (it is for demos and trials only)"
        )
    if options.seed_dir is None and not options.inbox.is_dir():
        problems.append(
            f"{key}.inbox: the folder {options.inbox.resolve()} {missing(options.inbox)}; create it (the ERP drops its CSV files "
            "there), or correct the path, or mount the share it is on"
        )
    if problems:
        raise FolderMissing(problems)


@hookimpl
def on_invoices_recorded(source: Source, source_keys: list[str]):
    options: CsvSourceOptions = source.options  # type: ignore[assignment]
    with _lock:
        files = _files.get(source.name, {})
        origins = _origins.get(source.name, {})
        loose = _loose.setdefault(source.name, set())
        for key in source_keys:
            paths = [path for path in origins.get(key, ()) if path in files]
            for path in paths:
                files[path].recorded.add(key)
            if not paths:
                loose.add(key)
        # Forget them once archived: a corrected file dropped in later must be read again
        # (the ledger then tells a new version from an unchanged repeat).
        done = [(path, files.pop(path)) for path, entry in list(files.items()) if entry.keys <= entry.recorded]
        for _, entry in done:
            loose -= entry.keys
    for path, entry in done:
        archive_file(options, path, entry.archive_to)


@hookimpl
def on_submission_result(source: Source, outcomes: list[DocumentOutcome]):
    options: CsvSourceOptions = source.options  # type: ignore[assignment]
    with _lock:  # read-then-append must not interleave with another write-back
        _append_outcomes(options.outbox, outcomes)


def _append_outcomes(outbox: Path, outcomes: list[DocumentOutcome]) -> None:
    outbox.parent.mkdir(parents=True, exist_ok=True)
    header, already = _outbox_header_and_keys(outbox)
    new = [(o, row) for o, row in ((o, _outbox_row(o)) for o in outcomes) if _key(row) not in already]
    if not new:
        return
    new_rows = [o for o, _ in new]
    write_header = header is None
    columns = list(header or OUTBOX_COLUMNS)
    _warn_if_old(outbox, columns)
    with outbox.open("a", encoding="utf-8", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        if write_header:
            writer.writeheader()
        writer.writerows(row for _, row in new)
        fh.flush()
        # The ledger marks these outcomes reported as soon as we return: make them durable first.
        os.fsync(fh.fileno())
    _write_qr_images(outbox.parent / QR_FOLDER, new_rows)


def qr_image_path(qr_folder: Path, outcome: DocumentOutcome) -> Path:
    """Where the QR code of a valid outcome goes: the invoice number (characters a file name
    cannot hold replaced by ``_``) and the uuid, unique even for two document types sharing a
    number."""
    safe_number = _UNSAFE_IN_FILE_NAME.sub("_", outcome.number)
    return qr_folder / f"{safe_number}_{outcome.uuid}.png"


def _write_qr_images(qr_folder: Path, outcomes: list[DocumentOutcome]) -> None:
    """A PNG of the validation link's QR code per valid outcome, beside the outbox; written
    under a temporary name and renamed, so the ERP never picks up half an image."""
    for outcome in outcomes:
        if outcome.state is not DocumentState.VALID or not outcome.validation_link or not outcome.uuid:
            continue
        target = qr_image_path(qr_folder, outcome)
        if target.exists():
            continue
        qr_folder.mkdir(parents=True, exist_ok=True)
        partial = target.with_name(target.name + ".part")
        partial.write_bytes(qr_png(outcome.validation_link))
        os.replace(partial, target)


def _outbox_row(o: DocumentOutcome) -> dict[str, str]:
    return {
        "invoice_number": o.number,
        "version": str(o.version),
        "status": o.state.value,
        "uuid": o.uuid or "",
        "long_id": o.long_id or "",
        "validation_link": o.validation_link or "",
        "submission_uid": o.submission_uid or "",
        "errors": " | ".join(_errors_for_the_clerk(o)),
        "final_at": _iso(o.final_at),
        "reason": o.reason or "",
        "event_at": _iso(o.event_at),
        "cancellable_until": _iso(o.cancellable_until),
    }


def _iso(moment) -> str:
    return moment.isoformat(timespec="seconds") if moment else ""


def _key(row: dict[str, str]) -> tuple[str, str, str, str]:
    """What makes a row new: its invoice, version and status, and its errors (a valid invoice
    whose cancel was refused is written again, with the refusal in ``errors``)."""
    return (row["invoice_number"], row["version"], row["status"], row.get("errors") or "")


def _errors_for_the_clerk(outcome: DocumentOutcome) -> list[str]:
    if outcome.state is DocumentState.CHANGED_AFTER_VALID:
        # In a file the invoice number is the invoice's identity: a new invoice given a used
        # number looks exactly like an edit of the validated one.
        return [*outcome.errors, REUSED_NUMBER_HINT]
    if outcome.cancel_error:
        return [*outcome.errors, *(f"cancel refused: {line}" for line in outcome.cancel_error)]
    return outcome.errors


def _outbox_header_and_keys(outbox: Path) -> tuple[list[str] | None, set[tuple[str, str, str, str]]]:
    """The outbox's header (None for a file not there yet, or empty) and the rows already in it."""
    if not outbox.exists() or outbox.stat().st_size == 0:
        return None, set()
    with outbox.open(encoding="utf-8", newline="") as fh:
        reader = csv.DictReader(fh)
        keys = {_key(row) for row in reader}
        return list(reader.fieldnames or OUTBOX_COLUMNS), keys


def _warn_if_old(outbox: Path, columns: list[str]) -> None:
    missing = [c for c in OUTBOX_COLUMNS if c not in columns]
    if missing and outbox not in _old_outboxes_warned:
        _old_outboxes_warned.add(outbox)
        log.warning(
            "outbox %s was created before the columns %s: its rows keep the file's own columns; to get them, "
            "move the file away (the ERP having read it) and the connector starts a new one with every column",
            outbox,
            ", ".join(missing),
        )


def _seed_once(options: CsvSourceOptions) -> None:
    if options.seed_dir is None:
        return
    options.inbox.mkdir(parents=True, exist_ok=True)
    marker = options.inbox / SEED_MARKER
    if marker.exists():
        return
    # The copies are complete as soon as they are renamed: dated settle_seconds back, so that
    # the same fetch reads them (the demo's first run must not wait for a second cycle).
    settled = time.time() - options.settle_seconds
    for path in sorted(options.seed_dir.glob(options.pattern)):
        target = options.inbox / path.name
        partial = target.with_name(target.name + ".part")
        shutil.copy2(path, partial)
        mtime = min(partial.stat().st_mtime, settled)
        os.utime(partial, (mtime, mtime))
        partial.replace(target)
    marker.write_text("demo files copied; delete this file to copy them again\n", encoding="utf-8")
