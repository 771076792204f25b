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
        assert f"| `{command}" in section, f"docs/operations.md 'Exit codes' has no row for the {command!r} command"


def test_most_severe_is_the_highest_code():
    assert most_severe() is ExitCode.OK
    assert most_severe(ExitCode.NEEDS_ATTENTION, ExitCode.SOURCE_UNAVAILABLE, ExitCode.OK) is ExitCode.SOURCE_UNAVAILABLE


def test_the_simulator_exits_2_when_its_port_is_taken_not_uvicorns_3(tmp_path):
    """uvicorn's own "cannot start" code is 3, the connector's "needs attention"."""
    import socket
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).parent / "myinvois-connector"
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [str(cli), "simulator", "--port", str(port)], capture_output=True, text=True, timeout=120, cwd=tmp_path
        )
    assert result.returncode == 2, result.stderr
    assert f"cannot listen on 127.0.0.1:{port}" in result.stderr


def test_the_simulator_exits_0_when_stopped_with_sigterm_or_ctrl_c(tmp_path):
    import signal
    import subprocess
    import sys
    from pathlib import Path

    cli = Path(sys.executable).parent / "myinvois-connector"
    for stop in (signal.SIGTERM, signal.SIGINT):
        server = subprocess.Popen(
            [str(cli), "simulator", "--port", "0"], stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True, cwd=tmp_path
        )
        try:
            assert "listening on http://127.0.0.1:" in server.stdout.readline()  # bound: signals are handled
            server.send_signal(stop)
            assert server.wait(timeout=60) == 0, stop
        finally:
            if server.poll() is None:
                server.kill()
