"""The shared plugin contract, run by the Odoo plugin against the stand-in over both protocols."""

from __future__ import annotations

import html
import re

import pytest

import myinvois_odoo.plugin
from connector_core.contract import Source
from myinvois_odoo.options import OdooSourceOptions
from tests.odoo_standin import OdooStandin, create_move, seed_demo_company
from tests.plugin_contract import ErpStatus, PluginContract

API_KEY = "odoo-api-key-4f1c2b"


def message_text(body: str) -> str:
    return html.unescape(re.sub(r"<[^>]+>", " ", body))


class OdooContract(PluginContract):
    protocol = "xmlrpc"
    version = "17.0"

    @pytest.fixture()
    def plugin_module(self):
        return myinvois_odoo.plugin

    @pytest.fixture()
    def odoo(self):
        with OdooStandin(version=self.version) as standin:
            standin.add_user("connector@demo.example", API_KEY)
            yield standin

    @pytest.fixture()
    def demo(self, odoo):
        return seed_demo_company(odoo)

    @pytest.fixture()
    def source(self, odoo, demo):
        options = OdooSourceOptions(
            url=odoo.url, database="demo", login="connector@demo.example", api_key=API_KEY, protocol=self.protocol, page_size=2
        )
        return Source(name="odoo", kind="odoo", profile="demo", options=options)

    @pytest.fixture()
    def seed_invoices(self, odoo, demo):
        return lambda count: [str(create_move(odoo, demo)) for _ in range(count)]

    @pytest.fixture()
    def seed_bad_record(self, odoo, demo):
        def seed():
            walk_in = odoo.create("res.partner", name="Walk-in Customer", street="Jalan 1", city="Klang", phone="+60312345678",
                                  state_id=demo.states["Selangor"], country_id=demo.malaysia, x_brn="NA")
            return str(create_move(odoo, demo, partner=walk_in)), "x_tin"

        return seed

    @pytest.fixture()
    def read_back(self, odoo):
        def read(source_key: str) -> ErpStatus:
            move = odoo.get("account.move", int(source_key))
            notes = "\n".join(message_text(m["body"]) for m in odoo.messages_on("account.move", int(source_key)))
            return ErpStatus(
                status=move["x_myinvois_status"] or None,
                uuid=move["x_myinvois_uuid"] or None,
                long_id=move["x_myinvois_long_id"] or None,
                validation_link=move["x_myinvois_validation_link"] or None,
                errors=notes or None,
                reason=notes or None,  # a rejection request's or cancellation's reason is in the note
            )

        return read


class TestOdooXmlRpc(OdooContract):
    protocol = "xmlrpc"


class TestOdooJsonRpc(OdooContract):
    protocol = "jsonrpc"


class TestOdoo16XmlRpc(OdooContract):
    version = "16.0"


class TestOdoo18JsonRpc(OdooContract):
    protocol = "jsonrpc"
    version = "18.0"
