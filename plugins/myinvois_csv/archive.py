"""Where a read file goes once it is recorded: the archive folder, under a name never taken
twice. Used by the invoice intake (plugin.py) and the cancel-request files (cancels.py)."""

from __future__ import annotations

import logging
import shutil
from pathlib import Path

from myinvois_csv.options import CsvSourceOptions

log = logging.getLogger("myinvois_csv")


def free_archive_path(options: CsvSourceOptions, path: Path, reserved: set[Path]) -> Path:
    target = options.archive / path.name
    counter = 1
    while target.exists() or target in reserved:
        # The same file name dropped again later must not overwrite the earlier one.
        target = options.archive / f"{path.stem}.{counter}{path.suffix}"
        counter += 1
    return target


def archive_file(options: CsvSourceOptions, path: Path, target: Path | None) -> None:
    """Move ``path`` to ``target``, the archive path its error messages already name (every
    scanned file has one; None only if a file was never scanned, then a free name is taken)."""
    options.archive.mkdir(parents=True, exist_ok=True)
    if target is None:
        target = free_archive_path(options, path, set())
    elif target.exists():
        # Taken since the file was read (another connector sharing the archive): keep both.
        target = free_archive_path(options, path, set())
        log.warning("%s was meant for an archive name now taken; archived as %s instead", path.name, target)
    try:
        shutil.move(str(path), target)
        log.info("archived %s to %s", path.name, target)
    except FileNotFoundError:
        pass  # already moved by an earlier call
