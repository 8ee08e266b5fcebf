"""The HTTP side of access control: an aiohttp middleware that puts the Guard in front of every
route (security/guard.py decides; this file reads the request and answers a refusal).

A route missing from security/groups.py is refused (fail closed); a path no route matches goes
on to aiohttp's 404/405. 401 answers carry ``WWW-Authenticate: Bearer`` (RFC 6750).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from aiohttp import web

from server.security.groups import Endpoint, http_endpoint
from server.security.guard import CallInfo, Decision, Guard, Protocol, Refusal

HandlerFn = Callable[[web.Request], Awaitable[web.StreamResponse]]
_REALM = 'Bearer realm="ortserve"'


def peer_identities(request: web.Request) -> tuple[str, ...]:
    """The verified client certificate's CN and SANs (empty without mTLS)."""
    transport = request.transport
    cert = transport.get_extra_info("peercert") if transport is not None else None
    if not cert:
        return ()
    names = [value for rdn in cert.get("subject", ()) for key, value in rdn if key == "commonName"]
    names += [value for _, value in cert.get("subjectAltName", ())]
    return tuple(dict.fromkeys(names))


def _refusal(decision: Decision) -> web.Response:
    denial = decision.denial
    assert denial is not None
    if denial.kind is Refusal.UNAUTHENTICATED:
        challenge = _REALM + (', error="invalid_token"' if denial.reason == "invalid_token" else "")
        return web.json_response({"error": denial.message}, status=401, headers={"WWW-Authenticate": challenge})
    return web.json_response({"error": denial.message}, status=403)


Middleware = Callable[[web.Request, HandlerFn], Awaitable[web.StreamResponse]]


def access_middleware(guard: Guard, protocol: Protocol = Protocol.HTTP) -> Middleware:
    @web.middleware
    async def middleware(request: web.Request, handler: HandlerFn) -> web.StreamResponse:
        route = request.match_info.route
        if route.resource is None:  # no route matched: aiohttp's own 404 / 405 follows
            return await handler(request)
        endpoint = http_endpoint(route.method, route.resource.canonical)
        model = request.match_info.get("model", "")
        if endpoint is None:
            return web.json_response({"error": f"no API group for {route.method} {route.resource.canonical}"}, status=403)
        call = CallInfo(protocol, endpoint, model, request.headers.get, lambda: peer_identities(request), request.remote or "")
        decision = guard.check(call)
        if decision.denial is not None:
            return _refusal(decision)
        if not endpoint.action:
            return await handler(request)
        return await _audited(guard, endpoint, decision, model, request, handler)

    return middleware


async def _audited(
    guard: Guard, endpoint: Endpoint, decision: Decision, model: str, request: web.Request, handler: HandlerFn
) -> web.StreamResponse:
    outcome = "error: no response"
    try:
        response = await handler(request)
        outcome = "ok" if response.status < 400 else f"error: HTTP {response.status}"
        return response
    finally:
        guard.audit.action(decision.principal, endpoint.action, model, outcome, request.remote or "", Protocol.HTTP.value)
