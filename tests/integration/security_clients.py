"""Calling every gRPC method and every HTTP route of a real server with chosen credentials, and
reading back only what access control decided (allowed, UNAUTHENTICATED/401, PERMISSION_DENIED/403).

Requests name a model that does not exist, so an allowed call ends in NOT_FOUND, 400 or 501 and
changes nothing on the server.
"""

from __future__ import annotations

import urllib.error
import urllib.request
from collections.abc import Callable, Iterable
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from server.proto import grpc_service_pb2 as pb
from server.security.groups import GRPC_ENDPOINTS, HTTP_ENDPOINTS, Endpoint

ABSENT_MODEL = "matrix-model"
ALLOWED, UNAUTHENTICATED, DENIED = "allowed", "unauthenticated", "denied"

_INFERENCE = "/inference.GRPCInferenceService/"


def grpc_request(endpoint: Endpoint) -> Any:
    """A valid request message for the method, naming ABSENT_MODEL where it names a model."""
    service, method = endpoint.name.strip("/").split("/")
    if service == "grpc.health.v1.Health":
        return health_pb2.HealthCheckRequest()
    if service == "grpc.reflection.v1alpha.ServerReflection":
        return reflection_pb2.ServerReflectionRequest(list_services="")
    message_type = pb.DESCRIPTOR.services_by_name["GRPCInferenceService"].methods_by_name[method].input_type
    request = getattr(pb, message_type.name)()
    if endpoint.model_field:
        setattr(request, endpoint.model_field, ABSENT_MODEL)
    return request


def _outcome(code: grpc.StatusCode) -> str:
    return {grpc.StatusCode.UNAUTHENTICATED: UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED: DENIED}.get(code, ALLOWED)


def call_grpc(channel: grpc.Channel, endpoint: Endpoint, metadata: tuple[tuple[str, str], ...]) -> str:
    """Call the method once; the access outcome."""
    request = grpc_request(endpoint)
    serialize, deserialize = type(request).SerializeToString, (lambda data: data)
    method = endpoint.name
    try:
        if method == _INFERENCE + "ModelStreamInfer" or method.endswith("ServerReflectionInfo"):
            list(channel.stream_stream(method, serialize, deserialize)(iter([request]), metadata=metadata, timeout=10))
        elif method.endswith("/Watch"):
            responses = channel.unary_stream(method, serialize, deserialize)(request, metadata=metadata, timeout=10)
            next(responses)
            responses.cancel()
        else:
            channel.unary_unary(method, serialize, deserialize)(request, metadata=metadata, timeout=10)
    except grpc.RpcError as error:
        return _outcome(error.code())  # type: ignore[attr-defined]
    return ALLOWED


def http_path(endpoint: Endpoint) -> tuple[str, str]:
    method, path = endpoint.name.split(" ", 1)
    return method, path.replace("{model}", ABSENT_MODEL).replace("{version}", "1").replace("{region}", "r")


def call_http(base_url: str, endpoint: Endpoint, headers: dict[str, str]) -> tuple[str, dict[str, str]]:
    """One request; the access outcome and the response headers."""
    method, path = http_path(endpoint)
    request = urllib.request.Request(base_url + path, data=b"{}" if method == "POST" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10) as response:
            return ALLOWED, dict(response.headers)
    except urllib.error.HTTPError as error:
        status = {401: UNAUTHENTICATED, 403: DENIED}.get(error.code, ALLOWED)
        return status, dict(error.headers)


def grpc_endpoints() -> list[Endpoint]:
    return list(GRPC_ENDPOINTS.values())


def http_endpoints(metrics: bool) -> list[Endpoint]:
    """The HTTP port's routes, or (``metrics``) the metrics port's."""
    return [e for e in HTTP_ENDPOINTS.values() if (e.name == "GET /metrics") == metrics]


def tally(outcomes: Iterable[tuple[str, str]], expect: Callable[[str], str]) -> list[str]:
    """The (endpoint name, outcome) pairs that differ from ``expect(endpoint name)``."""
    return [f"{name}: {got}, expected {expect(name)}" for name, got in outcomes if got != expect(name)]
