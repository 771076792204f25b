"""docs/operations.md "Exit codes" is the contract scripts rely on: its table must list exactly
the codes of ``connector_core.exitcodes.ExitCode``, with the same names and numbers."""

from __future__ import annotations

import re
from pathlib import Path

from connector_core.exitcodes import ExitCode, most_severe

OPERATIONS = Path(__file__).resolve().parent.parent / "docs" / "operations.md"


def _documented_codes() -> list[tuple[int, str]]:
    text = OPERATIONS.read_text(encoding="utf-8")
    match = re.search(r"^## Exit codes\n(.*?)(?=^## )", text, re.MULTILINE | re.DOTALL)
    assert match, "docs/operations.md has no '## Exit codes' section"
    return [(int(number), name) for number, name in re.findall(r"^\| (\d+) \| `([A-Z_]+)` \|", match.group(1), re.MULTILINE)]


def test_exit_code_table_matches_exitcode():
    assert _documented_codes() == [(code.value, code.name) for code in ExitCode]


def test_every_command_has_a_row_in_the_exit_code_table():
    from connector_core.cli import main

    section = OPERATIONS.read_text(encoding="utf-8").split("## Exit codes", 1)[1].split("\n## ", 1)[0]
    for command in main.commands:
        if command == "simulator":
            continue  # the simulator's own server, not the connector
        assert f"| `{command}" in section, f"docs/operations.md 'Exit codes' has no row for the {command!r} command"


def test_most_severe_is_the_highest_code():
    assert most_severe() is ExitCode.OK
    assert most_severe(ExitCode.NEEDS_ATTENTION, ExitCode.SOURCE_UNAVAILABLE, ExitCode.OK) is ExitCode.SOURCE_UNAVAILABLE
