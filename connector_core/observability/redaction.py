"""What must never leave the process in clear: secrets, and (for Sentry) buyers' personal data.

One registry of secret values serves both the log filter and the Sentry scrubber, so a secret
registered once at start-up is masked wherever it could surface. Patterns catch what was never
registered: ``Bearer <token>`` and ``client_secret=...``-style pairs in URLs, form bodies, JSON
and error texts.

Personal data is handled separately (:func:`redact_personal_data`): logs stay on the machine and
clerks need an invalid e-mail address quoted back to fix it, while Sentry events leave the
machine for a third party and must carry no buyer data at all.
"""

from __future__ import annotations

import re
import threading
from collections.abc import Iterable

from pydantic import SecretStr

from connector_core.secrets import is_placeholder

SECRET_MASK = "[REDACTED]"
EMAIL_MASK = "[EMAIL]"
PHONE_MASK = "[PHONE]"

#: Shorter values are not registered: masking every "abc" in every log line would make logs
#: unreadable, and credentials that short are refused by LHDN and by any sane database anyway.
MIN_SECRET_LENGTH = 4

_registry_lock = threading.Lock()
_registered: set[str] = set()
# Rebuilt on every registration; readers take the current one without locking.
_registered_pattern: re.Pattern[str] | None = None


def register_secret(value: str | SecretStr | None) -> bool:
    """Mask ``value`` from now on in every log line and every Sentry event.

    The core calls this at start-up for client secrets, tokens as they are issued, and plugin
    secret options. Empty, placeholder and very short values are ignored (returns False).
    """
    global _registered_pattern
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    if not value or is_placeholder(value) or len(value) < MIN_SECRET_LENGTH:
        return False
    with _registry_lock:
        if value in _registered:
            return True
        _registered.add(value)
        _registered_pattern = _compile(_registered)
    return True


def forget_secret(value: str | SecretStr | None) -> None:
    """Stop masking ``value``: for an access token once its successor is in use. An expired
    token is worthless, and a connector renewing tokens hourly for years would otherwise grow
    the pattern every log line is checked against without bound."""
    global _registered_pattern
    if isinstance(value, SecretStr):
        value = value.get_secret_value()
    with _registry_lock:
        if value in _registered:
            _registered.discard(value)
            _registered_pattern = _compile(_registered) if _registered else None


def unregister_all_secrets() -> None:
    """Forget every registered value (for tests, and for a full reconfiguration)."""
    global _registered_pattern
    with _registry_lock:
        _registered.clear()
        _registered_pattern = None


def registered_secret_count() -> int:
    return len(_registered)


def _compile(values: Iterable[str]) -> re.Pattern[str]:
    # Longest first, so a secret that contains another is masked whole, not half.
    ordered = sorted(values, key=len, reverse=True)
    return re.compile("|".join(re.escape(v) for v in ordered))


# "Bearer eyJ..." in headers, exception texts and debug dumps of requests.
_BEARER = re.compile(r"(?i)\b(bearer)(\s+)(?!\[REDACTED\])[^\s\"',;)\]}]+")
# "Authorization: Basic dXNlcjpwYXNz" / "'authorization': 'Token abc'" - any scheme.
_AUTHORIZATION = re.compile(
    r"(?i)(\bauthorization[\"']?\s*[:=]\s*[\"']?(?:[A-Za-z]+\s+)?+)(?!\[REDACTED\])[^\s\"',;)\]}]+"
)
# (Each pattern skips a value already masked, so redacting twice changes nothing.)
# key=value and "key": "value" pairs whose key names a credential: query strings, OAuth form
# bodies (client_secret=...), JSON token responses ("access_token": "..."), DSNs in errors.
_CREDENTIAL_PAIR = re.compile(
    r"(?i)(\b(?:client_secret|access_token|refresh_token|id_token|password|passwd|api_key|apikey|secret)"
    r"[\"']?\s*[=:]\s*[\"']?)(?!\[REDACTED\])([^\s&\"',;)\]}]+)"
)


def redact_secrets(text: str) -> str:
    """``text`` with registered secrets and credential-looking patterns masked."""
    pattern = _registered_pattern
    if pattern is not None:
        text = pattern.sub(SECRET_MASK, text)
    text = _BEARER.sub(lambda m: f"{m.group(1)}{m.group(2)}{SECRET_MASK}", text)
    text = _AUTHORIZATION.sub(lambda m: f"{m.group(1)}{SECRET_MASK}", text)
    text = _CREDENTIAL_PAIR.sub(lambda m: f"{m.group(1)}{SECRET_MASK}", text)
    return text


_EMAIL = re.compile(r"[A-Za-z0-9._%+\-]+@[A-Za-z0-9\-]+(?:\.[A-Za-z0-9\-]+)*\.[A-Za-z]{2,}")
# International numbers start with "+": +60123456789, +60 12-345 6789, +6 (03) 1234 5678.
_PHONE_INTERNATIONAL = re.compile(r"(?<![\w+])\+\d[\d \-().]{6,20}\d(?!\d)")
# Malaysian national format: 012-345 6789, 0123456789, 03-1234 5678. The look-arounds keep
# invoice numbers like "INV-0123456789" and decimal amounts from being taken for phones.
_PHONE_NATIONAL = re.compile(r"(?<![\w\-/.])0\d{1,2}[ \-]?\d{3,4}[ \-]?\d{4}(?![\w\-])")


def _mask_phone(match: re.Match[str]) -> str:
    digits = sum(ch.isdigit() for ch in match.group(0))
    # E.164 numbers have 8 to 15 digits; anything else is some other number.
    return PHONE_MASK if 8 <= digits <= 15 else match.group(0)


def redact_personal_data(text: str) -> str:
    """``text`` with e-mail addresses and phone numbers masked (names and addresses have no
    recognisable shape; the Sentry scrubber removes those by the key they are stored under)."""
    text = _EMAIL.sub(EMAIL_MASK, text)
    text = _PHONE_INTERNATIONAL.sub(_mask_phone, text)
    text = _PHONE_NATIONAL.sub(_mask_phone, text)
    return text


def redact_everything(text: str) -> str:
    return redact_personal_data(redact_secrets(text))


# Words that, as part of a key, mark its value. Keys are split into words first ("buyerEmail",
# "buyer_email", "Buyer-Email" -> buyer, email), so "hostname" or "source_key" are kept while
# "cycle_name" is, deliberately, treated as personal too: a false alarm costs a field in an
# error report, a miss costs a buyer's data at a third party.
_CREDENTIAL_KEY_WORDS = frozenset(
    {
        "secret",
        "password",
        "passwd",
        "pwd",
        "token",
        "authorization",
        "auth",
        "cookie",
        "cookies",
        "credential",
        "credentials",
        "dsn",
        "session",
        "apikey",
    }
)
_CREDENTIAL_KEYS = frozenset({"api_key", "x_api_key", "private_key", "set_cookie"})
# Buyers' personal data (and self-billed suppliers', who are often individuals).
_PERSONAL_KEY_WORDS = frozenset(
    {
        "buyer",
        "customer",
        "name",
        "names",
        "fullname",
        "address",
        "addresses",
        "street",
        "phone",
        "telephone",
        "tel",
        "mobile",
        "fax",
        "email",
        "mail",
        "contact",
        "contacts",
        "nric",
        "passport",
        "tin",
    }
)
_PERSONAL_KEYS = frozenset({"id_value", "e_mail"})

_CAMEL_BOUNDARY = re.compile(r"(?<=[a-z0-9])(?=[A-Z])")
_WORD_SEPARATORS = re.compile(r"[^A-Za-z0-9]+")


def _key_words(key: object) -> list[str]:
    if not isinstance(key, str):
        return []
    return [w.lower() for w in _WORD_SEPARATORS.split(_CAMEL_BOUNDARY.sub("_", key)) if w]


def is_credential_key(key: object) -> bool:
    """True when ``key`` names a credential: ``client_secret``, ``accessToken``, ``Authorization``..."""
    words = _key_words(key)
    return "_".join(words) in _CREDENTIAL_KEYS or any(w in _CREDENTIAL_KEY_WORDS for w in words)


def is_personal_data_key(key: object) -> bool:
    """True when ``key`` names personal data: ``buyer``, ``name``, ``phone``, ``buyerEmail``..."""
    words = _key_words(key)
    return "_".join(words) in _PERSONAL_KEYS or any(w in _PERSONAL_KEY_WORDS for w in words)
