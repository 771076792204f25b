"""The Odoo stand-in is only worth its tests if it refuses what Odoo refuses: these pin its
protocol behaviour, through the standard library's XML-RPC client and plain JSON-RPC posts."""

from __future__ import annotations

import xmlrpc.client

import httpx
import pytest

from tests.odoo_standin import OdooStandin, create_move, seed_demo_company

KEY = "standin-key-1"


@pytest.fixture()
def odoo():
    with OdooStandin(version="16.0") as standin:
        standin.add_user("clerk", KEY)
        standin.add_user("auditor", "auditor-key", read_only=True)
        yield standin


def xml(odoo, service):
    return xmlrpc.client.ServerProxy(f"{odoo.url}/xmlrpc/2/{service}")


def json_call(odoo, service, method, *args):
    body = {"jsonrpc": "2.0", "method": "call", "params": {"service": service, "method": method, "args": list(args)}, "id": 7}
    answer = httpx.post(f"{odoo.url}/jsonrpc", json=body).json()
    assert answer["id"] == 7
    return answer


def test_authenticate_returns_uid_or_false(odoo):
    assert xml(odoo, "common").authenticate("demo", "clerk", KEY, {}) == 2
    assert xml(odoo, "common").authenticate("demo", "clerk", "wrong", {}) is False
    assert json_call(odoo, "common", "authenticate", "demo", "clerk", "wrong", {})["result"] is False
    assert xml(odoo, "common").version()["server_version_info"][:2] == [16, 0]


def test_failures_are_odoos_faults_and_errors(odoo):
    obj = xml(odoo, "object")
    cases = [
        (("demo", 2, "wrong", "account.move", "search", [[]]), 3, "Access Denied", "odoo.exceptions.AccessDenied"),
        (("demo", 2, KEY, "no.such.model", "search", [[]]), 2, "Object no.such.model doesn't exist", "odoo.exceptions.UserError"),
        (("demo", 2, KEY, "res.partner", "search_read", [[("x_nope", "=", 1)]]), 1, "Invalid field 'x_nope' on model 'res.partner'", "builtins.ValueError"),
        (("demo", 2, KEY, "res.partner", "read", [[1], ["x_nope"]]), 1, "Invalid field 'x_nope' on model 'res.partner'", "builtins.ValueError"),
        (("demo", 3, "auditor-key", "account.move", "write", [[1], {"x_myinvois_status": "x"}]), 4, "You are not allowed to modify 'Journal Entry'", "odoo.exceptions.AccessError"),
    ]
    seed_demo_company(odoo)
    odoo.create("account.move", name="INV/1")
    for args, code, message, name in cases:
        with pytest.raises(xmlrpc.client.Fault) as fault:
            obj.execute_kw(*args)
        assert fault.value.faultCode == code and message in fault.value.faultString
        error = json_call(odoo, "object", "execute_kw", *args)["error"]
        assert (error["code"], error["message"], error["data"]["name"]) == (200, "Odoo Server Error", name)
        assert message in error["data"]["message"]


def test_domains_order_offset_limit_and_false_for_empty(odoo):
    demo = seed_demo_company(odoo)
    moves = [create_move(odoo, demo) for _ in range(4)]
    odoo.records["account.move"][moves[1]]["x_myinvois_status"] = "pending"
    odoo.records["account.move"][moves[2]]["x_myinvois_status"] = "valid"
    obj = xml(odoo, "object")

    def ids(domain, **kwargs):
        return [r["id"] for r in obj.execute_kw("demo", 2, KEY, "account.move", "search_read", [domain], {"fields": ["name"], **kwargs})]

    either = ["|", ("x_myinvois_status", "=", False), ("x_myinvois_status", "=", "pending")]
    assert ids(either) == [moves[0], moves[1], moves[3]]
    assert ids(["!", *either]) == [moves[2]]
    assert ids(["&", ("id", ">", moves[0]), ("id", "<", moves[3])]) == moves[1:3]
    assert ids([], order="id desc", offset=1, limit=2) == [moves[2], moves[1]]
    assert ids([("partner_id", "in", [demo.customer]), ("state", "=", "posted")]) == moves
    (row,) = obj.execute_kw("demo", 2, KEY, "account.move", "read", [[moves[0]]], {"fields": ["ref", "partner_id", "x_myinvois_status"]})
    assert row == {"id": moves[0], "ref": False, "partner_id": [demo.customer, "Pelanggan Contoh Sdn. Bhd."], "x_myinvois_status": False}
    with pytest.raises(xmlrpc.client.Fault, match="Invalid leaf"):
        ids([("id", "between", [1, 2])])


def test_message_post_follows_the_version(odoo):
    demo = seed_demo_company(odoo)
    move = create_move(odoo, demo)
    obj = xml(odoo, "object")
    with pytest.raises(xmlrpc.client.Fault) as fault:
        obj.execute_kw("demo", 2, KEY, "account.move", "message_post", [[move]], {"body": "<p>x</p>", "body_is_html": True})
    assert "got an unexpected keyword argument 'body_is_html'" in fault.value.faultString
    message_id = obj.execute_kw("demo", 2, KEY, "account.move", "message_post", [[move]], {"body": "<p>x</p>", "message_type": "comment"})
    assert odoo.get("mail.message", message_id)["body"] == "<p>x</p>"
    assert [(c.model, c.model_method, c.model_args, c.model_kwargs) for c in odoo.object_calls(method="message_post")][-1] == (
        "account.move", "message_post", [[move]], {"body": "<p>x</p>", "message_type": "comment"}
    )
