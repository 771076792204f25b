"""``/metrics`` and ``/healthz``: one Starlette app, served by uvicorn in a background thread of
the connector process.

One ASGI app, its routes listed in :func:`routes`, so that the operator's page can later join the
same server and port; ``/metrics`` is prometheus_client's own ASGI exposition (text format,
OpenMetrics when asked for, gzip when the scraper accepts it).

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
from typing import Any

import uvicorn
from prometheus_client import make_asgi_app
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import PlainTextResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from connector_core.observability.health import HealthMonitor
from connector_core.observability.metrics import ConnectorMetrics

log = logging.getLogger(__name__)

#: How long :meth:`MetricsServer.start` waits for uvicorn to accept connections, and
#: :meth:`MetricsServer.stop` for a scrape in flight to be answered.
STARTUP_TIMEOUT_S = 10.0
GRACEFUL_STOP_S = 2


class RemoteBindRefused(ValueError):
    """A non-loopback address was asked for without ``allow_remote=True``."""


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False  # a host name other than localhost may resolve anywhere


# --- the app ----------------------------------------------------------------------------------


def routes(metrics: ConnectorMetrics, health: HealthMonitor) -> list[BaseRoute]:
    """Every route the connector serves, in one place."""

    async def healthz(request: Request) -> Response:
        ok, reasons, details = health.status()
        # Degraded (MyInvois down, a login refused) still answers 200: restarting the
        # connector would not help; the body names what is wrong.
        verdict = ("degraded" if details.get("degraded") else "ok") if ok else "unhealthy"
        body: dict[str, Any] = {"status": verdict, "reasons": reasons, "details": details}
        return Response(json.dumps(body), status_code=200 if ok else 503, media_type="application/json")

    return [
        Route("/metrics", _AsgiEndpoint(make_asgi_app(metrics.registry))),
        Route("/healthz", healthz, methods=["GET"]),
    ]


def build_app(metrics: ConnectorMetrics, health: HealthMonitor) -> Starlette:
    """The ASGI app of :func:`routes`; answers are never cached (each is the state of now)."""

    async def not_found(request: Request, exc: Exception) -> Response:
        return PlainTextResponse("not found: try /metrics or /healthz\n", status_code=404)

    app = Starlette(routes=routes(metrics, health), exception_handlers={404: not_found})
    app.add_middleware(_NoStore)
    return app


class _AsgiEndpoint:
    """An ASGI app as a route's endpoint. Starlette wraps a plain function as a request
    handler; an object is called as the ASGI app it is. ``Mount`` would serve ``/metrics/``
    and redirect ``/metrics`` to it, which scrapers configured for ``/metrics`` need not follow."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        await self.app(scope, receive, send)


class _NoStore:
    """Adds ``Cache-Control: no-store`` to every answer."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return

        async def send_no_store(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), (b"cache-control", b"no-store")]
            await send(message)

        await self.app(scope, receive, send_no_store)


# --- the server -------------------------------------------------------------------------------


class MetricsServer:
    """Serves :func:`build_app`: ``GET /metrics`` (Prometheus text, or OpenMetrics when asked)
    and ``GET /healthz`` (``200 {"status": "ok"}``, ``200 {"status": "degraded", "details":
    {"degraded": [...]}}`` or ``503 {"status": "unhealthy", "reasons": [...]}``).

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
        self.app = build_app(metrics, health)
        self._requested_port = port
        self._socket: socket.socket | None = None
        self._bound_port: int | None = None
        self._server: _ThreadedUvicorn | None = None
        self._thread: threading.Thread | None = None

    @property
    def port(self) -> int:
        """The port actually bound (differs from the requested one when that was 0)."""
        return self._requested_port if self._bound_port is None else self._bound_port

    @property
    def url(self) -> str:
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    def start(self) -> None:
        """Bind and serve in a daemon thread. Raises ``OSError`` if the port is taken."""
        if self._server is not None:
            return
        # Bound here, not by uvicorn: a taken port is an OSError for the caller to judge
        # (uvicorn would log it and sys.exit() its thread).
        sock = _listening_socket(self.host, self._requested_port)
        config = uvicorn.Config(
            self.app,
            # The connector's logging is configured already; uvicorn's loggers are quiet
            # third-party loggers there (see logs.THIRD_PARTY_LOGGERS).
            log_config=None,
            access_log=False,
            lifespan="off",
            loop="asyncio",
            http="h11",
            server_header=False,
            timeout_graceful_shutdown=GRACEFUL_STOP_S,
        )
        port = sock.getsockname()[1]
        server = _ThreadedUvicorn(config)
        thread = threading.Thread(target=server.run, kwargs={"sockets": [sock]}, name="metrics-server", daemon=True)
        thread.start()
        if not server.ready.wait(STARTUP_TIMEOUT_S) or not server.started:
            server.should_exit = True
            thread.join(GRACEFUL_STOP_S)
            sock.close()
            raise OSError(f"the metrics server on {self.host}:{port} did not start")
        self._socket, self._bound_port = sock, port
        self._server, self._thread = server, thread
        log.info("Serving /metrics and /healthz on %s", self.url)

    def stop(self, timeout: float = 5.0) -> None:
        """Stop serving, release the port, and wait for the thread to end."""
        if self._server is None:
            return
        self._server.should_exit = True  # uvicorn's main loop looks every 0.1 s
        if self._thread is not None:
            self._thread.join(timeout)
            if self._thread.is_alive():  # a request still running after the graceful wait
                self._server.force_exit = True
                self._thread.join(timeout)
        if self._socket is not None:
            self._socket.close()  # uvicorn closed it already; an abandoned thread may not have
        self._server = None
        self._thread = None
        self._socket = None

    def __enter__(self) -> MetricsServer:
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()


class _ThreadedUvicorn(uvicorn.Server):
    """uvicorn's server, telling the thread that started it when it accepts connections (or
    has failed to). It installs no signal handlers outside the main thread: SIGTERM stays the
    daemon's, which stops this server through :meth:`MetricsServer.stop`."""

    def __init__(self, config: uvicorn.Config) -> None:
        super().__init__(config)
        self.ready = threading.Event()

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        try:
            await super().startup(sockets=sockets)
        finally:
            self.ready.set()


def _listening_socket(host: str, port: int) -> socket.socket:
    family = socket.AF_INET6 if _is_ipv6(host) else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    try:
        # A restarted connector must get its port back at once, not after TIME_WAIT.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind((host, port))
        sock.listen(128)
    except OSError:
        sock.close()
        raise
    return sock


def _is_ipv6(host: str) -> bool:
    try:
        return ipaddress.ip_address(host).version == 6
    except ValueError:
        return False


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
