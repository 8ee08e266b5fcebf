"""Triton's shared-memory extension over HTTP: /v2/systemsharedmemory and /v2/cudasharedmemory.

Status answers a JSON array of regions; register and unregister answer 200 with an empty body.
CUDA regions cannot be registered (501), so CUDA status lists none and unregister has nothing to do.
"""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.errors import ServerError
from server.frontends.http import json_codec
from server.frontends.http.transfer import read_body
from server.service import InferenceService
from server.types import SharedMemoryRegion

# A register request is a small JSON object; anything larger is not one.
MAX_REGISTER_BODY_BYTES = 64 * 1024


def shared_memory_routes(service: InferenceService) -> list[web.RouteDef]:
    async def system_status(request: web.Request) -> web.Response:
        return json_codec.json_response([_region_json(region) for region in service.system_shared_memory_status(_region(request))])

    async def system_register(request: web.Request) -> web.Response:
        body = await read_body(request, MAX_REGISTER_BODY_BYTES)
        key, offset, byte_size = register_fields(json_codec.loads(body, "shared memory register request") if body.strip() else {})
        service.register_system_shared_memory(_region(request), key, offset, byte_size)
        return web.Response(status=200)

    async def system_unregister(request: web.Request) -> web.Response:
        service.unregister_system_shared_memory(_region(request))
        return web.Response(status=200)

    async def cuda_status(request: web.Request) -> web.Response:
        return json_codec.json_response([_region_json(region) for region in service.cuda_shared_memory_status(_region(request))])

    async def cuda_register(request: web.Request) -> web.Response:
        raise InferenceService.unsupported("cuda_shared_memory")

    async def cuda_unregister(request: web.Request) -> web.Response:
        service.unregister_cuda_shared_memory(_region(request))
        return web.Response(status=200)

    routes: list[web.RouteDef] = []
    for kind, status, register, unregister in (
        ("systemsharedmemory", system_status, system_register, system_unregister),
        ("cudasharedmemory", cuda_status, cuda_register, cuda_unregister),
    ):
        routes += [
            web.get(f"/v2/{kind}/status", status),
            web.get(f"/v2/{kind}/region/{{region}}/status", status),
            web.post(f"/v2/{kind}/region/{{region}}/register", register),
            web.post(f"/v2/{kind}/unregister", unregister),
            web.post(f"/v2/{kind}/region/{{region}}/unregister", unregister),
        ]
    return routes


def _region(request: web.Request) -> str:
    return request.match_info.get("region", "")


def _region_json(region: SharedMemoryRegion) -> dict[str, Any]:
    return {"name": region.name, "key": region.key, "offset": region.offset, "byte_size": region.byte_size}


def register_fields(document: Any) -> tuple[str, int, int]:
    """``key``, ``offset`` (default 0) and ``byte_size`` of a register request body, in Triton's
    words when one is missing. Raises ServerError(INVALID_ARG)."""
    if not isinstance(document, dict):
        raise ServerError.invalid_arg("the shared memory register request must be a JSON object")
    if "key" not in document:
        raise ServerError.invalid_arg("Shared memory register request has no 'key' field")
    if "byte_size" not in document:
        raise ServerError.invalid_arg("Shared memory register request has no 'byte_size' field")
    key, offset, byte_size = document["key"], document.get("offset", 0), document["byte_size"]
    if not isinstance(key, str):
        raise ServerError.invalid_arg("Unable to parse 'key': the shared memory register request's 'key' must be a string")
    for field, value in (("offset", offset), ("byte_size", byte_size)):
        if type(value) is not int or value < 0:
            raise ServerError.invalid_arg(f"Unable to parse '{field}': the register request's '{field}' must be an unsigned integer")
    return key, offset, byte_size
