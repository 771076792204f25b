"""The demo, shipped inside the package: a configuration and CSV invoices for the simulator.

``myinvois-connector demo FOLDER`` writes them into a folder of the user's choosing, so that an
installed connector (a wheel, no checkout) can run the demo too. The files here are copies of the
repository's ``config/demo.toml`` and ``config/demo/invoices/``, which the Quick start uses from a
checkout; tests/test_packaging.py fails when the two drift apart.
"""

from __future__ import annotations

import tomllib
from dataclasses import dataclass
from importlib import resources
from pathlib import Path

CONFIG_NAME = "demo.toml"
INVOICES_DIR = "invoices"

#: Stands for the demo folder in the packaged demo.toml; replaced by its absolute path, so the
#: written configuration runs from any working directory.
FOLDER_PLACEHOLDER = "@FOLDER@"


@dataclass(frozen=True)
class WrittenDemo:
    config: Path
    invoices: list[Path]
    #: False when the folder already held a demo.toml: nothing was written or overwritten.
    created: bool

    def outbox(self) -> Path:
        """The CSV file the demo's results are appended to, as its configuration says."""
        with self.config.open("rb") as handle:
            return Path(tomllib.load(handle)["sources"]["demo"]["options"]["outbox"])


def write_demo(folder: Path) -> WrittenDemo:
    """Write ``demo.toml`` and ``invoices/*.csv`` into ``folder`` (created if missing).

    A folder that already holds a ``demo.toml`` is left exactly as it is: it may hold the user's
    edits and the demo's ledger, and running the demo again is meant to send nothing new."""
    folder = folder.resolve()
    config = folder / CONFIG_NAME
    invoices_dir = folder / INVOICES_DIR
    if config.exists():
        return WrittenDemo(config=config, invoices=sorted(invoices_dir.glob("*.csv")), created=False)
    invoices_dir.mkdir(parents=True, exist_ok=True)
    written = []
    for source in sorted(_packaged_invoices(), key=lambda s: s.name):
        target = invoices_dir / source.name
        target.write_bytes(source.read_bytes())
        written.append(target)
    template = resources.files(__package__).joinpath(CONFIG_NAME).read_text("utf-8")
    # Written last: its presence is what marks the folder as holding a complete demo.
    config.write_text(template.replace(FOLDER_PLACEHOLDER, _toml_string_body(folder.as_posix())), "utf-8")
    return WrittenDemo(config=config, invoices=written, created=True)


def _packaged_invoices():
    return [
        entry for entry in resources.files(__package__).joinpath(INVOICES_DIR).iterdir() if entry.name.endswith(".csv")
    ]


def _toml_string_body(text: str) -> str:
    """``text`` escaped for use inside a TOML basic string ("...")."""
    return text.replace("\\", "\\\\").replace('"', '\\"')
