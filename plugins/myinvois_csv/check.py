"""The CSV plugin's ``check_source`` hook, for ``myinvois-connector doctor``.

It reads what a cycle would read and changes nothing: no file is moved, copied or created, so
the folders a first run would create are reported as "created on the first run" when their
parent allows it.
"""

from __future__ import annotations

import os
from pathlib import Path

from connector_core import hookimpl
from connector_core.contract import Source, SourceCheck
from connector_core.model import Invoice
from myinvois_csv.options import CsvSourceOptions
from myinvois_csv.reader import read_file


@hookimpl
def check_source(source: Source) -> list[SourceCheck]:
    options: CsvSourceOptions = source.options  # type: ignore[assignment]
    return [
        _inbox(options),
        _folder("archive", options.archive, "processed files are moved"),
        _outbox(options.outbox),
        *([_seed(options.seed_dir, options.pattern)] if options.seed_dir is not None else []),
    ]


def _inbox(options: CsvSourceOptions) -> SourceCheck:
    inbox = options.inbox
    if not inbox.exists():
        if options.seed_dir is None:
            # As a fetch does: a missing inbox is a wrong path or an unmounted share, not an empty inbox.
            return SourceCheck.failed(
                f"option inbox: the folder {inbox} does not exist; create it (the ERP drops its CSV files there), "
                "or correct the path, or mount the share it is on"
            )
        verdict = _folder("inbox", inbox, "invoice files are read")
        return (
            verdict
            if verdict.status == "fail"
            else SourceCheck.passed(f"inbox {inbox} does not exist yet; the first run creates it from seed_dir")
        )
    if not inbox.is_dir():
        return SourceCheck.failed(
            f"option inbox: {inbox} is not a folder; set inbox to the folder the ERP drops CSV files into"
        )
    if not os.access(inbox, os.R_OK | os.X_OK):
        return SourceCheck.failed(
            f"option inbox: {inbox} cannot be read by this user; give it read access to the folder"
        )
    files = sorted(path for path in inbox.glob(options.pattern) if path.is_file())
    if not files:
        return SourceCheck.passed(f"inbox {inbox} is readable; no file matches {options.pattern!r} yet")
    first = files[0]
    try:
        item = next(iter(read_file(first, company=options.company, delimiter=options.delimiter)), None)
    except OSError as exc:
        return SourceCheck.failed(
            f"option inbox: cannot read {first}: {exc.strerror or exc}; give this user read access to it"
        )
    if item is None:
        read = "it holds no invoice"
    elif isinstance(item, Invoice):
        read = f"its first invoice {item.number} reads"
    else:
        read = f"its first record is refused: {'; '.join(item.errors)[:300]}"
    return SourceCheck.passed(f"inbox {inbox} is readable: {len(files)} file(s) waiting; read {first.name}: {read}")


def _nearest_existing(path: Path) -> Path:
    for candidate in (path, *path.parents):
        if candidate.exists():
            return candidate
    return Path(".")


def _folder(option: str, folder: Path, what: str) -> SourceCheck:
    if folder.exists():
        if not folder.is_dir():
            return SourceCheck.failed(
                f"option {option}: {folder} is not a folder; set {option} to the folder where {what}"
            )
        if not os.access(folder, os.W_OK | os.X_OK):
            return SourceCheck.failed(f"option {option}: this user cannot write to {folder}; give it write access")
        return SourceCheck.passed(f"{option} {folder} is writable")
    parent = _nearest_existing(folder)
    if parent.is_dir() and os.access(parent, os.W_OK | os.X_OK):
        return SourceCheck.passed(f"{option} {folder} does not exist yet; the first run creates it in {parent}")
    return SourceCheck.failed(
        f"option {option}: {folder} does not exist and cannot be created ({parent} is not a writable folder); "
        "create it or give this user write access"
    )


def _outbox(outbox: Path) -> SourceCheck:
    if outbox.exists():
        if not outbox.is_file():
            return SourceCheck.failed(
                f"option outbox: {outbox} is not a file; set outbox to the CSV file results are appended to"
            )
        if not os.access(outbox, os.W_OK):
            return SourceCheck.failed(
                f"option outbox: this user cannot write to {outbox}; give it write access (results go there)"
            )
        return SourceCheck.passed(f"outbox {outbox} is writable")
    folder = _folder("outbox", outbox.parent, "results are written")
    if folder.status == "fail":
        return folder
    return SourceCheck.passed(f"outbox {outbox} does not exist yet; the first result creates it")


def _seed(seed_dir: Path, pattern: str) -> SourceCheck:
    if not seed_dir.is_dir() or not os.access(seed_dir, os.R_OK | os.X_OK):
        return SourceCheck.failed(
            f"option seed_dir: {seed_dir} is not a readable folder; fix the path or remove seed_dir"
        )
    return SourceCheck.passed(f"seed_dir {seed_dir}: {len(list(seed_dir.glob(pattern)))} demo file(s)")
