"""The Starlette application: routes, and what happens around every API call.

Every MyInvois call passes the same gate, in the order a client meets them on the real
service. At its arrival: token check (401), injected spurious 429, rate limit (429) counted at
that moment, each refusal answered at once; then, for an admitted call, the injected latency
(the server's processing), injected 5xx, the endpoint itself, and possibly a lost response.
Statistics are recorded for each call. The ``/_simulator/*`` routes are the simulator's own controls and pass no gate.
"""

from __future__ import annotations

import asyncio
import json
import secrets
import time
from collections.abc import Awaitable, Callable
from typing import Any

from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from . import lifecycle
from .config import FaultsConfig, LifecycleWindows, SimulatorConfig
from .responses import CompactJSONResponse, LostResponse, api_error, iso, oauth_error
from .service import Simulator
from .store import Token

# The token argument is None only for the unauthenticated endpoints (login, the simulator's own).
Handler = Callable[[Request, Any, float], Awaitable[Response]]

ANONYMOUS = "(anonymous)"


def _correlation_id() -> str:
    return secrets.token_hex(8).upper() + "-" + str(secrets.randbelow(10_000))


def _unauthorized(message: str) -> Response:
    return api_error(
        401,
        "Unauthorized",
        message,
        target="Authorization",
        headers={"WWW-Authenticate": 'Bearer error="invalid_token"'},
    )


class Gate:
    """Wraps an endpoint handler with authentication, rate limiting, faults and statistics."""

    def __init__(self, simulator: Simulator) -> None:
        self.simulator = simulator

    def _token(self, request: Request, now: float) -> tuple[Token | None, str | None]:
        """(token, None) when usable; (token or None, reason) when not."""
        header = request.headers.get("authorization", "")
        scheme, _, value = header.partition(" ")
        if scheme.lower() != "bearer" or not value.strip():
            return None, "A bearer token is required"
        token = self.simulator.store.tokens.get(value.strip())
        if token is None:
            return None, "The token is not valid"
        if token.revoked:
            return token, "The token has been revoked"
        if now >= token.expires_at:
            return token, "The token has expired"
        return token, None

    async def run(
        self,
        request: Request,
        endpoint: str | Callable[[Request], Awaitable[str]],
        handler: Handler,
        authenticated: bool = True,
        client_id_of: Callable[[Request], Awaitable[str]] | None = None,
    ) -> Response:
        sim = self.simulator
        if callable(endpoint):
            endpoint = await endpoint(request)
        now = time.time()
        token: Token | None = None
        problem: str | None = None
        if authenticated:
            token, problem = self._token(request, now)
            client = token.client_id if token else ANONYMOUS
        else:
            client = (await client_id_of(request)) if client_id_of else ANONYMOUS
        sim.limiter.record_arrival(client or ANONYMOUS, endpoint, now)
        plan = sim.faults.plan(endpoint, authenticated=authenticated and problem is None)

        response = await self._respond(request, endpoint, handler, token, problem, client, plan, now)
        response.headers["correlationId"] = _correlation_id()
        if plan.lost_response and response.status_code < 400:
            sim.stats.count_fault("lost_response")
            sim.stats.count_request(endpoint, response.status_code)
            return LostResponse(response, endpoint)
        sim.stats.count_request(endpoint, response.status_code)
        return response

    async def _respond(self, request, endpoint, handler, token, problem, client, plan, arrived: float) -> Response:
        sim = self.simulator
        # The gateway decides at the request's arrival, and answers a refusal at once: a refused
        # call never waits for the processing (the injected latency) of an admitted one.
        if problem is not None:
            return _unauthorized(problem)
        if plan.revoke_token and token is not None:
            # Revocation before expiry: the token is dead from now on, not just for this call.
            token.revoked = True
            sim.stats.count_fault("revoke")
            return _unauthorized("The token has been revoked")
        if plan.spurious_429:
            sim.stats.count_fault("spurious_429")
            return self._too_many(sim.limiter.remaining(client, endpoint, arrived).limit, 1, arrived + 1)
        # Counted when it arrives, as MyInvois does, not when it is answered.
        decision = sim.limiter.check(client, endpoint, arrived)
        if not decision.allowed:
            return self._too_many(decision.limit, decision.retry_after, decision.resets_at)
        if plan.latency_seconds > 0:
            sim.stats.count_fault("latency")
            await asyncio.sleep(plan.latency_seconds)
        now = time.time()
        if plan.server_error is not None:
            sim.stats.count_fault(f"error_{plan.server_error}")
            code = "InternalServerError" if plan.server_error == 500 else "ServiceUnavailable"
            return api_error(plan.server_error, code, "Simulated server failure; the request was not processed")
        response = await handler(request, token, now)
        if decision.limit is not None:
            response.headers["X-Rate-Limit-Limit"] = str(decision.limit)
            response.headers["X-Rate-Limit-Remaining"] = str(decision.remaining)
        return response

    @staticmethod
    def _too_many(limit: int | None, retry_after: int, resets_at: float | None) -> Response:
        headers = {"Retry-After": str(retry_after), "X-Rate-Limit-Remaining": "0"}
        if limit is not None:
            headers["X-Rate-Limit-Limit"] = str(limit)
        if resets_at is not None:
            headers["X-Rate-Limit-Reset"] = iso(resets_at) or ""
        return api_error(
            429, "TooManyRequests", f"Too many requests; retry after {retry_after} seconds", headers=headers
        )


def create_app(config: SimulatorConfig | None = None) -> Starlette:
    """A fresh simulator with its own state; ``app.state.simulator`` gives tests direct access."""
    sim = Simulator(config or SimulatorConfig())
    gate = Gate(sim)

    async def form_client_id(request: Request) -> str:
        form = Simulator.login_form(await request.body())
        return form.get("client_id", "").strip() or ANONYMOUS

    async def login(request: Request) -> Response:
        async def handler(req: Request, _token, now: float) -> Response:
            if "application/x-www-form-urlencoded" not in req.headers.get("content-type", ""):
                return oauth_error(400, "invalid_request", "the body must be application/x-www-form-urlencoded")
            return sim.login(Simulator.login_form(await req.body()), req.headers.get("onbehalfof"), now)

        return await gate.run(request, "login", handler, authenticated=False, client_id_of=form_client_id)

    async def submit(request: Request) -> Response:
        async def handler(req: Request, token: Token, now: float) -> Response:
            return sim.submit(token, await req.body(), now)

        return await gate.run(request, "submit", handler)

    async def get_submission(request: Request) -> Response:
        async def handler(req: Request, token: Token, now: float) -> Response:
            return sim.get_submission(token, req.path_params["uid"], req.query_params, now)

        return await gate.run(request, "get_submission", handler)

    async def details(request: Request) -> Response:
        async def handler(req: Request, token: Token, now: float) -> Response:
            return sim.get_document_details(token, req.path_params["uuid"], now)

        return await gate.run(request, "get_document_details", handler)

    async def raw(request: Request) -> Response:
        async def handler(req: Request, token: Token, now: float) -> Response:
            return sim.get_document(token, req.path_params["uuid"], now)

        return await gate.run(request, "get_document", handler)

    async def state_body(request: Request) -> object:
        try:
            return json.loads(await request.body())
        except ValueError:
            return None

    async def cancel_or_reject(request: Request) -> str:
        # One path serves both operations; each has its own rate limit, chosen by the body.
        body = await state_body(request)
        wanted = str(body.get("status", "")).lower() if isinstance(body, dict) else ""
        return "reject" if wanted == "rejected" else "cancel"

    async def change_state(request: Request) -> Response:
        async def handler(req: Request, token: Token, now: float) -> Response:
            return sim.change_state(token, req.path_params["uuid"], await state_body(req), now)

        return await gate.run(request, cancel_or_reject, handler)

    async def recent(request: Request) -> Response:
        async def handler(req: Request, token: Token, now: float) -> Response:
            return sim.list_documents(token, req.query_params, now, search=False)

        return await gate.run(request, "recent", handler)

    async def search(request: Request) -> Response:
        async def handler(req: Request, token: Token, now: float) -> Response:
            return sim.list_documents(token, req.query_params, now, search=True)

        return await gate.run(request, "search", handler)

    async def validate_tin(request: Request) -> Response:
        async def handler(req: Request, token: Token, now: float) -> Response:
            return sim.validate_tin(req.path_params["tin"], req.query_params)

        return await gate.run(request, "validate_tin", handler)

    async def search_tin(request: Request) -> Response:
        async def handler(req: Request, token: Token, now: float) -> Response:
            return sim.search_tin(req.query_params)

        return await gate.run(request, "search_tin", handler)

    async def qr(request: Request) -> Response:
        async def handler(req: Request, token: Token, now: float) -> Response:
            return sim.qr_info(req.path_params["text"], now)

        return await gate.run(request, "qr", handler)

    async def document_types(request: Request) -> Response:
        async def handler(req: Request, token: Token, now: float) -> Response:
            params = req.path_params
            if "id" not in params:
                return sim.get_document_types()
            return sim.get_document_type(params["id"], params.get("vid"))

        return await gate.run(request, "document_types", handler)

    # -- the simulator's own controls --------------------------------------------------------

    async def stats(request: Request) -> Response:
        return CompactJSONResponse(sim.stats_document(time.time()))

    async def reset(request: Request) -> Response:
        sim.reset()
        return CompactJSONResponse({"reset": True})

    async def faults(request: Request) -> Response:
        if request.method == "GET":
            return CompactJSONResponse(sim.faults.config.model_dump())
        try:
            new = FaultsConfig.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse(
                {"error": "invalid faults configuration", "details": json.loads(exc.json())}, status_code=400
            )
        sim.faults.replace(new)
        return CompactJSONResponse(new.model_dump())

    async def revoke_tokens(request: Request) -> Response:
        body = await state_body(request)
        client_id = body.get("client_id") if isinstance(body, dict) else None
        return CompactJSONResponse({"revoked": sim.revoke_tokens(client_id)})

    async def windows(request: Request) -> Response:
        if request.method == "GET":
            return CompactJSONResponse(sim.windows())
        try:
            change = LifecycleWindows.model_validate_json(await request.body())
        except ValidationError as exc:
            return JSONResponse(
                {"error": "invalid lifecycle windows", "details": json.loads(exc.json())}, status_code=400
            )
        return CompactJSONResponse(sim.set_windows(change))

    def portal(wanted: str) -> Callable[[Request], Awaitable[Response]]:
        async def event(request: Request) -> Response:
            return sim.portal_event_response(request.path_params["uuid"], wanted, await state_body(request))

        return event

    api = "/api/v1.0"
    routes = [
        Route("/connect/token", login, methods=["POST"]),
        Route(f"{api}/documentsubmissions", submit, methods=["POST"]),
        Route(f"{api}/documentsubmissions/", submit, methods=["POST"]),
        Route(f"{api}/documentsubmissions/{{uid}}", get_submission, methods=["GET"]),
        Route(f"{api}/documents/recent", recent, methods=["GET"]),
        Route(f"{api}/documents/search", search, methods=["GET"]),
        Route(f"{api}/documents/state/{{uuid}}/state", change_state, methods=["PUT"]),
        Route(f"{api}/documents/{{uuid}}/details", details, methods=["GET"]),
        Route(f"{api}/documents/{{uuid}}/raw", raw, methods=["GET"]),
        Route(f"{api}/taxpayer/validate/{{tin}}", validate_tin, methods=["GET"]),
        Route(f"{api}/taxpayer/search/tin", search_tin, methods=["GET"]),
        Route(f"{api}/taxpayers/qrcodeinfo/{{text}}", qr, methods=["GET"]),
        Route(f"{api}/documenttypes", document_types, methods=["GET"]),
        Route(f"{api}/documenttypes/{{id}}", document_types, methods=["GET"]),
        Route(f"{api}/documenttypes/{{id}}/versions/{{vid}}", document_types, methods=["GET"]),
        Route("/_simulator/stats", stats, methods=["GET"]),
        Route("/_simulator/reset", reset, methods=["POST"]),
        Route("/_simulator/faults", faults, methods=["GET", "POST"]),
        Route("/_simulator/revoke-tokens", revoke_tokens, methods=["POST"]),
        Route("/_simulator/windows", windows, methods=["GET", "POST"]),
        Route("/_simulator/portal/cancel/{uuid}", portal(lifecycle.CANCEL), methods=["POST"]),
        Route("/_simulator/portal/reject/{uuid}", portal(lifecycle.REJECT), methods=["POST"]),
    ]

    async def unknown_route(request: Request, exc: Exception) -> Response:
        # Same error shape and correlationId as the API's own errors, also for a mistyped path.
        status = getattr(exc, "status_code", 404)
        code = {404: "NotFound", 405: "NotImplemented"}.get(status, "BadRequest")
        response = api_error(status, code, f"{request.method} {request.url.path} is not an API of this simulator")
        response.headers["correlationId"] = _correlation_id()
        return response

    app = Starlette(routes=routes, exception_handlers={404: unknown_route, 405: unknown_route})
    app.state.simulator = sim
    return app
