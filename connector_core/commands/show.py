"""``show INVOICE`` and ``history INVOICE``: what happened to one invoice, from the ledger.

``show`` gives every version with its submission, MyInvois's identifiers and validation link,
the errors to correct (each names the field and the fix), whether the document may still be
cancelled, and the timeline; ``history`` the timeline alone. Both only read.
"""

from __future__ import annotations

import json
from typing import Any

import click

from connector_core.commands.invoices import (
    cancel_error_lines,
    cancellation_window,
    iso,
    json_list,
    open_existing_ledger,
    resolve,
)
from connector_core.contract import DocumentState
from connector_core.ledger.database import as_utc
from connector_core.ledger.lookup import InvoiceRef

D = DocumentState


def describe_invoice(ref: InvoiceRef, versions: list[dict[str, Any]], settings) -> dict[str, Any]:
    """Everything ``show --json`` prints: the invoice, each version, and the timeline."""
    return {
        "invoice": ref.number,
        "source": ref.source,
        "source_key": ref.source_key,
        "profile": ref.profile,
        "state": ref.state,
        "version": ref.version,
        "versions": [_version(row, settings) for row in versions],
        "timeline": timeline(versions),
    }


def _version(row: dict[str, Any], settings) -> dict[str, Any]:
    window = cancellation_window(row, settings)
    submission = None
    if row.get("submission_submission_uid") or row.get("submission_state"):
        submission = {
            "submission_uid": row["submission_submission_uid"],
            "state": row["submission_state"],
            "first_sent_at": iso(row["submission_first_sent_at"]),
            "sent_at": iso(row["submission_sent_at"]),
            "accepted_at": iso(row["submission_accepted_at"]),
            "overall_status": row["submission_overall_status"],
        }
    return {
        "version": row["version"],
        "number": row["number"],
        "document_type": row["document_type"],
        "state": row["state"],
        "uuid": row["uuid"],
        "long_id": row["long_id"],
        "validation_link": row["validation_link"],
        "submission": submission,
        "errors": json_list(row["errors"]),
        "error_details": json_list(row["error_details"]),
        "refused_as_batch": bool(row["refused_as_batch"]),
        "fetched_at": iso(row["fetched_at"]),
        "submitted_at": iso(row["submitted_at"]),
        "validated_at": iso(row.get("validated_at")),
        "final_at": iso(row["final_at"]),
        "status_reason": row.get("status_reason"),
        "event_at": iso(row.get("event_at")),
        "cancel_reason": row.get("cancel_reason"),
        "cancel_requested_at": iso(row.get("cancel_requested_at")),
        "cancel_error": cancel_error_lines(row.get("cancel_error")),
        "cancellable_until": iso(window["until"]) if window else None,
        "within_cancellation_window": window["open"] if window else False,
        "reported_at": iso(row["reported_at"]),
        "report_attempts": row["report_attempts"],
        "report_error": row["report_error"],
        "next_report_at": iso(row["next_report_at"]),
    }


def timeline(versions: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Every recorded moment of every version, oldest first."""
    events: list[tuple[Any, int, int, str]] = []

    def add(at, row, order: int, event: str) -> None:
        if at is not None:
            events.append((as_utc(at), row["version"], order, event))

    for row in versions:
        state = row["state"]
        first = row["version"] == 1
        add(row["fetched_at"], row, 0, "fetched from the ERP" if first else "fetched again: a new version")
        if state == D.CHANGED_AFTER_VALID.value:
            add(row["final_at"], row, 1, "changed in the ERP after validation: not sent; the validated document stands")
            continue
        uid = row.get("submission_submission_uid")
        sent = row.get("submission_first_sent_at") or row.get("submission_sent_at")
        if sent is not None and (row["submitted_at"] is not None or row["final_at"] is not None):
            add(sent, row, 1, f"sent to MyInvois in submission {uid or '(no uid yet)'}")
        if row["submitted_at"] is not None:
            add(row["submitted_at"], row, 2, f"accepted for validation as document {row['uuid']}")
        add(row.get("validated_at"), row, 3, "validated by MyInvois")
        if row["final_at"] is not None:
            add(row["final_at"], row, 4, f"final: {_final_words(row)}")
        if row.get("event_at") is not None:
            reason = row.get("status_reason") or "no reason given"
            if state == D.CANCELLED.value:
                add(row["event_at"], row, 5, f"cancelled at MyInvois: {reason}")
            else:
                add(row["event_at"], row, 5, f"rejection requested by the buyer: {reason}")
        if row.get("cancel_requested_at") is not None:
            add(row["cancel_requested_at"], row, 6, f"cancel requested: {row.get('cancel_reason') or ''}".rstrip(": "))
            for advice in cancel_error_lines(row.get("cancel_error")):
                add(row["cancel_requested_at"], row, 7, f"cancel refused: {advice}")
        add(row["reported_at"], row, 8, f"written back to the ERP as {state.replace('_', ' ')}")
        if row["report_attempts"] and row["reported_at"] is None:
            add(
                row["next_report_at"],
                row,
                9,
                f"write-back refused by the ERP {row['report_attempts']} time(s): {row['report_error']}; "
                "offered again at this time",
            )
    events.sort(key=lambda e: (e[0], e[1], e[2]))
    return [{"at": iso(at), "version": version, "event": event} for at, version, _order, event in events]


def _final_words(row: dict[str, Any]) -> str:
    state = row["state"]
    if state == D.REJECTED.value and row["refused_as_batch"]:
        return "rejected with its whole batch (not about its content; `retry` sends it again once the cause is fixed)"
    if state in (D.REJECTION_REQUESTED.value, D.CANCELLING.value, D.CANCELLED.value) and row.get("validated_at"):
        return "valid"
    return state.replace("_", " ")


def print_invoice(data: dict[str, Any]) -> None:
    click.echo(
        f"Invoice {data['invoice']} (source {data['source']}, ERP key {data['source_key']}, profile {data['profile']}): "
        f"{data['state'].replace('_', ' ')}, version {data['version']}"
    )
    for v in data["versions"]:
        click.echo(f"Version {v['version']}: {v['state'].replace('_', ' ')}")
        sub = v["submission"]
        if sub:
            click.echo(
                f"  submission {sub['submission_uid'] or '(no uid)'} ({sub['state'].replace('_', ' ')}): "
                f"sent {sub['first_sent_at'] or sub['sent_at'] or '-'}, accepted {sub['accepted_at'] or '-'}"
            )
        if v["uuid"]:
            click.echo(f"  uuid {v['uuid']}, longId {v['long_id'] or '(not yet)'}")
        if v["validation_link"]:
            click.echo(f"  validation link: {v['validation_link']}")
        if v["cancellable_until"]:
            if v["within_cancellation_window"]:
                click.echo(f"  may still be cancelled until {v['cancellable_until']} (`cancel`)")
            else:
                click.echo(f"  cancellation window closed at {v['cancellable_until']}: issue a credit note instead")
        if v["status_reason"]:
            click.echo(f"  reason given at MyInvois: {v['status_reason']}")
        for advice in v["cancel_error"]:
            click.echo(f"  our cancel was refused: {advice}")
        if v["errors"]:
            click.echo("  errors to correct in the ERP:" if v["state"] != "changed_after_valid" else "  note:")
            for message in v["errors"]:
                click.echo(f"    - {message}")
    click.echo("Timeline:")
    print_timeline(data["timeline"])


def print_timeline(events: list[dict[str, Any]]) -> None:
    for event in events:
        click.echo(f"  {event['at']}  v{event['version']}  {event['event']}")


def _load(env, invoice: str, source: str | None) -> dict[str, Any]:
    settings = env.settings()
    ledger = open_existing_ledger(settings, invoice)
    try:
        ref = resolve(ledger, settings, invoice, source)
        return describe_invoice(ref, ledger.lookup.versions(ref.source, ref.source_key), settings)
    finally:
        ledger.close()


@click.command("show")
@click.argument("invoice")
@click.option("--source", help="The source the invoice came from, when its number is used in several.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON (with MyInvois's error details as sent).")
@click.pass_obj
def show_command(env, invoice: str, source: str | None, as_json: bool) -> None:
    """Everything the ledger knows of one invoice (its number or ERP key): versions, submissions,
    uuid, longId, validation link, errors with their fix, the cancellation window, the timeline."""
    data = _load(env, invoice, source)
    if as_json:
        click.echo(json.dumps(data, indent=2))
    else:
        print_invoice(data)


@click.command("history")
@click.argument("invoice")
@click.option("--source", help="The source the invoice came from, when its number is used in several.")
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@click.pass_obj
def history_command(env, invoice: str, source: str | None, as_json: bool) -> None:
    """The timeline of one invoice (its number or ERP key): each state it reached, and when."""
    data = _load(env, invoice, source)
    if as_json:
        keep = ("invoice", "source", "source_key", "state", "version", "timeline")
        click.echo(json.dumps({k: data[k] for k in keep}, indent=2))
        return
    click.echo(
        f"Invoice {data['invoice']} (source {data['source']}, ERP key {data['source_key']}): "
        f"{data['state'].replace('_', ' ')}"
    )
    print_timeline(data["timeline"])
