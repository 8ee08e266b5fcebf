"""GET /v2/openapi.json: the hand-written OpenAPI document of the routes this frontend serves.

tests/unit/test_openapi.py keeps it and the router in step, both ways.
"""

from __future__ import annotations

from pathlib import Path

from aiohttp import web

OPENAPI_PATH = Path(__file__).with_name("openapi.json")


def openapi_routes() -> list[web.RouteDef]:
    document = OPENAPI_PATH.read_bytes()  # read once, when the app is built

    async def openapi(request: web.Request) -> web.Response:
        return web.Response(body=document, content_type="application/json")

    return [web.get("/v2/openapi.json", openapi)]
