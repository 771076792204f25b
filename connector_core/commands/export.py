"""``export --since DATE --until DATE --format csv|json``: one row per invoice that reached its
final state in a period, for audits.

An invoice is exported once, as its latest version, when that version became final in the
period: a corrected invoice shows its valid correction, not its refused first try. Rows are
written as the ledger hands them over (:meth:`Lookup.final_between` streams), so a year of
invoices never sits in memory.
"""

from __future__ import annotations

import csv
import json
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path
from typing import IO, Any

import click

from connector_core.commands.invoices import describe_url, iso, json_list, open_ledger

#: The export's columns, in order (CSV header, JSON keys).
COLUMNS = (
    "source",
    "source_key",
    "invoice_number",
    "version",
    "document_type",
    "state",
    "uuid",
    "long_id",
    "validation_link",
    "submission_uid",
    "validated_at",
    "final_at",
    "status_reason",
    "event_at",
    "errors",
)


def export_row(row: dict[str, Any]) -> dict[str, Any]:
    return {
        "source": row["source"],
        "source_key": row["source_key"],
        "invoice_number": row["number"],
        "version": row["version"],
        "document_type": row["document_type"],
        "state": row["state"],
        "uuid": row["uuid"],
        "long_id": row["long_id"],
        "validation_link": row["validation_link"],
        "submission_uid": row["submission_submission_uid"],
        "validated_at": iso(row.get("validated_at")),
        "final_at": iso(row["final_at"]),
        "status_reason": row.get("status_reason"),
        "event_at": iso(row.get("event_at")),
        "errors": [str(e) for e in json_list(row["errors"])],
    }


def parse_moment(value: str, *, end_of_day: bool) -> datetime:
    """A date (the whole day, in UTC) or an ISO date and time (UTC when it names no zone)."""
    try:
        day = date.fromisoformat(value)
    except ValueError:
        pass
    else:
        moment = datetime.combine(day, time(0), tzinfo=UTC)
        return moment + timedelta(days=1) if end_of_day else moment
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is neither a date (2026-11-30) nor a date and time (2026-11-30T17:00:00+08:00)"
        ) from None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def write_csv(out: IO[str], rows: Iterator[dict[str, Any]]) -> int:
    writer = csv.DictWriter(out, fieldnames=COLUMNS)
    writer.writeheader()
    count = 0
    for row in rows:
        writer.writerow({**row, "errors": " | ".join(row["errors"])})
        count += 1
    return count


def write_json(out: IO[str], rows: Iterator[dict[str, Any]]) -> int:
    """A JSON array written one element at a time."""
    count = 0
    out.write("[")
    for row in rows:
        out.write(",\n  " if count else "\n  ")
        out.write(json.dumps(row, ensure_ascii=False))
        count += 1
    out.write("\n]\n" if count else "]\n")
    return count


@contextmanager
def _opened(output: Path | None):
    if output is None:
        yield sys.stdout
        return
    output.parent.mkdir(parents=True, exist_ok=True)
    with output.open("w", encoding="utf-8", newline="") as handle:
        yield handle


@click.command("export")
@click.option("--since", "since_text", required=True, metavar="DATE", help="First day (UTC), or an ISO date and time.")
@click.option(
    "--until",
    "until_text",
    required=True,
    metavar="DATE",
    help="Last day, included (UTC), or an ISO date and time (excluded).",
)
@click.option("--format", "fmt", type=click.Choice(["csv", "json"]), default="csv", show_default=True)
@click.option(
    "--output", type=click.Path(path_type=Path, dir_okay=False), help="Write to FILE instead of standard output."
)
@click.pass_obj
def export_command(env, since_text: str, until_text: str, fmt: str, output: Path | None) -> None:
    """One row per invoice whose latest version became final in the period: source, key, number,
    state, uuid, longId, validation link, validated and final times, errors. For audits."""
    since = parse_moment(since_text, end_of_day=False)
    until = parse_moment(until_text, end_of_day=True)
    if until <= since:
        raise click.BadParameter(f"--until {until_text} is not after --since {since_text}")
    settings = env.settings()
    ledger = open_ledger(settings)
    write = write_csv if fmt == "csv" else write_json
    if ledger is None:
        click.echo(f"No ledger yet at {describe_url(settings.ledger_url())}: nothing to export.", err=True)
        with _opened(output) as out:
            write(out, iter(()))
        return
    try:
        with _opened(output) as out:
            count = write(out, (export_row(row) for row in ledger.lookup.final_between(since, until)))
    finally:
        ledger.close()
    click.echo(
        f"{count} invoice(s) final between {iso(since)} and {iso(until)} exported"
        + (f" to {output}" if output else ""),
        err=True,
    )
