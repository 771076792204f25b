"""Odoo's external API over XML-RPC or JSON-RPC, behind one small client.

Both flavours carry the same calls: ``common.version()``, ``common.authenticate(db, login,
key, {})`` and ``object.execute_kw(db, uid, key, model, method, args, kwargs)``. Errors come
back as :class:`OdooCallError` with Odoo's exception name and message, never with the key.
"""

from __future__ import annotations

import http.client
import itertools
import xmlrpc.client
from typing import Any

import httpx

from myinvois_odoo.options import OdooSourceOptions

#: Odoo's XML-RPC fault codes (odoo/service/wsgi_server.py) and the exceptions they stand for.
_FAULT_NAMES = {
    1: "application error",
    2: "odoo.exceptions.UserError",
    3: "odoo.exceptions.AccessDenied",
    4: "odoo.exceptions.AccessError",
}

SUPPORTED_MAJOR_VERSIONS = range(16, 19)


class OdooError(RuntimeError):
    """Something about an Odoo source went wrong; the message says what to do."""


class OdooCallError(OdooError):
    """Odoo answered a call with an error."""

    def __init__(self, name: str, message: str, call: str) -> None:
        self.name = name
        self.odoo_message = message
        super().__init__(f"Odoo refused {call}: {message} ({name})")

    @property
    def is_access_denied(self) -> bool:
        return self.name.endswith("AccessDenied")

    @property
    def is_access_error(self) -> bool:
        return self.name.endswith("AccessError")


def _last_line(text: str) -> str:
    """An application fault carries a traceback; its last line is the error itself."""
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return lines[-1].strip() if lines else text


class _TimeoutTransport(xmlrpc.client.Transport):
    """xmlrpc.client's transports wait for ever by default: an ERP that stops answering would
    hang the fetch cycle."""

    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPConnection:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


class _TimeoutSafeTransport(xmlrpc.client.SafeTransport):
    def __init__(self, timeout: float) -> None:
        super().__init__()
        self._timeout = timeout

    def make_connection(self, host: Any) -> http.client.HTTPSConnection:
        connection = super().make_connection(host)
        connection.timeout = self._timeout
        return connection


class _XmlRpc:
    def __init__(self, options: OdooSourceOptions) -> None:
        secure = options.url.startswith("https://")
        self._proxies = {
            service: xmlrpc.client.ServerProxy(
                f"{options.url}/xmlrpc/2/{service}",
                transport=(_TimeoutSafeTransport if secure else _TimeoutTransport)(options.timeout_seconds),
                allow_none=True,
            )
            for service in ("common", "object")
        }

    def call(self, service: str, method: str, args: list[Any], label: str) -> Any:
        try:
            return getattr(self._proxies[service], method)(*args)
        except xmlrpc.client.Fault as fault:
            name = _FAULT_NAMES.get(fault.faultCode, str(fault.faultCode))
            message = _last_line(str(fault.faultString))
            if fault.faultCode == 1 and ": " in message:
                name, message = message.split(": ", 1)
            raise OdooCallError(name, message, label) from None
        except xmlrpc.client.ProtocolError as exc:
            raise OdooError(f"Odoo answered {label} with HTTP {exc.errcode} {exc.errmsg}") from None


class _JsonRpc:
    def __init__(self, options: OdooSourceOptions) -> None:
        self._url = f"{options.url}/jsonrpc"
        self._client = httpx.Client(timeout=options.timeout_seconds)
        self._ids = itertools.count(1)

    def call(self, service: str, method: str, args: list[Any], label: str) -> Any:
        request = {
            "jsonrpc": "2.0",
            "method": "call",
            "params": {"service": service, "method": method, "args": args},
            "id": next(self._ids),
        }
        response = self._client.post(self._url, json=request)
        if response.status_code != 200:
            raise OdooError(f"Odoo answered {label} with HTTP {response.status_code}")
        body = response.json()
        if "error" in body:
            data = body["error"].get("data") or {}
            raise OdooCallError(
                data.get("name", "error"), data.get("message") or body["error"].get("message", ""), label
            )
        return body.get("result")

    def close(self) -> None:
        self._client.close()


class OdooClient:
    """An authenticated session of one Odoo source."""

    def __init__(self, options: OdooSourceOptions) -> None:
        self.options = options
        self._transport = _XmlRpc(options) if options.protocol == "xmlrpc" else _JsonRpc(options)
        self.uid: int | None = None
        self.major_version = 0

    def _call(self, service: str, method: str, args: list[Any], label: str) -> Any:
        try:
            return self._transport.call(service, method, args, label)
        except (OSError, httpx.HTTPError) as exc:
            # Connection refused, DNS, timeouts: the message names the URL, never the key.
            raise OdooError(
                f"cannot reach Odoo at {self.options.url} ({type(exc).__name__}: {exc}); the next cycle tries again"
            ) from None

    def authenticate(self) -> int:
        version = self._call("common", "version", [], "version()")
        info = version.get("server_version_info") or [0]
        self.major_version = int(info[0]) if str(info[0]).isdigit() else 0
        if self.major_version and self.major_version < SUPPORTED_MAJOR_VERSIONS.start:
            raise OdooError(
                f"Odoo at {self.options.url} is version {version.get('server_version')}; this plugin needs Odoo 16 to 18"
            )
        uid = self._call(
            "common",
            "authenticate",
            [self.options.database, self.options.login, self.options.api_key.get_secret_value(), {}],
            "authenticate",
        )
        if not uid:
            raise OdooError(
                f"Odoo at {self.options.url} refused login {self.options.login!r} on database {self.options.database!r}: "
                "check the login and the api_key option (an API key is made in Odoo under Preferences > Account Security)"
            )
        self.uid = int(uid)
        return self.uid

    def execute(self, model: str, method: str, *args: Any, **kwargs: Any) -> Any:
        if self.uid is None:
            self.authenticate()
        label = f"{model}.{method}"
        return self._call(
            "object",
            "execute_kw",
            [
                self.options.database,
                self.uid,
                self.options.api_key.get_secret_value(),
                model,
                method,
                list(args),
                kwargs,
            ],
            label,
        )

    def close(self) -> None:
        if isinstance(self._transport, _JsonRpc):
            self._transport.close()
