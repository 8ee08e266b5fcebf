"""POST /v2/models/{m}[/versions/{v}]/infer: parse the body → InferenceService.infer → render."""

from __future__ import annotations

import re

from aiohttp import hdrs, web

from server.frontends.http.request_codec import HEADER_LENGTH, HttpInferRequest, header_length, parse_infer_body, parse_raw_body
from server.frontends.http.response_codec import RenderedResponse, render_response
from server.frontends.http.trace import now_if_tracing, request_origin
from server.frontends.http.transfer import read_body, response_coding
from server.service import InferenceService


def infer_routes(service: InferenceService, max_input_bytes: int) -> list[web.RouteDef]:
    async def infer(request: web.Request) -> web.Response:
        arrived_ns = now_if_tracing(service)
        model, version = request.match_info["model"], request.match_info.get("version", "")
        body = await read_body(request, max_input_bytes)
        json_length = header_length(request.headers.get(HEADER_LENGTH), len(body))
        raw = json_length == 0 or (json_length is None and _untagged_raw_body(request, body))
        parsed = _raw_request(service, body, model, version) if raw else parse_infer_body(body, json_length, model, version)
        if arrived_ns:
            parsed.request.trace_origin = request_origin(request, arrived_ns)
        response = await service.infer(parsed.request)
        reply = _http_response(render_response(response, parsed.binary_outputs), request)
        if response.trace is not None:
            response.trace.finish()
        return reply

    return [
        web.post("/v2/models/{model}/infer", infer),
        web.post("/v2/models/{model}/versions/{version}/infer", infer),
    ]


# Triton's raw form is a zero-length JSON header. ortserve also takes a body sent with this content
# type, no header, and no JSON object at its start (Triton would fail to parse it as JSON), so
# `curl --data-binary @tensor.bin` works. HTTP clients (tritonclient among them) label JSON bodies
# with this type too, so a body that starts with "{" stays JSON; send the header to be explicit.
RAW_CONTENT_TYPE = "application/octet-stream"


_LEADING_SPACE = re.compile(rb"[ \t\r\n]*")


def _untagged_raw_body(request: web.Request, body: bytes | bytearray) -> bool:
    # aiohttp reports this type for a request without any Content-Type, so read the header itself.
    if request.headers.get(hdrs.CONTENT_TYPE) is None or request.content_type != RAW_CONTENT_TYPE:
        return False
    start = _LEADING_SPACE.match(body).end()  # type: ignore[union-attr]  # matches the empty string at worst
    return body[start : start + 1] != b"{"


def _raw_request(service: InferenceService, body: bytes | bytearray, model: str, version: str) -> HttpInferRequest:
    """The raw single-input form needs the model's signature to know the input's name, type and shape."""
    metadata = service.model_metadata(model, version)
    batching = service.model_config(model, version).max_batch_size > 0
    return parse_raw_body(body, model, version, metadata.inputs, batching)


def _http_response(rendered: RenderedResponse, request: web.Request) -> web.Response:
    if rendered.json_length is None:
        response = web.Response(body=rendered.body, content_type="application/json")
    else:
        response = web.Response(body=rendered.body, content_type="application/octet-stream")
        # The uncompressed JSON's length, as tritonclient reads it after decompressing.
        response.headers[HEADER_LENGTH] = str(rendered.json_length)
    coding = response_coding(request.headers.get("Accept-Encoding"))
    if coding is not None:
        response.enable_compression(coding)
    return response
