"""Triton extension routes ortserve does not implement: shared memory, trace and logging.

They exist so that tritonclient's calls get 501 with the same message as over gRPC, not a 404
that reads like a wrong URL.
"""

from __future__ import annotations

from aiohttp import web

from server.errors import ServerError

SHARED_MEMORY = "shared memory is not supported by ortserve; send tensors in the request"
TRACE = "the trace extension is not supported by ortserve"
LOGGING = "the logging extension is not supported by ortserve"


def _refuse(message: str) -> web.Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise ServerError.unsupported(message)

    return handler


def unsupported_routes() -> list[web.RouteDef]:
    routes: list[web.RouteDef] = []
    for kind in ("systemsharedmemory", "cudasharedmemory"):
        refuse = _refuse(SHARED_MEMORY)
        routes += [
            web.get(f"/v2/{kind}/status", refuse),
            web.get(f"/v2/{kind}/region/{{region}}/status", refuse),
            web.post(f"/v2/{kind}/region/{{region}}/register", refuse),
            web.post(f"/v2/{kind}/unregister", refuse),
            web.post(f"/v2/{kind}/region/{{region}}/unregister", refuse),
        ]
    for path in ("/v2/trace/setting", "/v2/models/{model}/trace/setting"):
        routes += [web.get(path, _refuse(TRACE)), web.post(path, _refuse(TRACE))]
    routes += [web.get("/v2/logging", _refuse(LOGGING)), web.post("/v2/logging", _refuse(LOGGING))]
    return routes
