"""Odoo plugin behaviour beyond the shared contract, checked against the stand-in: the exact
call shapes sent, document types, currency, taxes, errors naming the option, and a write-back
interrupted between the field write and the chatter message."""

from __future__ import annotations

import logging
from decimal import Decimal

import pytest
from pydantic import ValidationError

from connector_core.contract import DocumentOutcome, DocumentState, Source
from connector_core.model import Invoice, RejectedRecord
from myinvois_odoo import plugin
from myinvois_odoo.options import OdooSourceOptions
from myinvois_odoo.rpc import OdooError
from tests.odoo_standin import OdooStandin, create_move, seed_demo_company
from tests.plugin_contract import invalid_outcome, valid_outcome

API_KEY = "odoo-api-key-9d8e7f-secret"
LOGIN = "connector@demo.example"


@pytest.fixture(params=["xmlrpc", "jsonrpc"])
def protocol(request):
    return request.param


@pytest.fixture()
def odoo():
    with OdooStandin(version="17.0") as standin:
        standin.add_user(LOGIN, API_KEY)
        yield standin


@pytest.fixture()
def demo(odoo):
    return seed_demo_company(odoo)


def odoo_source(odoo, protocol="xmlrpc", **settings) -> Source:
    options = OdooSourceOptions.model_validate(
        {"url": odoo.url, "database": "demo", "login": LOGIN, "api_key": API_KEY, "protocol": protocol, **settings}
    )
    return Source(name="odoo", kind="odoo", profile="demo", options=options)


def fetch(source, limit=100):
    return list(plugin.fetch_pending_invoices(source=source, limit=limit))


# --- call shapes -----------------------------------------------------------------------------------


def test_calls_have_odoos_exact_shapes(odoo, demo, protocol):
    moves = [create_move(odoo, demo) for _ in range(3)]
    source = odoo_source(odoo, protocol, page_size=2)
    invoices = fetch(source)
    assert [i.source_key for i in invoices] == [str(m) for m in moves]
    assert {c.protocol for c in odoo.calls} == {protocol}

    common = [c for c in odoo.calls if c.service == "common"]
    assert [(c.method, c.args) for c in common] == [("version", []), ("authenticate", ["demo", LOGIN, API_KEY, {}])]
    uid = odoo.users[LOGIN].uid
    for call in odoo.object_calls():
        assert call.method == "execute_kw" and call.args[:3] == ["demo", uid, API_KEY]
        assert isinstance(call.model_args, list) and isinstance(call.model_kwargs, dict)

    pages = odoo.object_calls("account.move", "search_read")
    status_leaves = ["|", ["x_myinvois_status", "=", False], ["x_myinvois_status", "=", "pending"]]
    first_domain = [["state", "=", "posted"], ["move_type", "in", ["out_invoice", "out_refund"]], *status_leaves, ["id", ">", 0]]
    assert pages[0].model_args == [first_domain]
    assert pages[0].model_kwargs == {
        "fields": ["name", "move_type", "invoice_date", "partner_id", "company_id", "currency_id", "reversed_entry_id", "ref"],
        "limit": 2,
        "order": "id asc",
    }
    # Keyset paging by id: the second page starts after the last id of the first.
    assert pages[1].model_args[0][-1] == ["id", ">", moves[1]]
    lines = odoo.object_calls("account.move.line", "search_read")[0]
    assert lines.model_args == [[["move_id", "in", moves[:2]], ["display_type", "=", "product"]]]
    assert {c.model for c in odoo.object_calls(method="fields_get")} == {"res.partner", "product.product", "account.tax", "account.move"}


def test_write_back_shapes_and_internal_note(odoo, demo, protocol):
    move = create_move(odoo, demo)
    source = odoo_source(odoo, protocol)
    (invoice,) = fetch(source)
    plugin.on_invoices_recorded(source=source, source_keys=[invoice.source_key])
    (queued,) = odoo.object_calls("account.move", "write")
    assert queued.model_args == [[move], {"x_myinvois_status": "queued"}]

    outcome = valid_outcome(invoice)
    plugin.on_submission_result(source=source, outcomes=[outcome])
    write = odoo.object_calls("account.move", "write")[-1]
    assert write.model_args == [
        [move],
        {
            "x_myinvois_status": "valid",
            "x_myinvois_uuid": outcome.uuid,
            "x_myinvois_version": 1,
            "x_myinvois_long_id": outcome.long_id,
            "x_myinvois_validation_link": outcome.validation_link,
        },
    ]
    (post,) = odoo.object_calls("account.move", "message_post")
    assert post.model_args == [[move]]
    assert post.model_kwargs["message_type"] == "comment" and post.model_kwargs["subtype_xmlid"] == "mail.mt_note"
    assert post.model_kwargs["body_is_html"] is True
    (message,) = odoo.messages_on("account.move", move)
    assert "<b>validated</b>" in message["body"] and outcome.validation_link in message["body"]


def test_odoo_16_gets_no_body_is_html_keyword(demo, odoo):
    odoo.version, odoo.major = "16.0", 16
    create_move(odoo, demo)
    source = odoo_source(odoo)
    (invoice,) = fetch(source)
    plugin.on_submission_result(source=source, outcomes=[invalid_outcome(invoice)])
    (post,) = odoo.object_calls("account.move", "message_post")
    assert "body_is_html" not in post.model_kwargs


# --- mapping -------------------------------------------------------------------------------------


def test_invoice_is_mapped_from_move_partner_lines_and_taxes(odoo, demo):
    create_move(odoo, demo)
    (invoice,) = fetch(odoo_source(odoo))
    assert isinstance(invoice, Invoice)
    assert (invoice.number, invoice.document_type.value, str(invoice.issue_date)) == ("INV/2026/00001", "01", "2026-11-20")
    assert (invoice.supplier.tin, invoice.supplier.id_value, invoice.supplier.msic_code) == ("C25845632020", "202001234567", "46510")
    assert (invoice.supplier.address.state, invoice.supplier.address.country) == ("14", "MYS")
    assert (invoice.buyer.tin, invoice.buyer.id_value, invoice.buyer.address.state) == ("C58101234560", "200501012345", "10")
    first, second = invoice.lines
    assert (first.description, first.classification_codes, first.quantity, first.unit_price) == ("Laptop Peripherals", ["022"], 2, Decimal("150.5"))
    assert (first.taxes[0].tax_type, first.taxes[0].rate, first.taxes[0].tax_amount) == ("01", 10, Decimal("30.10"))
    assert (second.discount_amount, second.total_excluding_tax, second.taxes[0].tax_type) == (Decimal("20.00"), Decimal("80.00"), "02")
    assert (invoice.total_excluding_tax, invoice.tax_total, invoice.payable_amount) == (Decimal("381.00"), Decimal("36.50"), Decimal("417.50"))


def test_credit_note_references_its_invoice_and_foreign_currency_gets_a_rate(odoo, demo):
    original = create_move(odoo, demo)
    odoo.records["account.move"][original]["x_myinvois_status"] = "valid"
    odoo.records["account.move"][original]["x_myinvois_uuid"] = "F9D425P6DS7D8IU"
    create_move(odoo, demo, move_type="out_refund", reversed_entry=original, currency=demo.usd)
    (note,) = fetch(odoo_source(odoo))
    assert note.document_type.value == "02"
    assert [(r.internal_id, r.uuid) for r in note.original_references] == [("INV/2026/00001", "F9D425P6DS7D8IU")]
    assert (note.currency, note.exchange_rate) == ("USD", Decimal("4.472272"))


def test_vendor_bills_become_self_billed_only_when_configured(odoo, demo):
    create_move(odoo, demo, move_type="in_invoice")
    create_move(odoo, demo, move_type="in_refund")
    create_move(odoo, demo, state="draft")
    assert fetch(odoo_source(odoo)) == []
    bill, refund = fetch(odoo_source(odoo, include_vendor_bills=True))
    assert (bill.document_type.value, refund.document_type.value) == ("11", "12")
    # Self-billed: the vendor is the supplier, the demo company is the buyer and the issuer.
    assert (bill.supplier.tin, bill.buyer.tin, bill.issuer.tin) == ("IG21136626090", "C25845632020", "C25845632020")


def test_missing_data_is_rejected_naming_model_record_field_and_option(odoo, demo):
    odoo.records["product.product"][demo.service]["x_myinvois_class"] = False
    odoo.records["account.tax"][demo.sales_tax]["x_myinvois_tax_type"] = False
    odoo.records["res.partner"][demo.customer]["x_tin"] = False
    move = create_move(odoo, demo)
    (rejected,) = fetch(odoo_source(odoo))
    assert isinstance(rejected, RejectedRecord)
    assert rejected.location == f"account.move {move} (INV/2026/00001)"
    assert rejected.errors[:3] == [
        f"res.partner {demo.customer} (Pelanggan Contoh Sdn. Bhd.): field x_tin (option fields.partner_tin_field) is empty; "
        "fill in the buyer's TIN (e.g. C58101234560) on the contact",
        f"account.tax {demo.sales_tax} (SST 10%): field x_myinvois_tax_type (option fields.tax_type_field) is empty; "
        "fill in the tax's MyInvois tax type (01 sales, 02 service, 06 not applicable, E exempt)",
        f"product.product {demo.service} (Installation): field x_myinvois_class (option fields.product_classification_field) is empty; "
        "fill in the product's 3-digit MyInvois classification code (e.g. 022)",
    ]
    assert "set its field x_myinvois_status to 'pending'" in rejected.errors[-1]


def test_field_mapping_can_point_at_other_fields(odoo, demo):
    # Odoo's own Tax ID field holds the TIN in this database.
    odoo.records["res.partner"][demo.customer]["x_tin"] = False
    odoo.records["res.partner"][demo.customer]["vat"] = "C58101234560"
    odoo.records["res.partner"][demo.company_partner]["x_tin"] = False
    create_move(odoo, demo)
    (invoice,) = fetch(odoo_source(odoo, fields={"partner_tin_field": "vat"}))
    assert (invoice.buyer.tin, invoice.supplier.tin) == ("C58101234560", "C25845632020")


# --- configuration and access errors -------------------------------------------------------------


def test_mapped_field_missing_in_odoo_names_the_option(protocol):
    with OdooStandin(custom_fields=False) as bare:
        bare.add_user(LOGIN, API_KEY)
        with pytest.raises(OdooError) as error:
            fetch(odoo_source(bare, protocol))
    assert "option fields.partner_tin_field = 'x_tin', but Odoo's res.partner has no field 'x_tin'" in str(error.value)


def test_wrong_api_key_is_reported_without_the_key(odoo, demo, protocol, caplog):
    caplog.set_level(logging.DEBUG)
    source = odoo_source(odoo, protocol, api_key="wrong-key-123456")
    with pytest.raises(OdooError) as error:
        fetch(source)
    assert f"refused login '{LOGIN}' on database 'demo'" in str(error.value) and "api_key" in str(error.value)
    assert "wrong-key-123456" not in str(error.value) + repr(source.options) + caplog.text
    with pytest.raises(ValidationError) as invalid:
        OdooSourceOptions(url="ftp://x", database="d", login="l", api_key=API_KEY)
    assert API_KEY not in str(invalid.value)


def test_write_without_rights_is_an_access_error_naming_the_user(odoo, demo, protocol):
    odoo.users[LOGIN].read_only = True
    create_move(odoo, demo)
    source = odoo_source(odoo, protocol)
    (invoice,) = fetch(source)
    with pytest.raises(OdooError, match=f"Odoo user '{LOGIN}' may not modify invoices.*Accounting / Billing"):
        plugin.on_submission_result(source=source, outcomes=[valid_outcome(invoice)])


def test_unreachable_odoo_names_the_url_not_the_key():
    options = OdooSourceOptions(url="http://127.0.0.1:9", database="demo", login=LOGIN, api_key=API_KEY, timeout_seconds=2)
    with pytest.raises(OdooError, match="cannot reach Odoo at http://127.0.0.1:9") as error:
        fetch(Source("odoo", "odoo", "demo", options))
    assert API_KEY not in str(error.value)


def test_unknown_option_and_bad_field_names_are_refused():
    base = {"url": "http://odoo:8069", "database": "d", "login": "l", "api_key": API_KEY}
    with pytest.raises(ValidationError, match="protocoll"):
        OdooSourceOptions.model_validate({**base, "protocoll": "jsonrpc"})
    with pytest.raises(ValidationError, match="partner_tin_field = 'X-TIN' is not an Odoo field name"):
        OdooSourceOptions.model_validate({**base, "fields": {"partner_tin_field": "X-TIN"}})
    with pytest.raises(ValidationError, match="fields.move_status_field cannot be empty"):
        OdooSourceOptions.model_validate({**base, "fields": {"move_status_field": ""}})


# --- interrupted write-back ---------------------------------------------------------------------------


def test_write_back_interrupted_before_the_note_posts_it_once_on_retry(odoo, demo, protocol):
    move = create_move(odoo, demo)
    source = odoo_source(odoo, protocol)
    (invoice,) = fetch(source)
    outcome = invalid_outcome(invoice)
    # The first attempt dies after the fields were written, before the note was posted.
    original = odoo._orm_message_post
    odoo._orm_message_post = lambda *a, **k: (_ for _ in ()).throw(ConnectionAbortedError())
    with pytest.raises(Exception):  # noqa: B017 - whatever the transport makes of a dropped answer
        plugin.on_submission_result(source=source, outcomes=[outcome])
    odoo._orm_message_post = original
    assert odoo.get("account.move", move)["x_myinvois_status"] == "invalid"
    assert odoo.messages_on("account.move", move) == []

    plugin.on_submission_result(source=source, outcomes=[outcome])
    plugin.on_submission_result(source=source, outcomes=[outcome])
    (note,) = odoo.messages_on("account.move", move)
    assert "refused" in note["body"] and "buyer's TIN" in note["body"]
    assert len(odoo.object_calls("account.move", "write")) == 1


def test_outcome_for_a_deleted_move_is_skipped(odoo, demo):
    create_move(odoo, demo)
    source = odoo_source(odoo)
    (invoice,) = fetch(source)
    gone = DocumentOutcome("999", "INV/X", 1, DocumentState.VALID, uuid="U")
    plugin.on_submission_result(source=source, outcomes=[gone, valid_outcome(invoice)])
    assert odoo.get("account.move", int(invoice.source_key))["x_myinvois_status"] == "valid"


def test_backlog_is_read_in_pages_by_id_and_stops_at_the_limit(odoo, demo):
    moves = [create_move(odoo, demo) for _ in range(260)]
    source = odoo_source(odoo, page_size=100)
    fetched = fetch(source, limit=250)
    assert [int(i.source_key) for i in fetched] == moves[:250]
    pages = odoo.object_calls("account.move", "search_read")
    assert [(p.model_args[0][-1], p.model_kwargs["limit"]) for p in pages] == [
        (["id", ">", 0], 100),
        (["id", ">", moves[99]], 100),
        (["id", ">", moves[199]], 50),
    ]
