"""Response shapes: the error body real MyInvois sends, and the deliberately lost response.

HTTP-level errors use the shape observed on the wire (``code/message/target/details``, API.md
§6.2); ``errorCode`` repeats ``code`` because the documentation names the field that way and a
client written from the documentation looks for it.
"""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send


def iso(timestamp: float | None) -> str | None:
    if timestamp is None:
        return None
    return time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(timestamp))


def detail(code: str | None, message: str, target: str | None = None, property_path: str | None = None) -> dict:
    return {"code": code, "message": message, "target": target, "propertyPath": property_path, "details": None}


def api_error(
    status: int,
    code: str,
    message: str,
    target: str | None = None,
    details: list[dict] | None = None,
    headers: dict[str, str] | None = None,
) -> JSONResponse:
    body = {"error": {"code": code, "errorCode": code, "message": message, "target": target, "details": details}}
    return JSONResponse(body, status_code=status, headers=headers)


def oauth_error(status: int, error: str, description: str) -> JSONResponse:
    return JSONResponse({"error": error, "error_description": description}, status_code=status)


class CompactJSONResponse(JSONResponse):
    """JSON without the spaces Python adds by default: smaller bodies for 100-document pages."""

    def render(self, content: Any) -> bytes:
        return json.dumps(content, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


class ResponseLost(httpx.RemoteProtocolError):
    """Raised after the server committed the work but before the client got the answer.

    Over real HTTP the server aborts mid-body, so the client sees a protocol error; in-process
    (httpx ASGITransport or starlette's TestClient) this exception reaches the client instead,
    and being an httpx transport error it is handled by the same code path.
    """

    def __init__(self, endpoint: str) -> None:
        super().__init__(f"simulated lost response on {endpoint}: the request was processed, the answer never arrived")


class LostResponse(Response):
    """Starts the real response, sends part of its body, then breaks the connection."""

    def __init__(self, real: Response, endpoint: str) -> None:
        self.real = real
        self.endpoint = endpoint
        self.status_code = real.status_code
        self.background = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        body = self.real.body
        await send({"type": "http.response.start", "status": self.real.status_code, "headers": self.real.raw_headers})
        await send({"type": "http.response.body", "body": body[: len(body) // 2], "more_body": True})
        raise ResponseLost(self.endpoint)
