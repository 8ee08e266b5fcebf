"""Triton's model repository extension: index, load and unload."""

from __future__ import annotations

import base64
import binascii
from typing import Any

from aiohttp import web

from server.errors import ServerError
from server.frontends.http import json_codec
from server.frontends.http.transfer import read_body
from server.service import InferenceService


def repository_routes(service: InferenceService, max_input_bytes: int) -> list[web.RouteDef]:
    async def index(request: web.Request) -> web.Response:
        body = await _json_object(request, max_input_bytes, "repository index request")
        ready = body.get("ready", False)
        if not isinstance(ready, bool):
            raise ServerError.invalid_arg("the 'ready' field of the repository index request must be a bool")
        entries = await service.repository_index(ready)
        return json_codec.json_response(
            [{"name": e.name, "version": e.version, "state": e.state.value, "reason": e.reason} for e in entries]
        )

    async def load(request: web.Request) -> web.Response:
        body = await _json_object(request, max_input_bytes, "model load request")
        parameters = load_parameters(_parameters(body, "model load request"))
        await service.load_model(request.match_info["model"], parameters)
        return web.Response(status=200)

    async def unload(request: web.Request) -> web.Response:
        body = await _json_object(request, max_input_bytes, "model unload request")
        unload_dependents = _parameters(body, "model unload request").get("unload_dependents", False)
        if not isinstance(unload_dependents, bool):
            raise ServerError.invalid_arg("unload parameter 'unload_dependents' must be a bool")
        await service.unload_model(request.match_info["model"], unload_dependents)
        return web.Response(status=200)

    return [
        web.post("/v2/repository/index", index),
        web.post("/v2/repository/models/{model}/load", load),
        web.post("/v2/repository/models/{model}/unload", unload),
    ]


async def _json_object(request: web.Request, max_input_bytes: int, what: str) -> dict[str, Any]:
    """The body as a JSON object; an empty body (what tritonclient sends without options) is ``{}``."""
    body = await read_body(request, max_input_bytes)
    if not body.strip():
        return {}
    document = json_codec.loads(body, what)
    if not isinstance(document, dict):
        raise ServerError.invalid_arg(f"the {what} must be a JSON object")
    return document


def _parameters(body: dict[str, Any], what: str) -> dict[str, Any]:
    parameters = body.get("parameters", {})
    if not isinstance(parameters, dict):
        raise ServerError.invalid_arg(f"the 'parameters' of the {what} must be a JSON object")
    return parameters


def load_parameters(parameters: dict[str, Any]) -> dict[str, str | bytes]:
    """Load parameters as plain values: ``config`` a JSON string, ``file:<version>/<name>`` the
    decoded base64 content. Which keys mean what is the core's business; this checks JSON's
    value types, in gRPC's words for the same mistakes."""
    values: dict[str, str | bytes] = {}
    for key, value in parameters.items():
        if key == "config":
            if not isinstance(value, str):
                raise ServerError.invalid_arg(
                    "invalid value type for load parameter 'config', expected a string holding the config as JSON"
                )
            values[key] = value
        elif key.startswith("file:"):
            values[key] = _base64(key, value)
        else:  # the core refuses it by name
            values[key] = ""
    return values


def _base64(key: str, value: Any) -> bytes:
    if not isinstance(value, str):
        raise ServerError.invalid_arg(f"load parameter '{key}' must carry the file content as a base64 string")
    try:
        return base64.b64decode(value, validate=True)
    except binascii.Error as exc:
        raise ServerError.invalid_arg(f"load parameter '{key}' is not valid base64: {exc}") from None
