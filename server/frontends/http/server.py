"""The aiohttp servers: KServe v2 REST on the HTTP port and Prometheus text on the metrics port."""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable

from aiohttp import web

from server.errors import ServerError
from server.frontends.http.health import health_routes
from server.frontends.http.status import HTTP_STATUS
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
    except web.HTTPException:
        raise
    except Exception as exc:  # a bug must cost one request, never the server
        log.exception("unexpected error on %s %s", request.method, request.path)
        return web.json_response({"error": f"internal error: {exc}"}, status=500)


def build_http_app(service: InferenceService) -> web.Application:
    app = web.Application(middlewares=[error_middleware])
    app.add_routes(health_routes(service))
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
        self._runner = web.AppRunner(app, access_log=None, handle_signals=False)
        self._host, self._port = host, port

    async def start(self) -> None:
        await self._runner.setup()
        await web.TCPSite(self._runner, self._host, self._port, reuse_address=True).start()

    async def stop(self) -> None:
        await self._runner.cleanup()
