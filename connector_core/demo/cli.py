"""``myinvois-connector demo FOLDER``: write the demo's configuration and invoices into a folder."""

from __future__ import annotations

import shlex
import sys
from pathlib import Path

import click

from connector_core.exitcodes import ExitCode

from . import write_demo


@click.command("demo")
@click.argument("folder", default="myinvois-demo", type=click.Path(path_type=Path, file_okay=False))
def demo_command(folder: Path) -> None:
    """Write the demo (a configuration and CSV invoices for the built-in simulator) into FOLDER."""
    try:
        demo = write_demo(folder)
    except OSError as exc:
        click.echo(
            f"error: cannot write the demo into {folder}: {exc.strerror or exc}; choose a folder you can write to",
            err=True,
        )
        sys.exit(ExitCode.CONFIG)
    config = shlex.quote(str(folder / demo.config.name))
    if demo.created:
        click.echo(
            f"Demo written to {demo.config.parent}: {demo.config.name} and {len(demo.invoices)} CSV file(s) of invoices."
        )
    else:
        click.echo(f"{demo.config} already exists; left as it is (delete the folder to write the demo afresh).")
    click.echo("Run it against the built-in MyInvois simulator, no credentials needed:")
    click.echo(f"  myinvois-connector --config {config} run --once")
    click.echo(f"The results are appended to {demo.outbox()}.")
