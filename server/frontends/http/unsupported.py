"""Triton extension routes ortserve does not implement: logging.

They exist so that tritonclient's calls get 501 with the same message as over gRPC, not a 404
that reads like a wrong URL.
"""

from __future__ import annotations

from aiohttp import web
from aiohttp.typedefs import Handler

from server.service import InferenceService


def _refuse(extension: str) -> Handler:
    async def handler(request: web.Request) -> web.StreamResponse:
        raise InferenceService.unsupported(extension)

    return handler


def unsupported_routes() -> list[web.RouteDef]:
    routes: list[web.RouteDef] = []
    routes += [web.get("/v2/logging", _refuse("logging")), web.post("/v2/logging", _refuse("logging"))]
    return routes
