"""The real sentry-sdk, posting to a local collector: tags and breadcrumbs arrive, secrets and
buyer personal data do not."""

from __future__ import annotations

import logging

import pytest
import sentry_sdk
from pydantic import SecretStr

from connector_core.observability.redaction import register_secret
from connector_core.observability.sentry import (
    FILTERED,
    add_api_breadcrumb,
    capture_login_failure,
    capture_plugin_error,
    capture_stuck_submissions,
    init_sentry,
    is_sensitive_key,
    scrub_event,
    sentry_enabled,
    sentry_scope,
)

RELEASE = "myinvois-connector@0.1.0"

# Planted in every corner of the events below; none may reach the collector.
CLIENT_SECRET = "cs-Pl4nted-Cl1entS3cret-9f8e7d6c"  # registered, as the core does at start-up
UNREGISTERED_SECRET = "Unr3gistered-F0rm-S3cret-1a2b"  # only recognisable by its client_secret= key
BEARER_TOKEN = "eyJhbGciOiJSUzI1NiJ9.cGxhbnRlZC10b2tlbg.c2lnbmF0dXJl"
BUYER_PHONE = "+60123456789"
BUYER_PHONE_NATIONAL = "012-345 6789"
BUYER_EMAIL = "siti.planted@example.com.my"
BUYER_NAME = "Siti Plantedah Binti Abdullah"
BUYER_ADDRESS = "12 Jalan Planted 3/4"
PLANTED = [CLIENT_SECRET, UNREGISTERED_SECRET, BEARER_TOKEN, BUYER_PHONE, BUYER_PHONE_NATIONAL, BUYER_EMAIL, BUYER_NAME, BUYER_ADDRESS]


def start_reporting(collector, environment: str = "staging") -> None:
    assert init_sentry(SecretStr(collector.dsn), environment=environment, release=RELEASE) is True


def test_events_arrive_with_tags_and_api_breadcrumbs(collector):
    start_reporting(collector)

    with sentry_scope(profile="acme-sdn-bhd", plugin="csv", cycle="submit", environment="sandbox"):
        add_api_breadcrumb("/connect/token", "post", 200, 0.12)
        add_api_breadcrumb("/api/v1.0/documentsubmissions", "POST", 429, 0.05)
        add_api_breadcrumb("/api/v1.0/documentsubmissions", "POST", 202, 0.42)
        try:
            raise RuntimeError("submit cycle broke")
        except RuntimeError:
            sentry_sdk.capture_exception()
    # Outside the block the tags are gone again.
    sentry_sdk.capture_message("after the scope")
    sentry_sdk.flush(timeout=5)

    events = collector.wait_for_events(2)
    inside = next(e for e in events if e.get("exception"))
    outside = next(e for e in events if e.get("message") == "after the scope")

    assert inside["environment"] == "staging"
    assert inside["release"] == RELEASE
    assert inside["tags"] == {"profile": "acme-sdn-bhd", "plugin": "csv", "cycle": "submit", "myinvois_environment": "sandbox"}
    assert inside["exception"]["values"][-1]["value"] == "submit cycle broke"
    api_crumbs = [c for c in inside["breadcrumbs"]["values"] if c.get("category") == "myinvois.api"]
    assert [(c["data"]["url"], c["data"]["status_code"], c["level"]) for c in api_crumbs] == [
        ("/connect/token", 200, "info"),
        ("/api/v1.0/documentsubmissions", 429, "warning"),
        ("/api/v1.0/documentsubmissions", 202, "info"),
    ]
    assert api_crumbs[0]["data"]["method"] == "POST"
    assert api_crumbs[2]["data"]["duration_ms"] == 420.0
    assert not {"profile", "plugin", "cycle"} & set(outside.get("tags", {}))


def test_capture_helpers_file_grouped_tagged_events(collector):
    start_reporting(collector, environment="production")

    login_id = capture_login_failure("acme-sdn-bhd", PermissionError("invalid_client"))
    stuck_id = capture_stuck_submissions("acme-sdn-bhd", [f"SUB{i:03d}" for i in range(60)], 4000.4)
    try:
        raise KeyError("no such column: invoice_no")
    except KeyError as exc:
        plugin_id = capture_plugin_error("sql", "fetch_pending_invoices", "erp-main", exc)
    sentry_sdk.flush(timeout=5)

    events = {e["event_id"]: e for e in collector.wait_for_events(3)}
    login, stuck, plugin = events[login_id], events[stuck_id], events[plugin_id]

    assert login["level"] == "error"
    assert login["tags"]["profile"] == "acme-sdn-bhd"
    assert login["fingerprint"] == ["myinvois-login-failure", "acme-sdn-bhd"]
    assert "PermissionError: invalid_client" in login["message"]

    assert stuck["level"] == "warning"
    assert stuck["contexts"]["stuck_submissions"]["count"] == 60
    assert len(stuck["contexts"]["stuck_submissions"]["submission_uids"]) == 50
    assert "60 submission(s)" in stuck["message"] and "4000 s" in stuck["message"]

    assert plugin["tags"] == {"plugin": "sql", "hook": "fetch_pending_invoices", "source": "erp-main", "failure": "plugin"}
    assert plugin["exception"]["values"][-1]["type"] == "KeyError"


def _function_holding_buyer_data():
    # Local variables like these are exactly what must not be shipped with a traceback.
    buyer_phone = BUYER_PHONE  # noqa: F841
    client_secret = CLIENT_SECRET  # noqa: F841
    raise ValueError(f"ERP row broken for INV-2026-0001: buyer phone {BUYER_PHONE}, mail {BUYER_EMAIL}")


def test_no_secret_or_buyer_personal_data_reaches_sentry(collector):
    register_secret(CLIENT_SECRET)
    start_reporting(collector)
    log = logging.getLogger("tests.observability.leaky")

    with sentry_scope(profile="acme-sdn-bhd", cycle="fetch"):
        # Breadcrumbs: a raw HTTP-ish breadcrumb an integration might leave, and log lines.
        sentry_sdk.add_breadcrumb(
            category="httpx",
            message=f"POST /connect/token client_secret={UNREGISTERED_SECRET}",
            data={"Authorization": f"Bearer {BEARER_TOKEN}", "body": f"grant_type=client_credentials&client_secret={UNREGISTERED_SECRET}"},
        )
        log.info("token issued: %s", BEARER_TOKEN)
        log.warning("buyer %s at %s", BUYER_NAME, BUYER_EMAIL)
        # Extra data and contexts, by key and by value.
        sentry_sdk.set_extra("buyer", {"name": BUYER_NAME, "address": {"lines": [BUYER_ADDRESS]}, "phone": BUYER_PHONE})
        sentry_sdk.set_extra("note", f"call {BUYER_PHONE_NATIONAL} or {BUYER_PHONE} about INV-2026-0001")
        sentry_sdk.set_context("invoice", {"number": "INV-2026-0001", "buyerEmail": BUYER_EMAIL, "contact": BUYER_NAME})
        sentry_sdk.set_tag("hint", f"mail {BUYER_EMAIL}")
        # An exception whose message carries personal data, with secrets in local variables.
        try:
            _function_holding_buyer_data()
        except ValueError:
            sentry_sdk.capture_exception()
        # A log record that becomes an event, secrets in its arguments and extra fields.
        log.error(
            "login refused with secret %s and header %s",
            CLIENT_SECRET,
            f"Authorization: Bearer {BEARER_TOKEN}",
            extra={"invoice": "INV-2026-0001", "response": f'{{"access_token": "{BEARER_TOKEN}"}}'},
        )
        capture_login_failure("acme-sdn-bhd", RuntimeError(f"401 for client_secret={CLIENT_SECRET}; Bearer {BEARER_TOKEN}"))
        # Request headers and data, as a web integration would attach them.
        sentry_sdk.capture_event(
            {
                "message": f"request failed for {BUYER_EMAIL}",
                "level": "error",
                "request": {
                    "url": "http://127.0.0.1/api/v1.0/documentsubmissions",
                    "method": "POST",
                    "headers": {"Authorization": f"Bearer {BEARER_TOKEN}", "Content-Type": "application/json"},
                    "data": {"buyer": {"name": BUYER_NAME, "telephone": BUYER_PHONE}, "note": f"client_secret={UNREGISTERED_SECRET}"},
                },
            }
        )
    sentry_sdk.flush(timeout=5)

    events = collector.wait_for_events(4)
    sent = collector.all_bytes()
    assert not collector.rejected
    for planted in PLANTED:
        assert planted.encode() not in sent, f"{planted!r} reached Sentry"
    # The scrubber masked things rather than dropping whole events, and kept what is useful.
    assert b"[REDACTED]" in sent and b"[PHONE]" in sent and b"[EMAIL]" in sent and FILTERED.encode() in sent
    assert b"INV-2026-0001" in sent
    exception_event = next(e for e in events if e.get("exception"))
    frames = exception_event["exception"]["values"][-1]["stacktrace"]["frames"]
    assert any(f["function"] == "_function_holding_buyer_data" for f in frames)
    assert all("vars" not in f for f in frames)


def test_scrubber_removes_local_variables_by_key_when_the_sdk_collects_them():
    # include_local_variables is off, but a deployment could turn it on; vars stay scrubbed.
    event = {
        "exception": {
            "values": [
                {
                    "type": "ValueError",
                    "value": f"bad phone {BUYER_PHONE}",
                    "stacktrace": {
                        "frames": [
                            {
                                "function": "build",
                                "vars": {"buyer_name": BUYER_NAME, "invoice_no": "INV-1", "token": BEARER_TOKEN, "row": {"Email": BUYER_EMAIL}},
                            }
                        ]
                    },
                }
            ]
        },
        "contexts": {"runtime": {"name": "CPython", "version": "3.11"}, "erp": {"customer_name": BUYER_NAME}},
        "server_name": "erp-host-01",
    }
    scrubbed = scrub_event(event, {})
    frame_vars = scrubbed["exception"]["values"][0]["stacktrace"]["frames"][0]["vars"]
    assert frame_vars == {"buyer_name": FILTERED, "invoice_no": "INV-1", "token": FILTERED, "row": {"Email": FILTERED}}
    assert scrubbed["exception"]["values"][0]["value"] == "bad phone [PHONE]"
    assert scrubbed["contexts"] == {"runtime": {"name": "CPython", "version": "3.11"}, "erp": {"customer_name": FILTERED}}
    assert scrubbed["server_name"] == "erp-host-01"


@pytest.mark.parametrize(
    ("key", "sensitive"),
    [
        ("buyer", True), ("buyerName", True), ("BUYER_EMAIL", True), ("e-mail", True), ("telephone", True),
        ("Authorization", True), ("client_secret", True), ("access_token", True), ("api_key", True), ("id_value", True),
        ("invoice", False), ("source_key", False), ("hostname", False), ("uuid", False), ("status_code", False),
    ],
)
def test_sensitive_keys_are_recognised_by_their_words(key, sensitive):
    assert is_sensitive_key(key) is sensitive


def test_without_dsn_sentry_stays_off_and_helpers_do_nothing():
    assert init_sentry(None, environment="production", release=RELEASE) is False
    assert init_sentry(SecretStr(""), environment="production", release=RELEASE) is False
    assert not sentry_enabled()
    with sentry_scope(profile="p"):
        add_api_breadcrumb("/connect/token", "POST", None, 30.0)
        assert capture_login_failure("p", "refused") is None
        assert capture_stuck_submissions("p", ["S1"], 10) is None
        assert capture_plugin_error("csv", "fetch_pending_invoices", None, RuntimeError("x")) is None


def test_log_lines_reach_sentry_without_their_arguments_also_behind_the_log_filter(collector, restore_root_logger):
    import io

    from connector_core.observability.logs import configure_logging, log_document

    # The redacting filter merges arguments into the message before Sentry's integration sees
    # the record; the template it keeps aside is what Sentry gets.
    local_output = io.StringIO()
    configure_logging("INFO", "json", stream=local_output)
    start_reporting(collector)
    log = logging.getLogger("connector_core.pipeline.under_test")  # the connector's own: its lines are breadcrumbs

    log_document(log, "WARNING", "buyer %s has no e-mail address", BUYER_NAME, invoice="INV-7", uuid="U7", submission_uid="S7")
    log.error("could not write back outcome for %(name)s", {"name": BUYER_NAME})
    sentry_sdk.flush(timeout=5)

    event = collector.wait_for_events(1)[0]
    sent = collector.all_bytes()
    assert BUYER_NAME.encode() not in sent
    assert event["logentry"]["formatted"] == "could not write back outcome for [Filtered]"
    crumb = next(c for c in event["breadcrumbs"]["values"] if c.get("category") == "connector_core.pipeline.under_test")
    assert crumb["message"] == "buyer [Filtered] has no e-mail address"
    assert crumb["data"] == {"invoice": "INV-7", "uuid": "U7", "submission_uid": "S7"}
    # Locally, where clerks need it, the line is complete.
    assert BUYER_NAME in local_output.getvalue()
