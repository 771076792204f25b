"""The Odoo plugin attaches the QR code of a valid invoice's validation link to the invoice
(``ir.attachment`` created over RPC, in the shape Odoo accepts), once, and the stand-in holds
a PNG that decodes to the link."""

from __future__ import annotations

import base64

import pytest

from myinvois_odoo import plugin
from myinvois_odoo.rpc import OdooCallError, OdooClient
from tests.odoo_standin import OdooStandin, create_move, seed_demo_company
from tests.plugin_contract import invalid_outcome, valid_outcome
from tests.plugins.test_odoo_plugin import LOGIN, fetch, odoo_source
from tests.qr_decode import decode_qr


@pytest.fixture()
def odoo():
    with OdooStandin(version="17.0") as standin:
        standin.add_user(LOGIN, "odoo-api-key-9d8e7f-secret")
        yield standin


@pytest.mark.parametrize("protocol", ["xmlrpc", "jsonrpc"])
def test_a_valid_invoice_gets_its_qr_code_attached_once(odoo, protocol):
    demo = seed_demo_company(odoo)
    valid_move, refused_move = create_move(odoo, demo), create_move(odoo, demo)
    source = odoo_source(odoo, protocol)
    first, second = fetch(source)
    outcome = valid_outcome(first)
    plugin.on_submission_result(source=source, outcomes=[outcome, invalid_outcome(second)])

    (create,) = odoo.object_calls("ir.attachment", "create")
    (values,) = create.model_args
    assert values["res_model"] == "account.move" and values["res_id"] == valid_move
    assert values["type"] == "binary" and values["mimetype"] == "image/png"
    assert values["name"] == f"MyInvois QR {outcome.number} {outcome.uuid}.png"
    (attachment,) = odoo.records["ir.attachment"].values()
    assert decode_qr(base64.b64decode(attachment["datas"])) == [outcome.validation_link]
    assert refused_move not in {a["res_id"] for a in odoo.records["ir.attachment"].values()}

    plugin.on_submission_result(source=source, outcomes=[outcome])  # handed over again after a crash
    assert len(odoo.records["ir.attachment"]) == 1


def test_the_standin_refuses_raw_bytes_for_a_binary_field(odoo):
    """What keeps the plugin honest: Odoo takes Base64 text for ``datas``, not bytes."""
    demo = seed_demo_company(odoo)
    move = create_move(odoo, demo)
    client = OdooClient(odoo_source(odoo).options)
    client.authenticate()
    with pytest.raises(OdooCallError, match="not JSON serializable"):
        client.execute(
            "ir.attachment",
            "create",
            {"name": "x.png", "datas": b"\x89PNG", "res_model": "account.move", "res_id": move},
        )
    with pytest.raises(OdooCallError, match="not Base64"):
        client.execute(
            "ir.attachment",
            "create",
            {"name": "x.png", "datas": "not base64!", "res_model": "account.move", "res_id": move},
        )
    assert client.execute(
        "ir.attachment", "create", [{"name": "x.png", "datas": "iVBO", "res_model": "account.move", "res_id": move}]
    ) == [1]
