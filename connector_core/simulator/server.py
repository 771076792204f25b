"""Serving the simulator over real HTTP with uvicorn: in a background thread, or in the foreground."""

from __future__ import annotations

import logging
import threading
import time

import uvicorn
from starlette.applications import Starlette

from .app import create_app
from .config import SimulatorConfig
from .responses import ResponseLost


class _HideLostResponses(logging.Filter):
    """A lost response is a fault we inject on purpose; uvicorn need not print its traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, ResponseLost):
            return False
        # uvicorn wraps the app error in an ExceptionGroup on some versions
        inner = getattr(exc, "exceptions", None)
        return not (inner and all(isinstance(e, ResponseLost) for e in inner))


def quiet_lost_responses() -> None:
    logger = logging.getLogger("uvicorn.error")
    if not any(isinstance(f, _HideLostResponses) for f in logger.filters):
        logger.addFilter(_HideLostResponses())


def uvicorn_config(app: Starlette, host: str, port: int, log_level: str = "warning") -> uvicorn.Config:
    # No lifespan: the app has no start-up work; keep-alive generous so pollers reuse connections.
    return uvicorn.Config(
        app, host=host, port=port, log_level=log_level, lifespan="off", timeout_keep_alive=30, access_log=False
    )


class RunningSimulator:
    """A simulator served by uvicorn in a daemon thread; use as a context manager."""

    def __init__(self, config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> None:
        self.app = create_app(config)
        self.host = host
        quiet_lost_responses()
        self._server = uvicorn.Server(uvicorn_config(self.app, host, port))
        self._thread = threading.Thread(target=self._serve, name="myinvois-simulator", daemon=True)
        self._thread.start()
        deadline = time.monotonic() + 15
        while not self._server.started:
            if not self._thread.is_alive():
                raise RuntimeError(
                    f"the simulator could not start on {host}:{port} (is the port taken? see the log above)"
                )
            if time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"the simulator did not start on {host}:{port} within 15 seconds")
            time.sleep(0.01)
        sockets = self._server.servers[0].sockets
        self.port = sockets[0].getsockname()[1]
        self.base_url = f"http://{host}:{self.port}"

    def _serve(self) -> None:
        try:
            self._server.run()
        except SystemExit:
            # uvicorn exits when it cannot bind; the starting thread sees the thread end and says why.
            pass

    @property
    def simulator(self):
        return self.app.state.simulator

    def stop(self) -> None:
        self._server.should_exit = True
        self._thread.join(timeout=10)

    def __enter__(self) -> RunningSimulator:
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


def run_in_thread(config: SimulatorConfig | None = None, host: str = "127.0.0.1", port: int = 0) -> RunningSimulator:
    """Start the simulator on loopback and return once it accepts connections."""
    return RunningSimulator(config, host, port)
