"""The aiohttp servers: KServe v2 REST on the HTTP port and Prometheus text on the metrics port."""

from __future__ import annotations

import asyncio
import logging
import ssl
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from http import HTTPStatus
from typing import Any

from aiohttp import web
from aiohttp.web_protocol import RequestHandler
from aiohttp.web_request import BaseRequest

from server.errors import ServerError
from server.frontends.http.health import health_routes
from server.frontends.http.infer import infer_routes
from server.frontends.http.metadata import metadata_routes
from server.frontends.http.openapi import openapi_routes
from server.frontends.http.repository import repository_routes
from server.frontends.http.shared_memory import shared_memory_routes
from server.frontends.http.status import HTTP_STATUS
from server.frontends.http.trace import trace_routes
from server.frontends.http.transfer import BODY_TIMEOUT
from server.frontends.http.unsupported import unsupported_routes
from server.observability.logging import ThrottledLog
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


def build_http_app(
    service: InferenceService, max_input_bytes: int = 2**31 - 1, body_timeout_secs: float = 60.0, access: Sequence[Any] = ()
) -> web.Application:
    """Every KServe v2 route on one app; request bodies are refused (413) past ``max_input_bytes``
    and (408) when they take longer than ``body_timeout_secs`` to arrive. ``access``: the access
    control middleware (frontends/http/access.py), outermost, so it runs before anything else."""
    app = web.Application(middlewares=[*access, error_middleware], client_max_size=max_input_bytes)
    app[BODY_TIMEOUT] = body_timeout_secs
    app.add_routes(health_routes(service))
    app.add_routes(metadata_routes(service))
    app.add_routes(infer_routes(service, max_input_bytes))
    app.add_routes(repository_routes(service, max_input_bytes))
    app.add_routes(shared_memory_routes(service))
    app.add_routes(trace_routes(service))
    app.add_routes(unsupported_routes())
    app.add_routes(openapi_routes())
    return app


def build_metrics_app(render: Callable[[], str], access: Sequence[Any] = ()) -> web.Application:
    async def metrics(request: web.Request) -> web.Response:
        return web.Response(body=render().encode("utf-8"), headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"})

    app = web.Application(middlewares=list(access))
    app.add_routes([web.get("/metrics", metrics)])
    return app


@dataclass(frozen=True, slots=True)
class ConnectionLimits:
    """What one client connection may hold (README "Limits")."""

    max_connections: int = 1024
    # No complete request head within this time (from the connection's start or its last
    # response) closes the connection: aiohttp's keep-alive timer, which also covers idle ones.
    idle_timeout_secs: float = 30.0
    body_timeout_secs: float = 60.0


# aiohttp's header limits, stated: a request line or header line of 8 KiB, 100 header fields.
_PARSER_LIMITS = {"max_line_size": 8190, "max_field_size": 8190, "max_headers": 100}
_refused_log = ThrottledLog(log)


class _JsonErrorRequestHandler(RequestHandler):
    """aiohttp answers what its HTTP parser refuses (bad Content-Length, over-long lines, too many
    headers) in plain text; here those answers carry ``{"error": ...}`` like every other 4xx."""

    def handle_error(
        self, request: BaseRequest, status: int = 500, exc: BaseException | None = None, message: str | None = None
    ) -> web.StreamResponse:
        if status >= 500:
            return super().handle_error(request, status, exc, message)
        _refused_log.warning("refused a malformed HTTP request (%d): %s", status, message or exc)
        text = message or (str(exc) if exc else "") or HTTPStatus(status).phrase
        response = web.json_response({"error": text}, status=status)
        response.force_close()
        return response


class _LimitedServer(web.Server):
    """aiohttp's server with a cap on open connections and our error answers."""

    max_connections = 1024

    def __call__(self) -> RequestHandler:
        return _JsonErrorRequestHandler(self, loop=self._loop, **self._kwargs)

    def connection_made(self, handler: RequestHandler, transport: asyncio.Transport) -> None:
        super().connection_made(handler, transport)
        if len(self._connections) > self.max_connections:
            _refused_log.warning("refused an HTTP connection: %d are open (--http-max-connections)", self.max_connections)
            transport.close()


class _LimitedRunner(web.AppRunner):
    def __init__(self, app: web.Application, max_connections: int, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._max_connections = max_connections

    async def _make_server(self) -> web.Server:
        server = await super()._make_server()
        # aiohttp builds its Server itself and has no hook for the class: adopt the one it built.
        server.__class__ = _LimitedServer
        server.max_connections = self._max_connections  # type: ignore[attr-defined]
        return server


class HttpSite:
    """One aiohttp application listening on host:port, on the running event loop."""

    def __init__(
        self,
        app: web.Application,
        host: str,
        port: int,
        limits: ConnectionLimits,
        ssl_context: ssl.SSLContext | None = None,
        reuse_port: bool = False,
    ) -> None:
        # Request bodies are decoded by the routes that read them (frontends/http/transfer.py).
        self._runner = _LimitedRunner(
            app,
            limits.max_connections,
            access_log=None,
            handle_signals=False,
            auto_decompress=False,
            keepalive_timeout=limits.idle_timeout_secs,
            # Sites stop after in-flight requests drained (App.shutdown); what is left is cut off
            # quickly so that --exit-timeout-secs holds.
            shutdown_timeout=1.0,
            **_PARSER_LIMITS,
        )
        self._host, self._port, self._ssl_context = host, port, ssl_context
        # SO_REUSEPORT: several frontend processes share the port (--workers); the kernel spreads connections.
        self._reuse_port = reuse_port

    async def start(self) -> None:
        await self._runner.setup()
        site = web.TCPSite(
            self._runner, self._host, self._port, reuse_address=True, reuse_port=self._reuse_port or None, ssl_context=self._ssl_context
        )
        await site.start()

    async def stop(self) -> None:
        await self._runner.cleanup()
