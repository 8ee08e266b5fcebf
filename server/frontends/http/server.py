"""The aiohttp servers: KServe v2 REST on the HTTP port and Prometheus text on the metrics port."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from server.errors import ServerError
from server.frontends.http.health import health_routes
from server.frontends.http.infer import infer_routes
from server.frontends.http.metadata import metadata_routes
from server.frontends.http.openapi import openapi_routes
from server.frontends.http.repository import repository_routes
from server.frontends.http.status import HTTP_STATUS
from server.frontends.http.unsupported import unsupported_routes
from server.service import InferenceService

log = logging.getLogger(__name__)

HandlerFn = Callable[[web.Request], Awaitable[web.StreamResponse]]


@web.middleware
async def error_middleware(request: web.Request, handler: HandlerFn) -> web.StreamResponse:
    """ServerError → Triton's status with ``{"error": message}``; anything unexpected → 500."""
    try:
        return await handler(request)
    except ServerError as error:
        return web.json_response({"error": error.message}, status=HTTP_STATUS[error.code])
    except web.HTTPException as exc:
        if exc.status < 400:
            raise
        return _http_error(request, exc)
    except Exception as exc:  # a bug must cost one request, never the server
        log.exception("unexpected error on %s %s", request.method, request.path)
        return web.json_response({"error": f"internal error: {exc}"}, status=500)


def _http_error(request: web.Request, exc: web.HTTPException) -> web.Response:
    """aiohttp's own refusals (no route, wrong method, body too large) with the same ``{"error": ...}`` body."""
    default_text = f"{exc.status}: {exc.reason}"
    message = exc.text if exc.text and exc.text != default_text else f"{exc.reason}: {request.method} {request.path}"
    headers = {"Allow": exc.headers["Allow"]} if "Allow" in exc.headers else None
    return web.json_response({"error": message}, status=exc.status, headers=headers)


def build_http_app(service: InferenceService, max_input_bytes: int = 2**31 - 1) -> web.Application:
    """Every KServe v2 route on one app; request bodies are refused (413) past ``max_input_bytes``."""
    app = web.Application(middlewares=[error_middleware], client_max_size=max_input_bytes)
    app.add_routes(health_routes(service))
    app.add_routes(metadata_routes(service))
    app.add_routes(infer_routes(service, max_input_bytes))
    app.add_routes(repository_routes(service, max_input_bytes))
    app.add_routes(unsupported_routes())
    app.add_routes(openapi_routes())
    return app


def build_metrics_app(render: Callable[[], str]) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render().encode("utf-8"), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application()
    app.add_routes([web.get("/metrics", metrics)])
    return app


class HttpSite:
    """One aiohttp application listening on host:port, on the running event loop."""

    def __init__(self, app: web.Application, host: str, port: int) -> None:
        # Request bodies are decoded by the routes that read them (frontends/http/transfer.py).
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False, auto_decompress=False)
        self._host, self._port = host, port

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, reuse_address=True).start()

    async def stop(self) -> None:
        await self._runner.cleanup()
