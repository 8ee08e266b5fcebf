"""The allow/deny matrix: every gRPC method and every HTTP route of a real server, called with one
token per Triton API group, without a token and with a wrong one; what access control decided
(allowed, UNAUTHENTICATED/401, PERMISSION_DENIED/403) against what it should have.

Requests name a model that does not exist, so an allowed call ends in NOT_FOUND, 400 or 501 and
changes nothing on the server. Shared by tests/integration/test_auth.py and loadtest.bench_security.
"""

from __future__ import annotations

import hashlib
import ssl
import urllib.error
import urllib.request
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import grpc
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from server.proto import grpc_service_pb2 as pb
from server.security.groups import GROUP_NAMES, GRPC_ENDPOINTS, HTTP_ENDPOINTS, Endpoint

ABSENT_MODEL = "matrix-model"
ALLOWED, UNAUTHENTICATED, DENIED = "allowed", "unauthenticated", "denied"
NO_TOKEN, WRONG_TOKEN = "no-token", "wrong-token"
CREDENTIALS = (*GROUP_NAMES, NO_TOKEN, WRONG_TOKEN)

_INFERENCE = "/inference.GRPCInferenceService/"


def token(principal: str) -> str:
    """The bearer token of a principal of the matrix (a test secret, never a real one)."""
    return f"token-for-{principal}-{'x' * 16}"


def principal_entry(name: str, grants: dict[str, object]) -> dict[str, object]:
    """An auth config entry for ``name`` whose token is ``token(name)``."""
    return {"name": name, "tokens": ["sha256:" + hashlib.sha256(token(name).encode()).hexdigest()], "grants": grants}


def group_principals() -> list[dict[str, object]]:
    """One principal per API group, granted that group for every model and nothing else."""
    return [principal_entry(group, {group: "*"}) for group in GROUP_NAMES]


def expected(credential: str, group: str) -> str:
    if credential in (NO_TOKEN, WRONG_TOKEN):
        return UNAUTHENTICATED
    return ALLOWED if credential == group else DENIED


def failure_reason(credential: str) -> str:
    """The ortserve_auth_failures reason a refused call with this credential is counted under."""
    return {NO_TOKEN: "missing_credentials", WRONG_TOKEN: "invalid_token"}.get(credential, "not_granted")


def authorization(credential: str) -> str | None:
    if credential == NO_TOKEN:
        return None
    return f"Bearer {'not-a-token' if credential == WRONG_TOKEN else token(credential)}"


# ---- one call ------------------------------------------------------------------------------------


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
        code = error.code()  # type: ignore[attr-defined]
        return {grpc.StatusCode.UNAUTHENTICATED: UNAUTHENTICATED, grpc.StatusCode.PERMISSION_DENIED: DENIED}.get(code, ALLOWED)
    return ALLOWED


def http_path(endpoint: Endpoint) -> tuple[str, str]:
    method, path = endpoint.name.split(" ", 1)
    return method, path.replace("{model}", ABSENT_MODEL).replace("{version}", "1").replace("{region}", "r")


def call_http(
    base_url: str, endpoint: Endpoint, headers: dict[str, str], context: ssl.SSLContext | None = None
) -> tuple[str, dict[str, str]]:
    """One request; the access outcome and the response headers."""
    method, path = http_path(endpoint)
    request = urllib.request.Request(base_url + path, data=b"{}" if method == "POST" else None, method=method, headers=headers)
    try:
        with urllib.request.urlopen(request, timeout=10, context=context) as response:
            return ALLOWED, dict(response.headers)
    except urllib.error.HTTPError as error:
        return {401: UNAUTHENTICATED, 403: DENIED}.get(error.code, ALLOWED), dict(error.headers)


def http_endpoints(metrics: bool) -> list[Endpoint]:
    """The HTTP port's routes, or (``metrics``) the metrics port's."""
    return [e for e in HTTP_ENDPOINTS.values() if (e.name == "GET /metrics") == metrics]


# ---- the whole matrix ----------------------------------------------------------------------------


@dataclass
class MatrixResult:
    counts: Counter[str] = field(default_factory=Counter)  # "<protocol> <outcome>" → calls
    mismatches: list[str] = field(default_factory=list)
    refusals: Counter[tuple[str, str, str]] = field(default_factory=Counter)  # (protocol, group, reason) → calls

    @property
    def calls(self) -> int:
        return sum(self.counts.values())

    def record(self, protocol: str, credential: str, endpoint: Endpoint, got: str) -> None:
        want = expected(credential, endpoint.group.value)
        self.counts[f"{protocol} {got}"] += 1
        if got != want:
            self.mismatches.append(f"{protocol} {credential} {endpoint.name}: {got}, expected {want}")
        if want != ALLOWED:
            self.refusals[(protocol, endpoint.group.value, failure_reason(credential))] += 1


@dataclass(frozen=True)
class Target:
    """Where the server listens; TLS when ``credentials`` / ``context`` are given."""

    grpc_address: str
    http_base: str  # http(s)://host:port
    metrics_base: str
    grpc_credentials: grpc.ChannelCredentials | None = None
    context: ssl.SSLContext | None = None


def run_matrix(target: Target) -> MatrixResult:
    """Every credential against every gRPC method, HTTP route and the metrics route."""
    result = MatrixResult()
    if target.grpc_credentials is None:
        channel = grpc.insecure_channel(target.grpc_address)
    else:
        channel = grpc.secure_channel(target.grpc_address, target.grpc_credentials)
    with channel:
        for credential in CREDENTIALS:
            value = authorization(credential)
            metadata = (("authorization", value),) if value else ()
            for endpoint in GRPC_ENDPOINTS.values():
                result.record("grpc", credential, endpoint, call_grpc(channel, endpoint, metadata))
    for protocol, base, metrics in (("http", target.http_base, False), ("metrics", target.metrics_base, True)):
        for credential in CREDENTIALS:
            value = authorization(credential)
            headers = {"Authorization": value} if value else {}
            for endpoint in http_endpoints(metrics):
                got, response_headers = call_http(base, endpoint, headers, target.context)
                result.record(protocol, credential, endpoint, got)
                if got == UNAUTHENTICATED and not response_headers.get("WWW-Authenticate", "").startswith('Bearer realm="ortserve"'):
                    result.mismatches.append(f"{protocol} {credential} {endpoint.name}: 401 without WWW-Authenticate")
    return result
