"""The Odoo plugin's cancel requests: a state and a reason field on the invoice.

A user (or an automated action) sets the invoice's status field (``fields.move_status_field``,
``x_myinvois_status`` by default) to ``cancel_requested`` and writes why in
``fields.move_cancel_reason_field`` (``x_myinvois_cancel_reason``). Each fetch cycle reads such
invoices; once the connector recorded their requests the status becomes ``cancelling``, and the
outcome comes back through the ordinary write-back: ``cancelled``, or the invoice's status again
with the reason the cancel was refused in its chatter note.

The reason field is optional: mapped to ``""``, or missing in this Odoo (said once in the log),
the source offers no cancel requests and nothing else changes.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator

from connector_core.contract import CancelRequest
from myinvois_odoo.source import OdooSource

log = logging.getLogger("myinvois_odoo")

REQUESTED_STATUS = "cancel_requested"
TAKEN_STATUS = "cancelling"
#: Requests read per cycle; more wait for the next one.
PAGE = 200

#: Sources already told that their Odoo has no reason field (the source object is made per call).
_told: set[str] = set()
_lock = threading.Lock()


def cancel_requests(odoo: OdooSource) -> Iterator[CancelRequest]:
    f = odoo.f
    reason_field = f.move_cancel_reason_field
    if not reason_field:
        return
    odoo.client.authenticate()
    existing = odoo.client.execute("account.move", "fields_get", [reason_field], attributes=["type"])
    if reason_field not in existing:
        with _lock:
            first = odoo.name not in _told
            _told.add(odoo.name)
        if first:
            log.warning(
                "source %r: Odoo's account.move has no field %r (option fields.move_cancel_reason_field), so the ERP "
                'cannot ask to cancel invoices; create it, or set the option to "" to say so',
                odoo.name,
                reason_field,
            )
        return
    moves = odoo.client.execute(
        "account.move",
        "search_read",
        [(f.move_status_field, "=", REQUESTED_STATUS)],
        fields=["name", reason_field],
        limit=PAGE,
        order="id asc",
    )
    for move in moves:
        yield CancelRequest(
            source_key=str(move["id"]),
            reason=move.get(reason_field) or "",
            location=f"account.move {move['id']} ({move.get('name') or 'no number'})",
        )
    if not moves:
        return
    # Only reached once the connector recorded every request above.
    ids = [move["id"] for move in moves]
    still = odoo.client.execute(
        "account.move", "search", [("id", "in", ids), (f.move_status_field, "=", REQUESTED_STATUS)]
    )
    if still:
        odoo._write(still, {f.move_status_field: TAKEN_STATUS})
