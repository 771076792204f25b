"""The MyInvois simulator for the benchmarks, in its own process (its CPU is not the connector's).

    python benchmarks/sim_server.py --config sim.json [--submit-seconds-per-mb 0.5]

Reads a JSON file of ``SimulatorConfig`` fields, binds a free loopback port, prints
``PORT <n>`` on stdout and serves until terminated. The simulator's own latency settings are
fixed per endpoint; a submission's time also grows with its size, which this wrapper adds as
``--submit-seconds-per-mb`` of the request body before the simulator sees the request.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import socket
import sys
from pathlib import Path

import uvicorn

from connector_core.simulator.app import create_app
from connector_core.simulator.config import SimulatorConfig
from connector_core.simulator.server import quiet_lost_responses

SUBMIT_PATH = "/api/v1.0/documentsubmissions"


class SubmitSizeLatency:
    """ASGI wrapper: POSTs to Submit Documents wait ``seconds_per_mb`` per MB of body first."""

    def __init__(self, app, seconds_per_mb: float) -> None:  # noqa: ANN001
        self.app = app
        self.seconds_per_mb = seconds_per_mb

    async def __call__(self, scope, receive, send):  # noqa: ANN001, ANN204
        if self.seconds_per_mb > 0 and scope["type"] == "http" and scope["method"] == "POST" and scope["path"].rstrip("/") == SUBMIT_PATH:
            length = next((int(v) for k, v in scope["headers"] if k == b"content-length"), 0)
            await asyncio.sleep(self.seconds_per_mb * length / 1_000_000)
        await self.app(scope, receive, send)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", type=Path, required=True)
    parser.add_argument("--submit-seconds-per-mb", type=float, default=0.0)
    args = parser.parse_args()
    config = SimulatorConfig.model_validate(json.loads(args.config.read_text("utf-8")))
    app = SubmitSizeLatency(create_app(config), args.submit_seconds_per_mb)
    quiet_lost_responses()
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))
    print(f"PORT {sock.getsockname()[1]}", flush=True)
    server = uvicorn.Server(
        uvicorn.Config(app, log_level="warning", lifespan="off", timeout_keep_alive=30, access_log=False)
    )
    server.run(sockets=[sock])
    sys.exit(0)


if __name__ == "__main__":
    main()
