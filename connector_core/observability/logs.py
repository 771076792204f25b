"""Log lines a person can read at a terminal and a log shipper can parse in production.

* :func:`configure_logging` installs one stderr handler on the root logger, human-readable on a
  terminal and one JSON object per line otherwise (journald, containers, log shippers).
* Every line about a document carries ``invoice``, ``uuid`` and ``submission_uid`` — use
  :func:`log_document` or :func:`document_logger`, which always set all three (``null`` when not
  known yet), so a search for one invoice finds its whole history.
* :class:`SecretRedactingFilter` sits on the handlers, so nothing reaches stderr, a file or a
  shipper with a registered secret or a bearer token in it, whichever logger emitted it.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Iterable, Mapping, MutableMapping
from datetime import UTC, datetime
from typing import Any

from connector_core.observability.redaction import (
    SECRET_MASK,
    is_credential_key,
    redact_secrets,
    register_secret,  # noqa: F401 - re-exported for callers
)

LOG_FORMATS = ("auto", "text", "json")
LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL")

#: The context every line about a document carries.
DOCUMENT_FIELDS = ("invoice", "uuid", "submission_uid")

# Attributes every LogRecord has; anything else on a record came from ``extra``.
_STANDARD_ATTRIBUTES = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {"message", "asctime"}

# Private record attributes (a leading underscore keeps them out of structured fields, here
# and in Sentry's logging integration): the message template and the shape of its arguments
# before the redacting filter merged them into the message.
LOG_TEMPLATE_ATTRIBUTE = "_myinvois_template"
LOG_ARGUMENTS_ATTRIBUTE = "_myinvois_arguments"

# Marks the handler configure_logging installed, so calling it again replaces it instead of
# adding a second one (which would print every line twice).
_OWN_HANDLER_ATTRIBUTE = "_myinvois_connector_handler"


def extra_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The structured fields a record carries beyond the standard ones."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _STANDARD_ATTRIBUTES and not key.startswith("_")
    }


class SecretRedactingFilter(logging.Filter):
    """Masks registered secrets, bearer tokens and credential pairs in a record before any
    formatter sees it: the message with its arguments merged in, every ``extra`` field, the
    exception text and the stack text.

    The record is changed in place (message pre-formatted, ``args`` emptied), so handlers that
    run later, and Sentry's logging integration, see only the masked version.
    """

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, LOG_TEMPLATE_ATTRIBUTE):
            # Kept for the Sentry scrubber, which ships the template without its arguments
            # (arguments may name a buyer); only the shape of the arguments is kept, not them.
            setattr(record, LOG_TEMPLATE_ATTRIBUTE, str(record.msg))
            setattr(record, LOG_ARGUMENTS_ATTRIBUTE, _argument_shape(record.args))
        try:
            message = record.getMessage()
        except Exception:
            message = f"{record.msg!r} % {record.args!r}"
        record.msg = redact_secrets(message)
        record.args = ()
        for key, value in extra_fields(record).items():
            setattr(record, key, SECRET_MASK if is_credential_key(key) else _redact_value(value))
        if record.exc_info and not record.exc_text:
            # Formatted here, once, so no formatter ever renders the unmasked exception.
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text:
            record.exc_text = redact_secrets(record.exc_text)
        if record.stack_info:
            record.stack_info = redact_secrets(record.stack_info)
        return True


def _argument_shape(args: Any) -> int | str:
    if isinstance(args, Mapping):
        return "mapping"
    return len(args) if isinstance(args, tuple) else (0 if args is None else 1)


def _redact_value(value: Any) -> Any:
    if value is None or isinstance(value, (bool, int, float)):
        return value
    if isinstance(value, str):
        return redact_secrets(value)
    if isinstance(value, Mapping):
        # A token response or a settings dump: values under credential keys go whole, even
        # when they were never registered.
        return {str(k): SECRET_MASK if is_credential_key(k) else _redact_value(v) for k, v in value.items()}
    if isinstance(value, (list, tuple, set, frozenset)):
        return [_redact_value(v) for v in value]
    # Any other object would be rendered with str() later; render and mask it now.
    return redact_secrets(str(value))


def _timestamp(record: logging.LogRecord) -> str:
    return datetime.fromtimestamp(record.created, tz=UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class JsonFormatter(logging.Formatter):
    """One JSON object per line: ``ts``, ``level``, ``logger``, ``message``, then the
    structured fields, then ``exception`` / ``stack`` when present."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "ts": _timestamp(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in extra_fields(record).items():
            entry.setdefault(key, value)
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exception"] = record.exc_text
        if record.stack_info:
            entry["stack"] = record.stack_info
        # default=str: a field holding a datetime, Decimal or Path must not lose the line.
        return json.dumps(entry, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """``2026-11-24T19:45:00.123Z INFO connector.pipeline: message  invoice=INV-1 uuid=...``"""

    def format(self, record: logging.LogRecord) -> str:
        line = f"{_timestamp(record)} {record.levelname:<7} {record.name}: {record.getMessage()}"
        fields = extra_fields(record)
        if fields:
            line += "  " + " ".join(f"{key}={_text_value(value)}" for key, value in fields.items())
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            line += "\n" + record.exc_text
        if record.stack_info:
            line += "\n" + record.stack_info
        return line


def _text_value(value: Any) -> str:
    if value is None:
        return "-"
    text = str(value)
    # Quote values with spaces so "key=value" pairs stay splittable by eye and by awk.
    return (
        json.dumps(text, ensure_ascii=False) if (not text or any(ch.isspace() or ch in '"=' for ch in text)) else text
    )


#: Libraries whose INFO and DEBUG lines narrate every lock taken, request made, statement run or
#: migration step: an operator needs their warnings only. Quiet below WARNING whatever the
#: connector's own level, except those named in ``observability.debug_loggers``.
THIRD_PARTY_LOGGERS = (
    "alembic",
    "apscheduler",
    "asyncio",
    "filelock",
    "h11",
    "httpcore",
    "httpx",
    "multipart",
    "python_multipart",
    "redis",
    "sentry_sdk",
    "sqlalchemy",
    "urllib3",
    "uvicorn",
    "uvicorn.access",
    "uvicorn.error",
)


def quiet_third_party_loggers(debug_loggers: Iterable[str] = ()) -> None:
    """Set the libraries' loggers to WARNING, and those in ``debug_loggers`` (any logger name,
    e.g. ``"httpx"`` or ``"sqlalchemy.engine"``) to DEBUG: asked for, they are heard in full."""
    wanted = {name.strip() for name in debug_loggers if name.strip()}
    # A logger raised by an earlier call and no longer asked for goes back to its parent's
    # level: left at DEBUG, "sqlalchemy.engine" would keep logging every row under a quiet
    # "sqlalchemy".
    for name in _raised - wanted:
        logging.getLogger(name).setLevel(logging.NOTSET)
    _raised.clear()
    _raised.update(wanted)
    for name in THIRD_PARTY_LOGGERS:
        if name not in wanted:
            logging.getLogger(name).setLevel(logging.WARNING)
    for name in wanted:
        logging.getLogger(name).setLevel(logging.DEBUG)


#: The loggers the last call raised to DEBUG.
_raised: set[str] = set()


def configure_logging(
    level: str = "INFO", fmt: str = "auto", *, stream: Any = None, debug_loggers: Iterable[str] = ()
) -> logging.Handler:
    """Send all logging to one stderr handler on the root logger, with secrets masked.

    ``fmt``: ``"text"`` (human-readable), ``"json"`` (one object per line) or ``"auto"`` (text
    on a terminal, JSON otherwise, as under systemd or in a container). Calling it again replaces
    the handler it installed before; handlers others installed are left alone. Returns the handler.
    Third-party libraries log only warnings unless named in ``debug_loggers``
    (:func:`quiet_third_party_loggers`).
    """
    level_name = str(level).upper()
    if level_name not in LOG_LEVELS:
        raise ValueError(f"log_level must be one of {', '.join(LOG_LEVELS)}, not {level!r}")
    if fmt not in LOG_FORMATS:
        raise ValueError(f"log_format must be one of {', '.join(LOG_FORMATS)}, not {fmt!r}")
    stream = stream if stream is not None else sys.stderr
    if fmt == "auto":
        fmt = "text" if _is_terminal(stream) else "json"

    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(SecretRedactingFilter())
    setattr(handler, _OWN_HANDLER_ATTRIBUTE, True)

    root = logging.getLogger()
    for existing in list(root.handlers):
        if getattr(existing, _OWN_HANDLER_ATTRIBUTE, False):
            root.removeHandler(existing)
            existing.close()
    root.addHandler(handler)
    root.setLevel(level_name)
    quiet_third_party_loggers(debug_loggers)
    # Python warnings (deprecations in a plugin's dependency, say) go to the same place.
    logging.captureWarnings(True)
    return handler


def install_redaction(handler: logging.Handler) -> logging.Handler:
    """Put a :class:`SecretRedactingFilter` on a handler configured elsewhere (a file or
    syslog handler a deployment adds), once."""
    if not any(isinstance(f, SecretRedactingFilter) for f in handler.filters):
        handler.addFilter(SecretRedactingFilter())
    return handler


def _is_terminal(stream: Any) -> bool:
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):
        return False


def _document_extra(
    invoice: str | None, uuid: str | None, submission_uid: str | None, fields: Mapping[str, Any]
) -> dict[str, Any]:
    extra: dict[str, Any] = {"invoice": invoice, "uuid": uuid, "submission_uid": submission_uid}
    for key, value in fields.items():
        # logging raises KeyError for extra keys that clash with record attributes; a log call
        # must never crash the pipeline, so such a field is renamed instead.
        extra[f"field_{key}" if key in _STANDARD_ATTRIBUTES else key] = value
    return extra


def log_document(
    logger: logging.Logger | logging.LoggerAdapter,
    level: int | str,
    message: str,
    /,
    *args: Any,
    invoice: str | None = None,
    uuid: str | None = None,
    submission_uid: str | None = None,
    exc_info: Any = None,
    **fields: Any,
) -> None:
    """Log one line about one document, always carrying its invoice number, uuid and
    submission uid (``None`` until known), plus any further structured ``fields``.

    ``message`` is a %-template like any log call (positional, so a field may be called
    ``message`` or ``logger`` too); pass buyer data only as ``args``, never
    interpolated into the template: Sentry receives the template without its arguments."""
    levelno = level if isinstance(level, int) else logging.getLevelName(str(level).upper())
    if not isinstance(levelno, int):
        raise ValueError(f"unknown log level {level!r}")
    logger.log(levelno, message, *args, exc_info=exc_info, extra=_document_extra(invoice, uuid, submission_uid, fields))


class DocumentLogger(logging.LoggerAdapter):
    """A logger bound to one document: every call carries its invoice, uuid and submission uid.

    ``bind()`` returns a new adapter with more context, e.g. once the uuid comes back::

        log = document_logger(logger, invoice="INV-1")
        log.info("submitting")
        log = log.bind(uuid=uuid, submission_uid=sub_uid)
        log.info("accepted for validation")
    """

    def process(self, msg: Any, kwargs: MutableMapping[str, Any]) -> tuple[Any, MutableMapping[str, Any]]:
        merged = dict(self.extra or {})
        for key, value in _document_extra(None, None, None, kwargs.get("extra") or {}).items():
            # A call's own extra may add to the bound identity but not blank it out with None.
            if value is not None or key not in DOCUMENT_FIELDS:
                merged[key] = value
        kwargs["extra"] = merged
        return msg, kwargs

    def bind(self, **context: Any) -> DocumentLogger:
        merged = dict(self.extra or {})
        merged.update(_document_extra(None, None, None, context))
        for key in DOCUMENT_FIELDS:
            if key not in context:
                merged[key] = (self.extra or {}).get(key)
        return DocumentLogger(self.logger, merged)


def document_logger(
    logger: logging.Logger,
    *,
    invoice: str | None = None,
    uuid: str | None = None,
    submission_uid: str | None = None,
    **fields: Any,
) -> DocumentLogger:
    """An adapter whose every line carries this document's identity (see :class:`DocumentLogger`)."""
    return DocumentLogger(logger, _document_extra(invoice, uuid, submission_uid, fields))
