"""KServe v2 health routes: 200 when true, 400 when false (Triton's convention)."""

from __future__ import annotations

from aiohttp import web

from server.service import InferenceService


def _truth(value: bool) -> web.Response:
    return web.Response(status=200 if value else 400)


def health_routes(service: InferenceService) -> list[web.RouteDef]:
    async def live(request: web.Request) -> web.Response:
        return _truth(service.is_live())

    async def ready(request: web.Request) -> web.Response:
        return _truth(service.is_ready())

    async def model_ready(request: web.Request) -> web.Response:
        # Lookup errors (unknown model, unready version) propagate to the error middleware: HTTP
        # clients get the reason with its status, where gRPC answers OK with ready=false.
        service.require_model_ready(request.match_info["model"], request.match_info.get("version", ""))
        return _truth(True)

    return [
        web.get("/v2/health/live", live),
        web.get("/v2/health/ready", ready),
        web.get("/v2/models/{model}/ready", model_ready),
        web.get("/v2/models/{model}/versions/{version}/ready", model_ready),
    ]


def health_port_app(service: InferenceService) -> web.Application:
    """The plaintext --http-health-port: server liveness and readiness only, for probes."""
    app = web.Application()
    app.add_routes([route for route in health_routes(service) if "{model}" not in route.path])
    return app
