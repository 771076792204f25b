"""Reading pending moves from Odoo page by page, and writing outcomes back into them."""

from __future__ import annotations

import base64
import hashlib
import html
import logging
from collections.abc import Callable, Iterable, Iterator, Sequence
from datetime import UTC, datetime
from typing import Any

from connector_core.contract import DocumentOutcome, DocumentState
from connector_core.document.qr import qr_png
from connector_core.model import Invoice, RejectedRecord
from myinvois_odoo.mapping import DOCUMENT_TYPES, MoveMapper, Related, many2one_id
from myinvois_odoo.options import OdooSourceOptions
from myinvois_odoo.rpc import OdooCallError, OdooClient, OdooError

log = logging.getLogger("myinvois_odoo")

PENDING_STATUS = "pending"
QUEUED_STATUS = "queued"

PARTNER_FIELDS = [
    "name",
    "display_name",
    "street",
    "street2",
    "city",
    "zip",
    "state_id",
    "country_id",
    "phone",
    "mobile",
    "email",
]


class OdooSource:
    def __init__(self, source_name: str, options: OdooSourceOptions) -> None:
        self.name = source_name
        self.options = options
        self.f = options.fields
        self.client = OdooClient(options)
        self.mapper = MoveMapper(options)

    # --- configuration check --------------------------------------------------------------------

    def check_field_mapping(self) -> None:
        """Every mapped field must exist in this Odoo, or the setting that names it is reported."""
        f = self.f
        wanted = {
            "res.partner": [
                "partner_tin_field",
                "partner_id_value_field",
                "partner_id_type_field",
                "partner_sst_field",
                "partner_ttx_field",
                "partner_msic_field",
                "partner_business_activity_field",
            ],
            "product.product": ["product_classification_field"],
            "account.tax": ["tax_type_field"],
            "account.move": [
                "move_status_field",
                "move_uuid_field",
                "move_long_id_field",
                "move_validation_link_field",
                "move_version_field",
            ],
        }
        for model, options in wanted.items():
            names = {getattr(f, option): option for option in options if getattr(f, option)}
            existing = self.client.execute(model, "fields_get", list(names), attributes=["type"])
            for name, option in names.items():
                if name not in existing:
                    raise OdooError(
                        f"source {self.name!r}: option fields.{option} = {name!r}, but Odoo's {model} has no field {name!r}; "
                        f"create it (Settings > Technical > Fields, or a module) or set fields.{option} to the field that holds it"
                    )

    # --- fetch ------------------------------------------------------------------------------------

    def _pending_domain(self, after_id: int) -> list[Any]:
        move_types = ["out_invoice", "out_refund"] + (
            ["in_invoice", "in_refund"] if self.options.include_vendor_bills else []
        )
        status = self.f.move_status_field
        domain: list[Any] = [
            ("state", "=", "posted"),
            ("move_type", "in", move_types),
            "|",
            (status, "=", False),
            (status, "=", PENDING_STATUS),
            ("id", ">", after_id),
        ]
        if self.options.company_ids:
            domain.append(("company_id", "in", list(self.options.company_ids)))
        return domain

    def pending(self, limit: int) -> Iterator[Invoice | RejectedRecord]:
        self.client.authenticate()
        self.check_field_mapping()
        handed_out, after_id = 0, 0
        while handed_out < limit:
            page_size = min(self.options.page_size, limit - handed_out)
            moves = self.client.execute(
                "account.move",
                "search_read",
                self._pending_domain(after_id),
                fields=[
                    "name",
                    "move_type",
                    "invoice_date",
                    "partner_id",
                    "company_id",
                    "currency_id",
                    "reversed_entry_id",
                    "ref",
                ],
                limit=page_size,
                order="id asc",
            )
            if not moves:
                return
            related = self._related(moves)
            for move in moves:
                yield self.mapper.invoice(move, related)
                handed_out += 1
            if len(moves) < page_size:
                return
            after_id = moves[-1]["id"]

    def _read(self, model: str, ids: set[int], fields: list[str]) -> dict[int, dict[str, Any]]:
        if not ids:
            return {}
        return {
            row["id"]: row for row in self.client.execute(model, "read", sorted(ids), [name for name in fields if name])
        }

    def _related(self, moves: list[dict[str, Any]]) -> Related:
        f = self.f
        related = Related()
        move_ids = [move["id"] for move in moves]
        for line in self.client.execute(
            "account.move.line",
            "search_read",
            [("move_id", "in", move_ids), ("display_type", "=", "product")],
            fields=[
                "move_id",
                "name",
                "product_id",
                "quantity",
                "price_unit",
                "discount",
                "price_subtotal",
                "price_total",
                "tax_ids",
            ],
            order="move_id asc, sequence asc, id asc",
        ):
            related.lines.setdefault(many2one_id(line["move_id"]) or 0, []).append(line)

        company_ids = _ids(many2one_id(move.get("company_id")) for move in moves)
        for company in self._read("res.company", company_ids, ["partner_id"]).values():
            related.company_partner[company["id"]] = many2one_id(company.get("partner_id")) or 0
        partner_ids = _ids(many2one_id(move.get("partner_id")) for move in moves) | _ids(
            related.company_partner.values()
        )
        partner_fields = [
            *PARTNER_FIELDS,
            f.partner_tin_field,
            f.partner_id_value_field,
            f.partner_id_type_field,
            f.partner_sst_field,
            f.partner_ttx_field,
            f.partner_msic_field,
            f.partner_business_activity_field,
        ]
        related.partners = self._read("res.partner", partner_ids, partner_fields)
        country_ids = _ids(many2one_id(p.get("country_id")) for p in related.partners.values())
        related.countries = self._read("res.country", country_ids, ["name", "code"])

        lines = [line for group in related.lines.values() for line in group]
        related.products = self._read(
            "product.product",
            _ids(many2one_id(line.get("product_id")) for line in lines),
            ["display_name", f.product_classification_field],
        )
        related.taxes = self._read(
            "account.tax",
            {tax for line in lines for tax in line.get("tax_ids") or []},
            ["name", "amount", "amount_type", f.tax_type_field],
        )
        foreign = _ids(
            many2one_id(m.get("currency_id")) for m in moves if (m.get("currency_id") or [0, "MYR"])[1] != "MYR"
        )
        related.currencies = self._read("res.currency", foreign, ["name", "rate"])
        originals = _ids(many2one_id(m.get("reversed_entry_id")) for m in moves)
        related.originals = self._read("account.move", originals, ["name", f.move_uuid_field])
        return related

    # --- recorded -----------------------------------------------------------------------------------

    def mark_queued(self, source_keys: Sequence[str]) -> None:
        ids = [int(key) for key in source_keys if key.isdigit()]
        if not ids:
            return
        self.client.authenticate()
        status = self.f.move_status_field
        still_pending = self.client.execute(
            "account.move", "search", [("id", "in", ids), "|", (status, "=", False), (status, "=", PENDING_STATUS)]
        )
        if still_pending:
            self._write(still_pending, {status: QUEUED_STATUS})

    def _write(self, ids: list[int], values: dict[str, Any]) -> None:
        try:
            self.client.execute("account.move", "write", ids, values)
        except OdooCallError as exc:
            if exc.is_access_error:
                raise OdooError(
                    f"source {self.name!r}: Odoo user {self.options.login!r} may not modify invoices ({exc.odoo_message.splitlines()[0]}); "
                    "give the user the Accounting / Billing rights; the next cycle tries again"
                ) from None
            raise

    # --- results ----------------------------------------------------------------------------------

    def write_outcomes(self, outcomes: Sequence[DocumentOutcome]) -> None:
        f = self.f
        by_id = {int(o.source_key): o for o in outcomes if o.source_key.isdigit()}
        if not by_id:
            return
        self.client.authenticate()
        existing = {
            row["id"]: row
            for row in self.client.execute(
                "account.move",
                "search_read",
                [("id", "in", sorted(by_id))],
                fields=["name", f.move_version_field, f.move_status_field],
            )
        }
        for move_id, outcome in sorted(by_id.items()):
            move = existing.get(move_id)
            if move is None:
                log.warning(
                    "source %r: account.move %s (%s) no longer exists; outcome not written",
                    self.name,
                    move_id,
                    outcome.number,
                )
                continue
            stored_version = int(move.get(f.move_version_field) or 0)
            if stored_version > outcome.version:
                continue  # a newer version's outcome is already there
            if stored_version < outcome.version or _moves_on_after_valid(move.get(f.move_status_field), outcome):
                values: dict[str, Any] = {
                    f.move_status_field: outcome.state.value,
                    f.move_uuid_field: outcome.uuid or False,
                    f.move_version_field: outcome.version,
                }
                if f.move_long_id_field:
                    values[f.move_long_id_field] = outcome.long_id or False
                if f.move_validation_link_field:
                    values[f.move_validation_link_field] = outcome.validation_link or False
                self._write([move_id], values)
            # The chatter message is posted once per version: a retry after a crash between the
            # write and the post finds no message and posts it; a plain repeat finds it and stops.
            marker = chatter_marker(outcome)
            already = self.client.execute(
                "mail.message",
                "search_count",
                [("model", "=", "account.move"), ("res_id", "=", move_id), ("body", "ilike", marker)],
            )
            if not already:
                kwargs: dict[str, Any] = {
                    "body": chatter_body(outcome),
                    "message_type": "comment",
                    "subtype_xmlid": "mail.mt_note",
                }
                if self.client.major_version >= 17:
                    kwargs["body_is_html"] = True  # Odoo 17+ would otherwise show the markup as text
                self.client.execute("account.move", "message_post", [move_id], **kwargs)
            if outcome.state is DocumentState.VALID and outcome.validation_link and outcome.uuid:
                self._attach_qr_code(move_id, outcome)

    def _attach_qr_code(self, move_id: int, outcome: DocumentOutcome) -> None:
        """The QR code of the validation link as a PNG attached to the invoice, for its print
        layout or the e-mail to the customer. Once per document: a repeat finds it by name."""
        name = qr_attachment_name(outcome)
        already = self.client.execute(
            "ir.attachment",
            "search_count",
            [("res_model", "=", "account.move"), ("res_id", "=", move_id), ("name", "=", name)],
        )
        if already:
            return
        values = {
            "name": name,
            "type": "binary",
            # Binary fields travel as Base64 text over Odoo's RPC.
            "datas": base64.b64encode(qr_png(outcome.validation_link or "")).decode("ascii"),
            "res_model": "account.move",
            "res_id": move_id,
            "mimetype": "image/png",
        }
        try:
            self.client.execute("ir.attachment", "create", values)
        except OdooCallError as exc:
            if exc.is_access_error:
                raise OdooError(
                    f"source {self.name!r}: Odoo user {self.options.login!r} may not attach files to invoices "
                    f"({exc.odoo_message.splitlines()[0]}); give the user the Accounting / Billing rights; "
                    "the next cycle tries again"
                ) from None
            raise


#: Outcomes of a validated version: after Valid, the same version moves on to them.
AFTER_VALID_STATES = frozenset({DocumentState.VALID, DocumentState.REJECTION_REQUESTED, DocumentState.CANCELLED})
#: Stored statuses such an outcome is written over: those, and a cancel the connector took
#: (``cancelling``). Not ``cancel_requested``: the user's request waits until the connector reads it.
VALIDATED_STATUSES = frozenset({*(s.value for s in AFTER_VALID_STATES), "cancelling"})


def _moves_on_after_valid(stored_status: Any, outcome: DocumentOutcome) -> bool:
    """The same version's news after Valid (a rejection request, a cancellation, a cancel
    refused) is written over its validated status; any other same-version outcome is a repeat."""
    return outcome.state in AFTER_VALID_STATES and stored_status in VALIDATED_STATUSES


def qr_attachment_name(outcome: DocumentOutcome) -> str:
    """The attachment's file name: the invoice number and MyInvois's uuid (a version sent
    again after a cancellation is another document, with its own code)."""
    return f"MyInvois QR {outcome.number} {outcome.uuid}.png"


def chatter_marker(outcome: DocumentOutcome) -> str:
    """What identifies the note of one outcome. After Valid the same version gets a note per
    piece of news (rejection requested, cancelled, a refused cancel), each its own marker."""
    marker = f"MyInvois ref {outcome.source_key}-v{outcome.version}"
    if outcome.state in (DocumentState.REJECTION_REQUESTED, DocumentState.CANCELLED):
        marker += f" {outcome.state.value}"
    if outcome.cancel_error:
        refusal = hashlib.sha256("\n".join(outcome.cancel_error).encode("utf-8")).hexdigest()[:8]
        marker += f" cancel-refused-{refusal}"
    return marker


def chatter_body(outcome: DocumentOutcome) -> str:
    """An internal note in words a clerk can act on (never e-mailed: subtype mail.mt_note)."""

    def e(value: str) -> str:
        return html.escape(value, quote=False)

    marker = f"<p><small>{e(chatter_marker(outcome))}</small></p>"
    if outcome.cancel_error:
        advice = "".join(f"<li>{e(line)}</li>" for line in outcome.cancel_error)
        return (
            "<p>MyInvois <b>refused to cancel</b> this document; it is still a valid e-invoice.</p>"
            f"<ul>{advice}</ul>" + _cancellable(outcome, e) + marker
        )
    if outcome.state is DocumentState.REJECTION_REQUESTED:
        when = f" on {e(_moment(outcome.event_at))}" if outcome.event_at else ""
        return (
            f"<p>The buyer <b>requested the rejection</b> of this e-invoice in MyInvois{when}.</p>"
            f"<p>Reason given: {e(outcome.reason or 'none')}</p>"
            "<p>It stays valid unless you cancel it: agree with the buyer, then cancel it and issue a corrected "
            "invoice, or keep it.</p>" + _cancellable(outcome, e) + marker
        )
    if outcome.state is DocumentState.CANCELLED and (outcome.reason or outcome.event_at):
        when = f" on {e(_moment(outcome.event_at))}" if outcome.event_at else ""
        return (
            f"<p>This document was <b>cancelled</b> in MyInvois{when}. It is no longer a valid e-invoice.</p>"
            f"<p>Reason given: {e(outcome.reason or 'none')}</p>" + marker
        )
    if outcome.state is DocumentState.VALID:
        link = e(outcome.validation_link or "")
        href = html.escape(outcome.validation_link or "", quote=True)
        return (
            f"<p>MyInvois <b>validated</b> this document.</p>"
            f'<p>UUID: {e(outcome.uuid or "")}<br/>Validation link: <a href="{href}">{link}</a></p>'
            "<p>Print the validation link (or its QR code) on the document you send to the customer.</p>" + marker
        )
    if outcome.state is DocumentState.CANCELLED:
        return "<p>This document was <b>cancelled</b> in MyInvois. It is no longer a valid e-invoice.</p>" + marker
    if outcome.state is DocumentState.CHANGED_AFTER_VALID:
        problems = "".join(f"<li>{e(error)}</li>" for error in outcome.errors)
        return (
            "<p>This document was <b>changed after MyInvois validated it</b>; the change was <b>not sent</b>. "
            f"The validated e-invoice (UUID {e(outcome.uuid or '')}) stands.</p>"
            f"<ul>{problems}</ul>" + marker
        )
    if outcome.state is DocumentState.LOCALLY_INVALID:
        headline = "<p>The connector did <b>not send</b> this document to MyInvois: some data is missing or wrong.</p>"
    else:
        headline = f"<p>MyInvois <b>refused</b> this document ({e(outcome.state.value)}).</p>"
    problems = "".join(f"<li>{e(error)}</li>" for error in outcome.errors) or "<li>MyInvois gave no reason.</li>"
    return (
        headline
        + f"<p>What to fix:</p><ul>{problems}</ul>"
        + "<p>Correct the document (reset to draft, fix, confirm), then set the MyInvois status field to "
        "<i>pending</i> (or empty): the connector sends it again.</p>" + marker
    )


def _moment(at: datetime | None) -> str:
    return at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC") if at else ""


def _cancellable(outcome: DocumentOutcome, e: Callable[[str], str]) -> str:
    if not outcome.cancellable_until:
        return ""
    return f"<p>It can be cancelled in MyInvois until {e(_moment(outcome.cancellable_until))}.</p>"


__all__ = ["DOCUMENT_TYPES", "OdooSource"]


def _ids(values: Iterable[int | None]) -> set[int]:
    """Record ids to read: an unset many2one (None, or 0 where we defaulted it) is no record."""
    return {value for value in values if value}
