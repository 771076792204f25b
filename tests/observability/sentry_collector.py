"""A local stand-in for Sentry's ingestion endpoint, so tests run the real sentry-sdk end to end.

It accepts what the SDK's HTTP transport sends: ``POST /api/<project_id>/envelope/`` with an
``X-Sentry-Auth`` header, the body optionally gzip- (or, when the brotli module exists,
brotli-) compressed. The body is an envelope: one JSON header line, then items, each a JSON
item header line followed by its payload — ``length`` bytes when the header says so, otherwise
up to the next newline.

Every decoded body is kept whole (``bodies``), so a test can assert that some text appears in
no byte the SDK sent, not merely in no field it knows to look at.
"""

from __future__ import annotations

import gzip
import json
import threading
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any


@dataclass
class EnvelopeItem:
    headers: dict[str, Any]
    payload: bytes

    @property
    def type(self) -> str:
        return self.headers.get("type", "")

    def json(self) -> Any:
        return json.loads(self.payload)


@dataclass
class Envelope:
    project_id: str
    auth: str
    headers: dict[str, Any]
    items: list[EnvelopeItem]


def parse_envelope(body: bytes) -> tuple[dict[str, Any], list[EnvelopeItem]]:
    """Split an envelope into its header and items, following the envelope format."""
    header_line, _, rest = body.partition(b"\n")
    headers = json.loads(header_line)
    items: list[EnvelopeItem] = []
    position = 0
    while position < len(rest):
        newline = rest.find(b"\n", position)
        if newline == -1:
            raise ValueError("envelope item header without payload")
        item_header_line = rest[position:newline]
        position = newline + 1
        if not item_header_line.strip():
            continue
        item_headers = json.loads(item_header_line)
        length = item_headers.get("length")
        if length is not None:
            payload = rest[position : position + length]
            position += length
            if rest[position : position + 1] == b"\n":
                position += 1
        else:
            end = rest.find(b"\n", position)
            end = len(rest) if end == -1 else end
            payload = rest[position:end]
            position = end + 1
        items.append(EnvelopeItem(item_headers, payload))
    return headers, items


def _decode_body(body: bytes, encoding: str) -> bytes:
    encoding = encoding.strip().lower()
    if encoding in ("", "identity"):
        return body
    if encoding == "gzip":
        return gzip.decompress(body)
    if encoding == "deflate":
        return zlib.decompress(body)
    if encoding == "br":
        import brotli  # the SDK only chooses br when this module is installed

        return brotli.decompress(body)
    raise ValueError(f"unsupported Content-Encoding {encoding!r}")


class SentryCollector:
    """``with SentryCollector() as collector:`` — then ``sentry_sdk.init(dsn=collector.dsn)``."""

    public_key = "publickey"
    project_id = "1"

    def __init__(self) -> None:
        self.envelopes: list[Envelope] = []
        self.bodies: list[bytes] = []
        self.rejected: list[str] = []
        self._lock = threading.Lock()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, name="sentry-collector", daemon=True)

    @property
    def dsn(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{self.public_key}@{host}:{port}/{self.project_id}"

    def __enter__(self) -> SentryCollector:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.shutdown()
        self._server.server_close()
        self._thread.join(5)

    # --- what arrived ---------------------------------------------------------------------

    def items(self, item_type: str) -> list[EnvelopeItem]:
        with self._lock:
            return [item for env in self.envelopes for item in env.items if item.type == item_type]

    def events(self) -> list[dict[str, Any]]:
        return [item.json() for item in self.items("event")]

    def all_bytes(self) -> bytes:
        with self._lock:
            return b"\n".join(self.bodies)

    def wait_for(self, predicate: Callable[[SentryCollector], bool], timeout: float = 10.0) -> bool:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if predicate(self):
                return True
            time.sleep(0.02)
        return predicate(self)

    def wait_for_events(self, count: int, timeout: float = 10.0) -> list[dict[str, Any]]:
        if not self.wait_for(lambda c: len(c.events()) >= count, timeout):
            raise AssertionError(f"expected {count} event(s), got {len(self.events())}; rejected: {self.rejected}")
        return self.events()

    # --- the endpoint ---------------------------------------------------------------------

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        collector = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:  # noqa: N802 - http.server's naming
                parts = self.path.split("?", 1)[0].strip("/").split("/")
                if len(parts) != 3 or parts[0] != "api" or parts[2] != "envelope":
                    return self._reject(404, f"unknown path {self.path}")
                auth = self.headers.get("X-Sentry-Auth", "")
                if f"sentry_key={collector.public_key}" not in auth:
                    return self._reject(401, f"bad auth header {auth!r}")
                try:
                    body = _decode_body(self._read_body(), self.headers.get("Content-Encoding", ""))
                    headers, items = parse_envelope(body)
                except (ValueError, OSError) as exc:
                    return self._reject(400, f"undecodable envelope: {exc}")
                with collector._lock:
                    collector.bodies.append(body)
                    collector.envelopes.append(Envelope(parts[1], auth, headers, items))
                self._answer(200, json.dumps({"id": headers.get("event_id")}).encode())

            def _read_body(self) -> bytes:
                if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
                    chunks = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0], 16)
                        if size == 0:
                            self.rfile.readline()
                            return b"".join(chunks)
                        chunks.append(self.rfile.read(size))
                        self.rfile.readline()
                return self.rfile.read(int(self.headers.get("Content-Length", "0")))

            def _reject(self, status: int, reason: str) -> None:
                with collector._lock:
                    collector.rejected.append(reason)
                self._answer(status, json.dumps({"detail": reason}).encode())

            def _answer(self, status: int, body: bytes) -> None:
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
                pass  # keep test output clean

        return Handler
