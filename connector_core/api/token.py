"""Access tokens: obtained once, cached for their lifetime, shared between threads and restarts.

LHDN throttles ``/connect/token`` at 12 calls per minute per client id and lists "a new token for
every call" as an anti-pattern. So:

* a token is reused until ``expires_in`` minus a margin (default 5 minutes, so a call started
  just before expiry does not fail mid-flight);
* one lock per provider: when many threads need a token at once, one logs in, the others wait
  and reuse it;
* the token is cached in a JSON file (never in the ledger: a token is a secret), written
  atomically with mode 0600, so a restarted daemon does not log in again;
* an intermediary gets one token per represented taxpayer (the taxpayer is baked into the
  token), so the cache key is (identity base URL, client id, on-behalf-of);
* empty or placeholder credentials are refused here, before any request: LHDN blocks such
  logins and counts them against the client id;
* a failed login blocks further attempts for an exponentially growing time (never faster than
  the login limit allows); meanwhile ``token()`` raises at once without calling LHDN.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

import httpx
from pydantic import BaseModel, ConfigDict, SecretStr

from ..secrets import is_placeholder
from .endpoints import ROUTES, Endpoint
from .errors import (
    ApiError,
    AuthenticationFailed,
    RateBackendUnavailable,
    RateLimited,
    RetriableError,
    error_class_for_status,
)
from .events import ApiCall, Listener, notify
from .ratelimit import RatePolicy
from .responses import parse_error_body
from .retry import RetrySettings, login_backoff, parse_retry_after, rate_limited_delay
from .send_watch import SendWatch

log = logging.getLogger(__name__)

DEFAULT_EXPIRY_MARGIN_S = 300.0


class Credentials(BaseModel):
    """An ERP system's client id and secret; ``on_behalf_of`` (TIN or TIN:BRN) for an intermediary."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    client_id: str
    client_secret: SecretStr
    on_behalf_of: str | None = None


class TokenKey(NamedTuple):
    identity_base_url: str
    client_id: str
    on_behalf_of: str

    def as_string(self) -> str:
        return f"{self.identity_base_url}|{self.client_id}|{self.on_behalf_of}"


@dataclass(frozen=True)
class CachedToken:
    access_token: str
    #: Epoch seconds at which LHDN stops accepting the token (no margin applied).
    expires_at: float
    #: Epoch seconds at which it was issued (to size the margin for short-lived tokens).
    issued_at: float = 0.0

    def __repr__(self) -> str:  # never print the token itself
        return f"CachedToken(access_token='***', expires_at={self.expires_at:.0f})"

    __str__ = __repr__


class TokenCache:
    """Tokens by :class:`TokenKey`, in memory and optionally in a 0600 JSON file.

    Several processes may share the file: every write re-reads it under a file lock and merges,
    so one process's token does not erase another's.
    """

    def __init__(self, path: str | os.PathLike[str] | None = None) -> None:
        self.path = Path(path).expanduser() if path is not None else None
        self._memory: dict[str, CachedToken] = {}
        self._lock = threading.Lock()
        self._file_lock = None
        if self.path is not None:
            from filelock import FileLock

            self._file_lock = FileLock(str(self.path) + ".lock")

    def get(self, key: TokenKey) -> CachedToken | None:
        with self._lock:
            if self.path is not None:
                self._memory.update(self._read_file())
            return self._memory.get(key.as_string())

    def put(self, key: TokenKey, token: CachedToken) -> None:
        with self._lock:
            self._memory[key.as_string()] = token
            self._write(lambda entries: entries.__setitem__(key.as_string(), token))

    def discard(self, key: TokenKey, access_token: str | None = None) -> None:
        """Forget the token of ``key`` (only if it is still ``access_token``, when given)."""
        with self._lock:
            current = self._memory.get(key.as_string())
            if current is not None and (access_token is None or current.access_token == access_token):
                del self._memory[key.as_string()]

            def drop(entries: dict[str, CachedToken]) -> None:
                stored = entries.get(key.as_string())
                if stored is not None and (access_token is None or stored.access_token == access_token):
                    del entries[key.as_string()]

            self._write(drop)

    def _read_file(self) -> dict[str, CachedToken]:
        assert self.path is not None
        try:
            raw = json.loads(self.path.read_text("utf-8"))
        except FileNotFoundError:
            return {}
        except (OSError, ValueError) as exc:
            # A damaged cache only costs one login; say so without quoting its content.
            log.warning("ignoring unreadable token cache %s (%s)", self.path, type(exc).__name__)
            return {}
        entries: dict[str, CachedToken] = {}
        now = time.time()
        for k, v in (raw.get("tokens") or {}).items() if isinstance(raw, dict) else ():
            try:
                token = CachedToken(str(v["access_token"]), float(v["expires_at"]), float(v.get("issued_at") or 0))
            except (KeyError, TypeError, ValueError):
                continue
            if token.expires_at > now:
                entries[k] = token
        return entries

    def _write(self, change: Callable[[dict[str, CachedToken]], None]) -> None:
        if self.path is None:
            return
        assert self._file_lock is not None
        self.path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        with self._file_lock:
            entries = self._read_file()
            change(entries)
            payload = {
                "comment": "MyInvois access tokens: secrets, keep this file private (mode 0600).",
                "tokens": {
                    k: {"access_token": t.access_token, "expires_at": t.expires_at, "issued_at": t.issued_at}
                    for k, t in entries.items()
                },
            }
            # mkstemp creates the file 0600 from the start: the token is never world-readable,
            # not even for an instant; os.replace makes the new content appear atomically.
            fd, tmp = tempfile.mkstemp(prefix=".tokens-", dir=self.path.parent)
            try:
                with os.fdopen(fd, "w", encoding="utf-8") as fh:
                    json.dump(payload, fh)
                    fh.flush()
                    os.fsync(fh.fileno())
                os.chmod(tmp, 0o600)
                os.replace(tmp, self.path)
            except BaseException:
                try:
                    os.unlink(tmp)
                except OSError:
                    pass
                raise


class TokenProvider:
    """Hands out a valid access token for one set of credentials, logging in only when needed."""

    def __init__(
        self,
        identity_base_url: str,
        credentials: Credentials,
        *,
        http: httpx.Client | None = None,
        cache: TokenCache | None = None,
        expiry_margin_s: float = DEFAULT_EXPIRY_MARGIN_S,
        retry_settings: RetrySettings | None = None,
        rate_policy: RatePolicy | None = None,
        listeners: Iterable[Listener] = (),
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.identity_base_url = identity_base_url.rstrip("/")
        self.credentials = credentials
        self.retry_settings = retry_settings or RetrySettings()
        self._own_http = http is None
        self._http = http or httpx.Client(timeout=self.retry_settings.timeout())
        self.cache = cache or TokenCache()
        self.expiry_margin_s = expiry_margin_s
        self.rate_policy = rate_policy
        self.listeners = tuple(listeners)
        self._clock = clock
        self._lock = threading.Lock()
        self._failures = 0
        self._blocked_until = 0.0
        self._last_error: ApiError | None = None
        # The token in use, so the common case costs no file read.
        self._current: CachedToken | None = None
        self.key = TokenKey(self.identity_base_url, credentials.client_id, credentials.on_behalf_of or "")

    def _usable(self, token: CachedToken | None) -> bool:
        if token is None:
            return False
        return self._clock() < token.expires_at - self._margin_for(token)

    def _margin_for(self, token: CachedToken) -> float:
        # A short-lived token (a test simulator's) must still be usable: never let the margin
        # eat more than half of what is left of its life at issue time (stored with the token).
        lifetime = token.expires_at - token.issued_at
        return min(self.expiry_margin_s, lifetime / 2) if token.issued_at else self.expiry_margin_s

    def token(self) -> str:
        """A token valid for at least the margin; logs in (once, for all threads) if needed."""
        current = self._current
        if current is not None and self._usable(current):
            return current.access_token
        with self._lock:
            # Another thread may have logged in while we waited; another process may have
            # written a fresh token to the shared cache file.
            for candidate in (self._current, self.cache.get(self.key)):
                if candidate is not None and self._usable(candidate):
                    self._current = candidate
                    return candidate.access_token
            return self._login_locked()

    def login(self) -> str:
        """Log in now (respecting the failure back-off) and cache the new token."""
        with self._lock:
            return self._login_locked()

    def invalidate(self, access_token: str | None = None) -> bool:
        """The API answered 401 with ``access_token``: forget it.

        Returns False when the token was no longer the one in use (another thread already
        replaced it): the caller's call was merely stale, its credentials are not in question.
        """
        with self._lock:
            ours = self._current is not None and (access_token is None or self._current.access_token == access_token)
            if ours:
                self._current = None
            self.cache.discard(self.key, access_token)
            return ours

    def _refuse_placeholders(self) -> None:
        c = self.credentials
        if is_placeholder(c.client_id) or is_placeholder(c.client_secret):
            which = "client_id" if is_placeholder(c.client_id) else "client_secret"
            raise AuthenticationFailed(
                f"MyInvois {which} is empty or a placeholder value; set the real {which} of the ERP system "
                "registered in the MyInvois portal (the login was not attempted: LHDN blocks such logins)",
                endpoint=Endpoint.login,
            )
        if c.on_behalf_of is not None and not c.on_behalf_of.strip():
            raise AuthenticationFailed(
                "on_behalf_of is set but empty; give the represented taxpayer's TIN (or TIN:BRN), or remove it",
                endpoint=Endpoint.login,
            )

    def _login_locked(self) -> str:
        self._refuse_placeholders()
        now = self._clock()
        if now < self._blocked_until and self._last_error is not None:
            wait = self._blocked_until - now
            error_class = type(self._last_error)
            raise error_class(
                f"{self._last_error.message} — not retrying the login for another {wait:.0f} s "
                f"({self._failures} failed in a row)",
                endpoint=Endpoint.login,
                status=self._last_error.status,
                code=self._last_error.code,
            )
        try:
            token = self._request_token()
        except RateBackendUnavailable:
            # Nothing left this host: no login was attempted, so none is held against the
            # login limit; the next call logs in as soon as the backend answers again.
            raise
        except ApiError as exc:
            self._failures += 1
            self._last_error = exc
            delay = login_backoff(self._failures, self.retry_settings)
            if isinstance(exc, RateLimited) and exc.retry_after:
                delay = max(delay, exc.retry_after)
            self._blocked_until = self._clock() + delay
            raise
        self._failures = 0
        self._last_error = None
        self._blocked_until = 0.0
        self.cache.put(self.key, token)
        self._current = token
        return token.access_token

    def _request_token(self) -> CachedToken:
        c = self.credentials
        form = {
            "client_id": c.client_id,
            "client_secret": c.client_secret.get_secret_value(),
            "grant_type": "client_credentials",
            "scope": "InvoicingAPI",
        }
        headers = {"Accept": "application/json"}
        if c.on_behalf_of:
            headers["onbehalfof"] = c.on_behalf_of.strip()
        slot = self.rate_policy.take(c.client_id, Endpoint.login) if self.rate_policy is not None else None
        url = self.identity_base_url + ROUTES[Endpoint.login].path
        started = time.monotonic()
        watch = SendWatch()
        try:
            try:
                response = self._http.post(url, data=form, headers=headers, extensions=watch.extensions)
            finally:
                # Counted from when the request left, not from the grant (see api/ratelimit.py).
                if self.rate_policy is not None and slot is not None:
                    self.rate_policy.release(slot, sent_seconds_ago=watch.sent_seconds_ago())
        except httpx.TransportError as exc:
            error = RetriableError(
                f"could not reach the MyInvois identity service at {self.identity_base_url} "
                f"({type(exc).__name__}); check the network and identity_base_url",
                endpoint=Endpoint.login,
            )
            notify(
                self.listeners, ApiCall(Endpoint.login, "POST", None, time.monotonic() - started, 1, "RetriableError")
            )
            raise error from None
        duration = time.monotonic() - started
        correlation_id = response.headers.get("correlationId")
        error_class = error_class_for_status(Endpoint.login, response.status_code)
        retry_after = parse_retry_after(response.headers.get("Retry-After"))
        notify(
            self.listeners,
            ApiCall(
                Endpoint.login,
                "POST",
                response.status_code,
                duration,
                1,
                error_class.__name__ if error_class else None,
                retry_after,
                correlation_id,
            ),
        )
        log.info("MyInvois login: status %s correlationId %s", response.status_code, correlation_id)
        if error_class is not None:
            raise self._login_error(error_class, response, retry_after, correlation_id)
        try:
            body = response.json()
            access_token = str(body["access_token"])
            expires_in = float(body.get("expires_in") or 3600)
        except (ValueError, KeyError, TypeError):
            raise RetriableError(
                "the MyInvois identity service answered the login without a readable access_token",
                endpoint=Endpoint.login,
                status=response.status_code,
                correlation_id=correlation_id,
            ) from None
        issued_at = self._clock()
        return CachedToken(access_token, issued_at + expires_in, issued_at)

    def _login_error(
        self,
        error_class: type[ApiError],
        response: httpx.Response,
        retry_after: float | None,
        correlation_id: str | None,
    ) -> ApiError:
        try:
            detail = parse_error_body(response.json())
        except ValueError:
            detail = None
        said = f": {detail.summary()}" if detail else ""
        common: dict[str, Any] = {
            "endpoint": Endpoint.login,
            "status": response.status_code,
            "code": detail.code if detail else None,
            "correlation_id": correlation_id,
            "detail": detail,
        }
        who = f"client id {self.credentials.client_id}"
        if self.credentials.on_behalf_of:
            who += f" acting for {self.credentials.on_behalf_of}"
        if error_class is RateLimited:
            if self.rate_policy is not None:
                self.rate_policy.record_retry_after(
                    self.credentials.client_id, Endpoint.login, rate_limited_delay(retry_after, self.retry_settings)
                )
            return RateLimited(
                f"MyInvois throttled logins of {who} (HTTP 429); the token should be cached — "
                "check that several connectors do not share this client id",
                retry_after=retry_after,
                **common,
            )
        if error_class is AuthenticationFailed:
            hint = "check client_id and client_secret for this environment (production and sandbox credentials differ)"
            if self.credentials.on_behalf_of:
                hint += ", and that the taxpayer has authorised this intermediary in the MyInvois portal"
            return AuthenticationFailed(
                f"MyInvois refused the login of {who} (HTTP {response.status_code}{said}); {hint}", **common
            )
        return error_class(
            f"MyInvois login failed for {who} (HTTP {response.status_code}{said}); will retry later", **common
        )

    def close(self) -> None:
        if self._own_http:
            self._http.close()
