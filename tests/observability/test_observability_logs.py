"""Log lines: JSON that parses and carries the document's identity, readable text on a
terminal, and no secret in any part of any line."""

from __future__ import annotations

import io
import json
import logging
import os

import pytest
from pydantic import SecretStr

from connector_core.observability.logs import (
    SecretRedactingFilter,
    configure_logging,
    document_logger,
    install_redaction,
    log_document,
)
from connector_core.observability.redaction import (
    SECRET_MASK,
    forget_secret,
    redact_secrets,
    register_secret,
    registered_secret_count,
)

pytestmark = pytest.mark.usefixtures("restore_root_logger")

CLIENT_SECRET = "cs-L0gged-Cl1entS3cret-77aa"
PLUGIN_SECRET = "odoo-api-K3y-0123456789"
BEARER_TOKEN = "eyJhbGciOiJSUzI1NiJ9.bG9nZ2VkLXRva2Vu.c2ln"


def json_lines(output: io.StringIO) -> list[dict]:
    return [json.loads(line) for line in output.getvalue().splitlines()]


def test_json_lines_parse_and_carry_the_document_identity():
    output = io.StringIO()
    configure_logging("INFO", "json", stream=output)
    log = logging.getLogger("connector.pipeline")

    log_document(log, "INFO", "accepted for validation", invoice="INV-1", uuid="F9D4", submission_uid="SUB1", documents=3)
    log_document(log, logging.WARNING, "refused by pre-validation: %s", "buyer TIN", invoice="INV-2")
    log_document(log, "DEBUG", "below the level", invoice="INV-3")

    first, second = json_lines(output)
    assert set(first) == {"ts", "level", "logger", "message", "invoice", "uuid", "submission_uid", "documents"}
    assert (first["level"], first["logger"], first["message"]) == ("INFO", "connector.pipeline", "accepted for validation")
    assert (first["invoice"], first["uuid"], first["submission_uid"], first["documents"]) == ("INV-1", "F9D4", "SUB1", 3)
    assert first["ts"].endswith("Z") and "T" in first["ts"]
    # Identity not known yet is still there, as null, so every document line has the same keys.
    assert second["message"] == "refused by pre-validation: buyer TIN"
    assert (second["invoice"], second["uuid"], second["submission_uid"]) == ("INV-2", None, None)


def test_document_logger_binds_identity_and_bind_adds_to_it():
    output = io.StringIO()
    configure_logging("INFO", "json", stream=output)
    log = document_logger(logging.getLogger("connector.pipeline"), invoice="INV-9", source="erp-main")

    log.info("submitting")
    log = log.bind(uuid="U9", submission_uid="S9")
    log.info("accepted", extra={"attempt": 2})
    log.info("an explicit None does not erase the bound invoice", extra={"invoice": None})

    lines = json_lines(output)
    assert [(line["invoice"], line["uuid"], line["submission_uid"]) for line in lines] == [
        ("INV-9", None, None),
        ("INV-9", "U9", "S9"),
        ("INV-9", "U9", "S9"),
    ]
    assert lines[0]["source"] == "erp-main" and lines[1]["attempt"] == 2


def test_fields_named_like_record_attributes_do_not_break_the_log_call():
    output = io.StringIO()
    configure_logging("INFO", "json", stream=output)
    # logging itself raises KeyError for extra={"name": ...}; a document log line must not.
    log_document(logging.getLogger("x"), "INFO", "clash", invoice="INV-1", name="Acme", message="m")
    (line,) = json_lines(output)
    assert line["field_name"] == "Acme" and line["field_message"] == "m" and line["logger"] == "x"


def test_text_format_is_one_readable_line_with_key_value_fields():
    output = io.StringIO()
    configure_logging("info", "text", stream=output)
    log_document(logging.getLogger("connector.poller"), "INFO", "valid", invoice="INV-1", uuid="U1", submission_uid=None, note="two words")
    line = output.getvalue().rstrip("\n")
    assert "\n" not in line
    assert " INFO    connector.poller: valid  invoice=INV-1 uuid=U1 submission_uid=- note=\"two words\"" in line


def test_auto_format_is_text_on_a_terminal_and_json_elsewhere():
    primary, secondary = os.openpty()
    with os.fdopen(secondary, "w") as terminal, os.fdopen(primary, "rb", buffering=0) as screen:
        configure_logging("INFO", "auto", stream=terminal)
        logging.getLogger("t").info("on a terminal")
        terminal.flush()
        shown = screen.read(4096).decode()
    assert "INFO    t: on a terminal" in shown and not shown.lstrip().startswith("{")

    piped = io.StringIO()
    configure_logging("INFO", "auto", stream=piped)
    logging.getLogger("t").info("in a pipe")
    assert json_lines(piped)[0]["message"] == "in a pipe"


def test_configure_logging_twice_replaces_its_handler_instead_of_doubling_lines():
    first, second = io.StringIO(), io.StringIO()
    configure_logging("INFO", "json", stream=first)
    configure_logging("INFO", "json", stream=second)
    logging.getLogger("t").info("once")
    assert first.getvalue() == ""
    assert len(json_lines(second)) == 1


def test_unknown_level_or_format_is_refused_naming_the_setting():
    with pytest.raises(ValueError, match="log_level"):
        configure_logging("LOUD", "json")
    with pytest.raises(ValueError, match="log_format"):
        configure_logging("INFO", "xml")


class TokenHolder:
    """An object whose str() carries a secret, as a careless repr might."""

    def __str__(self) -> str:
        return f"TokenHolder(token=Bearer {BEARER_TOKEN})"


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_never_reach_log_output(fmt):
    register_secret(SecretStr(CLIENT_SECRET))
    register_secret(PLUGIN_SECRET)
    output = io.StringIO()
    configure_logging("DEBUG", fmt, stream=output)
    log = logging.getLogger("connector.api")

    log.info("logging in with client secret %s", CLIENT_SECRET)  # in args
    log.info(f"plugin connected with key {PLUGIN_SECRET}")  # in the message itself
    log.debug("sending Authorization: Bearer %s", BEARER_TOKEN)  # unregistered bearer token
    log.info("token response", extra={"body": {"access_token": BEARER_TOKEN, "nested": [CLIENT_SECRET]}, "holder": TokenHolder()})
    log_document(log, "WARNING", "retrying", invoice="INV-1", header=f"Bearer {BEARER_TOKEN}")
    try:
        raise PermissionError(f"401 for client_secret={CLIENT_SECRET} and Authorization: Bearer {BEARER_TOKEN}")
    except PermissionError:
        log.exception("login failed")
    log.info("here is where it happened", stack_info=True, extra={"key": PLUGIN_SECRET})

    text = output.getvalue()
    for secret in (CLIENT_SECRET, PLUGIN_SECRET, BEARER_TOKEN):
        assert secret not in text
    assert text.count(SECRET_MASK) >= 8
    # Masked, not dropped: the lines still say what happened.
    assert "logging in with client secret [REDACTED]" in text
    assert "PermissionError: 401 for client_secret=[REDACTED]" in text
    assert "login failed" in text and "INV-1" in text


def test_a_handler_added_elsewhere_gets_the_filter_once():
    register_secret(CLIENT_SECRET)
    output = io.StringIO()
    handler = logging.StreamHandler(output)
    install_redaction(handler)
    install_redaction(handler)
    assert sum(isinstance(f, SecretRedactingFilter) for f in handler.filters) == 1
    log = logging.getLogger("elsewhere")
    log.addHandler(handler)
    try:
        log.warning("secret %s", CLIENT_SECRET)
    finally:
        log.removeHandler(handler)
    assert output.getvalue() == "secret [REDACTED]\n"


def test_placeholders_and_very_short_values_are_not_registered():
    # Masking "0" or "abc" everywhere would wreck every log line; such values are no secrets.
    for value in ("", "0", "changeme", "YOUR_CLIENT_SECRET", "abc", None):
        assert register_secret(value) is False
    assert registered_secret_count() == 0
    assert register_secret("long-enough-secret") is True


def test_a_replaced_token_can_be_forgotten_while_others_stay_masked():
    register_secret("token-of-the-first-hour")
    register_secret("token-of-the-second-hour")
    forget_secret("token-of-the-first-hour")
    assert registered_secret_count() == 1
    assert redact_secrets("old token-of-the-first-hour, new token-of-the-second-hour") == "old token-of-the-first-hour, new [REDACTED]"
