"""Triton's trace extension over HTTP: ``GET|POST v2[/models/{m}]/trace/setting``, and a request's
trace origin (``traceparent`` / ``tracestate`` headers)."""

from __future__ import annotations

from time import monotonic_ns
from typing import Any

from aiohttp import web

from server.errors import ServerError
from server.frontends.http import json_codec
from server.frontends.http.transfer import read_body
from server.service import InferenceService
from server.types import TraceOrigin, TraceSettings

# A trace setting request is a handful of short strings.
MAX_SETTING_BODY_BYTES = 64 * 1024


def trace_routes(service: InferenceService) -> list[web.RouteDef]:
    async def setting(request: web.Request) -> web.Response:
        update = await _update(request) if request.method == "POST" else None
        settings = service.trace_settings(request.match_info.get("model", ""), update)
        return json_codec.json_response(settings_json(settings))

    routes: list[web.RouteDef] = []
    for path in ("/v2/trace/setting", "/v2/models/{model}/trace/setting"):
        routes += [web.get(path, setting), web.post(path, setting)]
    return routes


def settings_json(settings: TraceSettings) -> dict[str, Any]:
    """Triton's response: the level as an array, every other value as a string."""
    return {
        "trace_level": list(settings.level),
        "trace_rate": str(settings.rate),
        "trace_count": str(settings.count),
        "log_frequency": str(settings.log_frequency),
        "trace_file": settings.file,
    }


async def _update(request: web.Request) -> dict[str, tuple[str, ...] | None]:
    """The POST body: each setting a string, an array of strings (trace_level), or null (clear)."""
    body = await read_body(request, MAX_SETTING_BODY_BYTES)
    document = json_codec.loads(body, "trace setting request") if body.strip() else {}
    if not isinstance(document, dict):
        raise ServerError.invalid_arg("the trace setting request must be a JSON object")
    update: dict[str, tuple[str, ...] | None] = {}
    for name, value in document.items():
        if value is None:
            update[name] = None
        elif isinstance(value, str):
            update[name] = (value,)
        elif isinstance(value, list) and all(isinstance(item, str) for item in value):
            update[name] = tuple(value)
        else:
            raise ServerError.invalid_arg(f"trace setting '{name}' must be a string, an array of strings or null")
    return update


def request_origin(request: web.Request, arrived_ns: int) -> TraceOrigin:
    headers = request.headers
    return TraceOrigin("HTTP", arrived_ns, headers.get("traceparent", ""), headers.get("tracestate", ""))


def now_if_tracing(service: InferenceService) -> int:
    """The instant a request arrived, when tracing is on (0 otherwise: nothing is noted)."""
    return monotonic_ns() if service.tracing_active() else 0
