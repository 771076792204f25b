"""``/metrics`` and ``/healthz`` over HTTP, in a background thread of the connector process.

It binds loopback by default: metrics name profiles and endpoints, and nothing here is
authenticated. Serving on another address is an explicit choice (``allow_remote=True``), made
by the operator writing a non-loopback ``observability.metrics_host``, e.g. inside a container
whose port is published to the Prometheus network only.
"""

from __future__ import annotations

import ipaddress
import json
import logging
import socket
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from prometheus_client.exposition import choose_encoder

from connector_core.observability.health import HealthMonitor
from connector_core.observability.metrics import ConnectorMetrics

log = logging.getLogger(__name__)


class RemoteBindRefused(ValueError):
    """A non-loopback address was asked for without ``allow_remote=True``."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


class MetricsServer:
    """Serves ``GET /metrics`` (Prometheus text, or OpenMetrics when asked) and ``GET /healthz``
    (``200 {"status": "ok"}``, ``200 {"status": "degraded", "details": {"degraded": [...]}}`` or
    ``503 {"status": "unhealthy", "reasons": [...]}``).

    ``port=0`` lets the system choose a free port (read it from :attr:`port` after
    :meth:`start`); the *setting* ``metrics_port = 0`` means "no server" and is the caller's
    to honour.
    """

    def __init__(
        self,
        metrics: ConnectorMetrics,
        health: HealthMonitor,
        host: str = "127.0.0.1",
        port: int = 9464,
        *,
        allow_remote: bool = False,
    ) -> None:
        if not is_loopback(host) and not allow_remote:
            raise RemoteBindRefused(
                f"metrics_host {host!r} would publish metrics and health beyond this machine; "
                "use 127.0.0.1, or pass allow_remote=True where that is intended (containers)"
            )
        self.metrics = metrics
        self.health = health
        self.host = host
        self._requested_port = port
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one when that was 0)."""
        if self._server is None:
            return self._requested_port
        return self._server.server_address[1]

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread. Raises ``OSError`` if the port is taken."""
        if self._server is not None:
            return
        handler = _handler_for(self.metrics, self.health)
        server_class = _IPv6Server if _is_ipv6(self.host) else _IPv4Server
        self._server = server_class((self.host, self._requested_port), handler)
        self._thread = threading.Thread(target=self._server.serve_forever, name="metrics-server", daemon=True)
        self._thread.start()
        log.info("Serving /metrics and /healthz on %s", self.url)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving and release the port."""
        if self._server is None:
            return
        self._server.shutdown()
        self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout)
        self._server = None
        self._thread = None

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


class _IPv4Server(ThreadingHTTPServer):
    daemon_threads = True
    # A restarted connector must get its port back at once, not after TIME_WAIT.
    allow_reuse_address = True


class _IPv6Server(_IPv4Server):
    address_family = socket.AF_INET6


def _handler_for(metrics: ConnectorMetrics, health: HealthMonitor) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "myinvois-connector"
        sys_version = ""
        # A client that connects and sends nothing must not hold a thread for ever.
        timeout = 10

        def do_GET(self) -> None:
            path = self.path.split("?", 1)[0]
            if path == "/metrics":
                encoder, content_type = choose_encoder(self.headers.get("Accept", ""))
                self._send(200, content_type, encoder(metrics.registry))
            elif path == "/healthz":
                ok, reasons, details = health.status()
                # Degraded (MyInvois down, a login refused) still answers 200: restarting the
                # connector would not help; the body names what is wrong.
                verdict = ("degraded" if details.get("degraded") else "ok") if ok else "unhealthy"
                body: dict[str, Any] = {"status": verdict, "reasons": reasons, "details": details}
                self._send(200 if ok else 503, "application/json", json.dumps(body).encode())
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found: try /metrics or /healthz\n")

        def _send(self, status: int, content_type: str, body: bytes) -> None:
            self.send_response(status)
            self.send_header("Content-Type", content_type)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:
            # Scrapes every 15 s would drown the log at INFO; they are there at DEBUG.
            log.debug("%s - %s", self.address_string(), format % args)

    return Handler


def metrics_server_from_settings(
    settings: Any, metrics: ConnectorMetrics, health: HealthMonitor
) -> MetricsServer | None:
    """The server ``[observability]`` asks for, not yet started; ``None`` when ``metrics_port = 0``.

    A non-loopback ``metrics_host`` written in the configuration is the operator's explicit
    choice, so it is allowed, and said so in the log."""
    if settings.metrics_port == 0:
        return None
    remote = not is_loopback(settings.metrics_host)
    if remote:
        log.warning(
            "observability.metrics_host is %s: /metrics and /healthz are reachable from the network, without authentication",
            settings.metrics_host,
        )
    return MetricsServer(metrics, health, settings.metrics_host, settings.metrics_port, allow_remote=remote)
