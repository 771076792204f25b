"""The Odoo plugin writes what happens after Valid on the invoice itself: the status field of
the same version (``rejection_requested``, ``cancelled``) and an internal note per piece of
news with its reason and time, in the call shapes Odoo accepts (the stand-in enforces them);
a repeat posts nothing more, and a refused cancel's advice reaches the chatter."""

from __future__ import annotations

from dataclasses import replace
from datetime import UTC, datetime

import pytest

from connector_core.contract import DocumentState
from myinvois_odoo import plugin
from tests.odoo_standin import OdooStandin, create_move, seed_demo_company
from tests.plugin_contract import valid_outcome
from tests.plugins.test_odoo_contract import message_text
from tests.plugins.test_odoo_plugin import LOGIN, fetch, odoo_source


@pytest.fixture(params=["16.0", "17.0"])
def odoo(request):
    with OdooStandin(version=request.param) as standin:
        standin.add_user(LOGIN, "odoo-api-key-9d8e7f-secret")
        yield standin


def notes(odoo, move: int) -> list[str]:
    return [message_text(m["body"]) for m in odoo.messages_on("account.move", move)]


@pytest.mark.parametrize("protocol", ["xmlrpc", "jsonrpc"])
def test_a_rejection_request_then_a_cancellation_set_the_state_and_post_a_note_each(odoo, protocol):
    demo = seed_demo_company(odoo)
    move = create_move(odoo, demo)
    source = odoo_source(odoo, protocol)
    (invoice,) = fetch(source)
    valid = replace(valid_outcome(invoice), cancellable_until=datetime(2026, 11, 27, 20, 0, tzinfo=UTC))
    plugin.on_submission_result(source=source, outcomes=[valid])
    assert odoo.get("account.move", move)["x_myinvois_status"] == "valid"
    assert len(notes(odoo, move)) == 1

    requested = replace(
        valid,
        state=DocumentState.REJECTION_REQUESTED,
        reason="Wrong quantity on line 2",
        event_at=datetime(2026, 11, 25, 9, 30, tzinfo=UTC),
    )
    plugin.on_submission_result(source=source, outcomes=[requested])
    plugin.on_submission_result(source=source, outcomes=[requested])  # handed over again after a crash
    record = odoo.get("account.move", move)
    assert (record["x_myinvois_status"], record["x_myinvois_version"], record["x_myinvois_uuid"]) == (
        "rejection_requested",
        1,
        valid.uuid,
    )
    *_, note = notes(odoo, move)
    assert len(notes(odoo, move)) == 2
    assert "requested the rejection" in note and "2026-11-25 09:30 UTC" in note
    assert "Wrong quantity on line 2" in note and "until 2026-11-27 20:00 UTC" in note

    refused = replace(requested, cancel_error=["OperationPeriodOver: issue a credit note instead"])
    plugin.on_submission_result(source=source, outcomes=[refused])
    *_, note = notes(odoo, move)
    assert "refused to cancel" in note and "issue a credit note instead" in note
    assert odoo.get("account.move", move)["x_myinvois_status"] == "rejection_requested"

    cancelled = replace(requested, state=DocumentState.CANCELLED, reason="Cancelled on the portal")
    plugin.on_submission_result(source=source, outcomes=[cancelled])
    assert odoo.get("account.move", move)["x_myinvois_status"] == "cancelled"
    *_, note = notes(odoo, move)
    assert "cancelled" in note and "Cancelled on the portal" in note
    assert len(notes(odoo, move)) == 4
    # Every note went as an internal note, never e-mailed to the customer.
    posts = odoo.object_calls("account.move", "message_post")
    assert {call.model_kwargs["subtype_xmlid"] for call in posts} == {"mail.mt_note"}


def test_the_users_own_cancel_request_is_not_overwritten_by_news_of_the_same_version(odoo):
    demo = seed_demo_company(odoo)
    move = create_move(odoo, demo)
    source = odoo_source(odoo)
    (invoice,) = fetch(source)
    valid = valid_outcome(invoice)
    plugin.on_submission_result(source=source, outcomes=[valid])
    odoo.records["account.move"][move]["x_myinvois_status"] = "cancel_requested"
    plugin.on_submission_result(
        source=source, outcomes=[replace(valid, state=DocumentState.REJECTION_REQUESTED, reason="Wrong price")]
    )
    assert odoo.get("account.move", move)["x_myinvois_status"] == "cancel_requested"
