"""Error reporting to Sentry, only when a DSN is configured, and never with secrets or buyer data.

Sentry events leave the machine for a third party, so every event and breadcrumb passes
:func:`scrub_event` / :func:`scrub_breadcrumb` on its way out:

* values stored under keys that name a credential (``client_secret``, ``token``,
  ``authorization``, ``password``, cookies) or personal data (``buyer``, ``name``, ``address``,
  ``phone``, ``telephone``, ``email``, ``contact``, identity numbers) are replaced wholesale;
* log messages are sent as their template, each argument replaced by ``[Filtered]``;
* every remaining string anywhere in the event is cleared of registered secrets, bearer tokens,
  ``client_secret=...`` pairs, e-mail addresses and phone numbers.

A log line that is nothing but its arguments (``log.error("%s", failure)``) would reach Sentry
as ``[Filtered]``: an event with no title and no tags. Such lines are not sent; every failure
they tell of is reported by a dedicated, titled and tagged event (:func:`capture_plugin_error`,
:func:`capture_login_failure`, :func:`capture_escalation`...).

Breadcrumbs are what led up to an event: MyInvois API calls (:func:`add_api_breadcrumb`), cycle
steps (:func:`add_cycle_breadcrumb`, :func:`add_step_breadcrumb`) and the connector's own
warnings; not SQL statements, library log lines, per-invoice INFO lines or HTTP calls to
anything else. The SDK's auto-enabled integrations
(SQLAlchemy, httpx, Redis...) are off for that reason.

Local variables of stack frames are not collected at all (``include_local_variables=False``):
an ``invoice`` variable's repr holds the buyer's name and address in a shape no key-based
scrubber can take apart. Frames still carry file, function and line.

The helpers (:func:`capture_login_failure`, :func:`capture_stuck_submissions`,
:func:`capture_plugin_error`, :func:`add_api_breadcrumb`, :func:`sentry_scope`) are safe to call
when Sentry is not enabled: they do nothing and return ``None``.
"""

from __future__ import annotations

import logging
import re
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any

import sentry_sdk
from pydantic import SecretStr
from sentry_sdk.integrations.logging import LoggingIntegration

from connector_core.observability.logs import LOG_ARGUMENTS_ATTRIBUTE, LOG_TEMPLATE_ATTRIBUTE
from connector_core.observability.redaction import (
    is_credential_key,
    is_personal_data_key,
    redact_everything,
    register_secret,
)
from connector_core.secrets import is_placeholder

log = logging.getLogger(__name__)

FILTERED = "[Filtered]"

# Contexts the SDK fills with facts about the runtime, not about our data: their "name" keys
# (runtime name, OS name) are kept.
_SDK_CONTEXTS = frozenset(
    {"runtime", "os", "device", "app", "trace", "trace_context", "otel", "cloud_resource", "culture"}
)
# Top-level parts of an event written by the SDK itself, holding no user data worth scrubbing
# by key; their strings are still cleared of secrets and personal data by value.
_STRUCTURAL_TOP_LEVEL = frozenset(
    {
        "sdk",
        "modules",
        "server_name",
        "platform",
        "release",
        "environment",
        "level",
        "logger",
        "transaction",
        "timestamp",
        "start_timestamp",
        "event_id",
        "type",
        "fingerprint",
        "exception",
        "threads",
        "message",
        "logentry",
        "debug_meta",
        "spans",
        "measurements",
    }
)


def is_sensitive_key(key: Any) -> bool:
    """True when a value stored under ``key`` must not leave the machine: it names a
    credential or personal data (see :mod:`~connector_core.observability.redaction`)."""
    return is_credential_key(key) or is_personal_data_key(key)


def _scrub(value: Any, *, by_key: bool) -> Any:
    """A scrubbed copy of ``value``. ``by_key``: also replace values under sensitive keys.

    Local variables (``vars``) are always scrubbed by key, wherever they appear."""
    if isinstance(value, str):
        return redact_everything(value)
    if isinstance(value, dict):
        result = {}
        for key, item in value.items():
            if by_key and is_sensitive_key(key):
                result[key] = FILTERED
            else:
                result[key] = _scrub(item, by_key=by_key or key == "vars")
        return result
    if isinstance(value, (list, tuple)):
        return [_scrub(item, by_key=by_key) for item in value]
    return value


class _EveryKeyFiltered(dict):
    def __missing__(self, key: str) -> str:
        return FILTERED


def log_message_without_arguments(record: logging.LogRecord) -> str:
    """A log record's message with each argument replaced by ``[Filtered]``.

    ``log.warning("buyer %s refused", name)`` reaches Sentry as ``buyer [Filtered] refused``:
    arguments have no recognisable shape, while a document's identity travels safely in the
    structured fields (``invoice``, ``uuid``, ``submission_uid``) beside the message."""
    template = getattr(record, LOG_TEMPLATE_ATTRIBUTE, None)
    if template is not None:
        shape = getattr(record, LOG_ARGUMENTS_ATTRIBUTE, 0)
    else:
        template = str(record.msg)
        args = record.args
        shape = (
            "mapping"
            if isinstance(args, Mapping)
            else (len(args) if isinstance(args, tuple) else int(args is not None))
        )
    try:
        if shape == "mapping":
            text = template % _EveryKeyFiltered()
        elif shape:
            text = template % tuple(FILTERED for _ in range(int(shape)))
        else:
            text = template
    except (TypeError, ValueError, KeyError):
        # "%d" and friends refuse a string; the bare template still says what happened.
        text = template
    return redact_everything(text)


#: A %-style placeholder: ``%s``, ``%(name)s``, ``%5.1f``...
_PLACEHOLDER = re.compile(r"%(?:\([^)]*\))?[-#0 +]*(?:\d+|\*)?(?:\.\d+)?[a-zA-Z%]")


def is_only_arguments(record: logging.LogRecord) -> bool:
    """True for a log line whose template holds no words of its own (``"%s"``, ``"%s: %s"``):
    without its arguments, which never leave for Sentry, it says nothing at all."""
    template = getattr(record, LOG_TEMPLATE_ATTRIBUTE, None)
    if template is None:
        template = str(record.msg)
    return not any(ch.isalnum() for ch in _PLACEHOLDER.sub("", template))


def scrub_event(event: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """``before_send``: the event with credentials and buyer personal data removed (see module
    doc); None (not sent) for an event made of a log line that is only its arguments."""
    record = (hint or {}).get("log_record")
    if isinstance(record, logging.LogRecord) and is_only_arguments(record):
        return None
    scrubbed: dict[str, Any] = {}
    for key, value in event.items():
        if key == "logentry" and isinstance(value, dict):
            # Log messages go without their arguments (see log_message_without_arguments).
            if isinstance(record, logging.LogRecord):
                message = log_message_without_arguments(record)
            else:
                message = _scrub(value.get("message", ""), by_key=False)
            scrubbed[key] = {"message": message, "formatted": message, "params": []}
        elif key == "contexts" and isinstance(value, dict):
            scrubbed[key] = {name: _scrub(context, by_key=name not in _SDK_CONTEXTS) for name, context in value.items()}
        elif key == "breadcrumbs":
            scrubbed[key] = _scrub_breadcrumbs(value)
        elif key == "user":
            # We never set a user; anything here came from an integration guessing one.
            scrubbed[key] = {}
        else:
            scrubbed[key] = _scrub(value, by_key=key not in _STRUCTURAL_TOP_LEVEL)
    return scrubbed


def _scrub_breadcrumbs(value: Any) -> Any:
    if isinstance(value, dict) and isinstance(value.get("values"), list):
        return {**value, "values": [scrub_breadcrumb(crumb) for crumb in value["values"] if isinstance(crumb, dict)]}
    if isinstance(value, list):
        return [scrub_breadcrumb(crumb) for crumb in value if isinstance(crumb, dict)]
    return _scrub(value, by_key=True)


API_BREADCRUMB_CATEGORY = "myinvois.api"
CYCLE_BREADCRUMB_CATEGORY = "connector.cycle"
#: Log lines of these loggers are breadcrumbs; any other library's are not.
_OWN_LOGGERS = ("connector_core",)


def keep_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any] | None:
    """``before_breadcrumb``: MyInvois API calls, cycle steps and the connector's own warnings,
    scrubbed (:func:`scrub_breadcrumb`); None (dropped) for anything else: SQL statements, other
    HTTP calls, library log lines, INFO lines, and log lines that are only their arguments."""
    category = str(crumb.get("category") or "")
    if category in (API_BREADCRUMB_CATEGORY, CYCLE_BREADCRUMB_CATEGORY):
        return scrub_breadcrumb(crumb, hint)
    record = (hint or {}).get("log_record")
    if isinstance(record, logging.LogRecord) and record.levelno >= logging.WARNING:
        # The connector's own warnings say what went wrong before the event; its INFO lines
        # (one per invoice, thousands a cycle) would push the API calls and steps out.
        own = any(record.name == name or record.name.startswith(f"{name}.") for name in _OWN_LOGGERS)
        if own and not is_only_arguments(record):
            return scrub_breadcrumb(crumb, hint)
    return None


def scrub_breadcrumb(crumb: dict[str, Any], hint: dict[str, Any] | None = None) -> dict[str, Any]:
    """``before_breadcrumb``: message and data cleared like an event's extra data; a log
    record's message without its arguments.

    The structural keys of a breadcrumb (type, category, level, timestamp) are kept as they are."""
    scrubbed = dict(crumb)
    record = (hint or {}).get("log_record")
    if isinstance(record, logging.LogRecord):
        scrubbed["message"] = log_message_without_arguments(record)
    elif "message" in scrubbed:
        scrubbed["message"] = _scrub(scrubbed["message"], by_key=False)
    if "data" in scrubbed:
        scrubbed["data"] = _scrub(scrubbed["data"], by_key=True)
    return scrubbed


def init_sentry(
    dsn: SecretStr | str | None,
    *,
    environment: str,
    release: str,
    sample_rate: float = 1.0,
    log_event_level: int | None = logging.ERROR,
    shutdown_timeout: float = 5.0,
    transport: Any = None,
) -> bool:
    """Start reporting to Sentry when ``dsn`` is set; returns whether it was enabled.

    ``environment`` is the deployment (``production``, ``staging``); ``release`` the connector
    version. Log records at INFO and above become breadcrumbs of the next event; records at
    ``log_event_level`` and above (ERROR by default, ``None`` for never) become events.
    No performance tracing is sent, and no request bodies or local variables are collected.
    ``transport``: a ``sentry_sdk.transport.Transport`` instead of HTTP (tests capture envelopes).
    """
    if isinstance(dsn, SecretStr):
        dsn = dsn.get_secret_value()
    if dsn is None or is_placeholder(dsn):
        close_sentry()  # a reconfiguration without a DSN switches reporting off
        log.info("Sentry reporting is off (no observability.sentry_dsn configured)")
        return False
    # The DSN's key lets anyone post events into the project; it never goes into a log line.
    register_secret(dsn)
    sentry_sdk.init(
        dsn=dsn,
        environment=environment,
        release=release,
        sample_rate=sample_rate,
        include_local_variables=False,
        max_request_body_size="never",
        before_send=scrub_event,  # type: ignore[arg-type]  # sentry's Event is a TypedDict of this dict
        before_breadcrumb=keep_breadcrumb,
        traces_sample_rate=None,
        shutdown_timeout=shutdown_timeout,
        # No SQLAlchemy, httpx, Redis... integrations: their breadcrumbs are SQL statements and
        # requests to anything; ours are the API calls and cycle steps (see the module doc).
        auto_enabling_integrations=False,
        integrations=[LoggingIntegration(level=logging.INFO, event_level=log_event_level)],
        **({"transport": transport} if transport is not None else {}),
    )
    log.info("Sentry reporting is on (environment %s, release %s)", environment, release)
    return True


def flush_sentry(timeout: float = 5.0) -> None:
    """Send what is queued, waiting up to ``timeout`` seconds: call on graceful shutdown."""
    client = sentry_sdk.get_client()
    if client.is_active():
        client.flush(timeout=timeout)


def close_sentry(timeout: float = 5.0) -> None:
    """Flush and switch reporting off (end of the process, or a reconfiguration)."""
    client = sentry_sdk.get_client()
    if client.is_active():
        client.close(timeout=timeout)
    # A closed client still counts as active; only removing it makes every helper a no-op.
    sentry_sdk.get_global_scope().set_client(None)


def sentry_enabled() -> bool:
    return sentry_sdk.get_client().is_active()


@contextmanager
def sentry_scope(
    *, profile: str | None = None, plugin: str | None = None, cycle: str | None = None, environment: str | None = None
) -> Iterator[Any]:
    """Tag every event captured inside the block with what the connector was doing.

    ``environment`` is the MyInvois environment of the profile (``sandbox``/``production``),
    tagged ``myinvois_environment`` so it does not clash with Sentry's own deployment
    ``environment``. Tags set here end with the block.
    """
    with sentry_sdk.new_scope() as scope:
        for tag, value in (
            ("profile", profile),
            ("plugin", plugin),
            ("cycle", cycle),
            ("myinvois_environment", environment),
        ):
            if value is not None:
                scope.set_tag(tag, value)
        yield scope


def add_api_breadcrumb(endpoint: str, method: str, status: int | None, duration_s: float) -> None:
    """Record one MyInvois API call, so an event shows the calls that led up to it.

    ``endpoint`` is the path or its template, never a URL with a query string; ``status`` is
    ``None`` when no answer came (timeout, connection refused)."""
    if status is None or status >= 500:
        level = "error"
    elif status >= 400:
        level = "warning"
    else:
        level = "info"
    sentry_sdk.add_breadcrumb(
        type="http",
        category=API_BREADCRUMB_CATEGORY,
        level=level,
        message=f"{method.upper()} {endpoint} -> {status if status is not None else 'no response'}",
        data={
            "method": method.upper(),
            "url": endpoint,
            "status_code": status,
            "duration_ms": round(duration_s * 1000, 1),
        },
    )


def add_cycle_breadcrumb(cycle: str, duration_s: float, ok: bool) -> None:
    """Record that a scheduler cycle (fetch and submit, poll) ended, so an event shows the
    cycles that ran before it."""
    sentry_sdk.add_breadcrumb(
        type="default",
        category=CYCLE_BREADCRUMB_CATEGORY,
        level="info" if ok else "error",
        message=f"cycle {cycle} {'finished' if ok else 'failed'} in {duration_s:.1f} s",
        data={"cycle": cycle, "duration_s": round(duration_s, 3), "ok": ok},
    )


def add_step_breadcrumb(step: str, message: str, *, ok: bool = True, **data: Any) -> None:
    """Record one step of a cycle (a source read, a submission on its way): ``message`` names
    sources and profiles by their configured names, never an invoice's content."""
    sentry_sdk.add_breadcrumb(
        type="default",
        category=CYCLE_BREADCRUMB_CATEGORY,
        level="info" if ok else "error",
        message=message,
        data={"step": step, **data},
    )


def _error_text(error: BaseException | str) -> str:
    if isinstance(error, BaseException):
        return f"{type(error).__name__}: {error}"
    return str(error)


def capture_login_failure(profile: str, error: BaseException | str) -> str | None:
    """Report that a profile could not log in to MyInvois; returns the event id.

    Sent as a message, not an exception: a refused login is an expected failure whose traceback
    says nothing, and one issue per profile (by fingerprint) keeps a night of retries in one place."""
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("profile", profile)
        scope.set_tag("failure", "login")
        scope.fingerprint = ["myinvois-login-failure", profile]
        scope.set_context("login", {"profile": profile, "error": _error_text(error)})
        return sentry_sdk.capture_message(
            f"MyInvois login failed for profile '{profile}': {_error_text(error)}", level="error"
        )


#: At most this many submission uids are listed in one event; the count is always exact.
MAX_LISTED_SUBMISSIONS = 50


def capture_stuck_submissions(profile: str, submission_uids: Sequence[str], age_s: float) -> str | None:
    """Report submissions MyInvois has not finished validating after ``age_s`` seconds (the
    oldest one's age); returns the event id."""
    uids = list(submission_uids)
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("profile", profile)
        scope.set_tag("failure", "stuck_submissions")
        scope.fingerprint = ["myinvois-stuck-submissions", profile]
        scope.set_context(
            "stuck_submissions",
            {"count": len(uids), "oldest_age_s": round(age_s), "submission_uids": uids[:MAX_LISTED_SUBMISSIONS]},
        )
        return sentry_sdk.capture_message(
            f"{len(uids)} submission(s) of profile '{profile}' still in progress after {round(age_s)} s",
            level="warning",
        )


def capture_plugin_error(
    plugin: str, hook: str, source: str | None, exc: BaseException, *, profile: str | None = None
) -> str | None:
    """Report an exception a plugin's hook raised (the pipeline carries on with other plugins);
    returns the event id. Titled by the exception (its type and message, scrubbed), grouped by
    traceback, tagged with plugin, hook, source and the source's profile."""
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("plugin", plugin)
        scope.set_tag("hook", hook)
        if source is not None:
            scope.set_tag("source", source)
        if profile is not None:
            scope.set_tag("profile", profile)
        scope.set_tag("failure", "plugin")
        scope.set_context("plugin_failure", {"plugin": plugin, "hook": hook, "source": source, "profile": profile})
        return sentry_sdk.capture_exception(exc)


def capture_escalation(profile: str, submission: int | str, documents: int | None = None) -> str | None:
    """Report a submission the connector stopped reconciling (an operator decides); returns the
    event id. One issue per profile."""
    with sentry_sdk.new_scope() as scope:
        scope.set_tag("profile", profile)
        scope.set_tag("failure", "escalated_submission")
        scope.fingerprint = ["myinvois-escalated-submission", profile]
        scope.set_context("escalated_submission", {"submission": submission, "documents": documents})
        return sentry_sdk.capture_message(
            f"Submission {submission} of profile '{profile}' escalated: still in doubt, no longer reconciled; "
            "look its invoices up on the MyInvois portal",
            level="error",
        )
