"""Triton's API groups, and the group of every gRPC method and HTTP route ortserve serves.

The nine group names are Triton's (restricted_features.h): a grant in the auth config, Triton's
``--grpc-restricted-protocol`` and ``--http-restricted-api``, and the failure metric all speak of
them. Every endpoint belongs to exactly one group; tests/unit/test_security_groups.py walks the
gRPC service descriptors and the aiohttp routers and fails when an endpoint has none.

An endpoint also says how it names a model, so that a grant narrowed to model names can be
applied: ``MODEL`` endpoints name one model (an HTTP ``{model}`` path segment or a request field),
``ALL`` endpoints concern every model at once (the repository index, statistics without a name)
and need a grant that is not narrowed, ``NONE`` endpoints concern no model (server liveness,
server metadata, shared-memory regions).
"""

from __future__ import annotations

import enum
from dataclasses import dataclass


class ApiGroup(enum.Enum):
    # Members are singletons compared by identity: hashing by identity is correct and, unlike
    # Enum's own __hash__ (a Python call), free. Every call looks groups up in dicts.
    __hash__ = object.__hash__

    HEALTH = "health"
    METADATA = "metadata"
    INFERENCE = "inference"
    SHARED_MEMORY = "shared-memory"
    MODEL_CONFIG = "model-config"
    MODEL_REPOSITORY = "model-repository"
    STATISTICS = "statistics"
    TRACE = "trace"
    LOGGING = "logging"


GROUP_NAMES = tuple(group.value for group in ApiGroup)


def parse_group(name: str) -> ApiGroup:
    """Raises ValueError naming the allowed groups."""
    try:
        return ApiGroup(name.strip())
    except ValueError:
        raise ValueError(f"unknown API group '{name}' (allowed: {', '.join(GROUP_NAMES)})") from None


class Scope(enum.Enum):
    NONE = "none"  # about no model
    MODEL = "model"  # about the model the request names
    ALL = "all"  # about every model (needs a grant not narrowed to model names)
    MODEL_OR_ALL = "model-or-all"  # a model when the request names one, else every model


@dataclass(frozen=True, slots=True)
class Endpoint:
    name: str
    group: ApiGroup
    scope: Scope = Scope.NONE
    # gRPC: the request field that names the model (MODEL / MODEL_OR_ALL endpoints).
    model_field: str = ""
    # Audited actions (every attempt is one structured log line): "load", "unload".
    action: str = ""


def _grpc(service: str, method: str, group: ApiGroup, scope: Scope = Scope.NONE, field: str = "", action: str = "") -> Endpoint:
    return Endpoint(f"/{service}/{method}", group, scope, field, action)


_INFERENCE_SERVICE = "inference.GRPCInferenceService"
_G = ApiGroup

GRPC_ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        _grpc(_INFERENCE_SERVICE, "ServerLive", _G.HEALTH),
        _grpc(_INFERENCE_SERVICE, "ServerReady", _G.HEALTH),
        _grpc(_INFERENCE_SERVICE, "ModelReady", _G.HEALTH, Scope.MODEL, "name"),
        _grpc("grpc.health.v1.Health", "Check", _G.HEALTH),
        _grpc("grpc.health.v1.Health", "Watch", _G.HEALTH),
        _grpc(_INFERENCE_SERVICE, "ServerMetadata", _G.METADATA),
        _grpc(_INFERENCE_SERVICE, "ModelMetadata", _G.METADATA, Scope.MODEL, "name"),
        # Reflection describes the API itself (which services and messages exist), like metadata.
        _grpc("grpc.reflection.v1alpha.ServerReflection", "ServerReflectionInfo", _G.METADATA),
        _grpc(_INFERENCE_SERVICE, "ModelInfer", _G.INFERENCE, Scope.MODEL, "model_name"),
        _grpc(_INFERENCE_SERVICE, "ModelStreamInfer", _G.INFERENCE, Scope.MODEL, "model_name"),
        _grpc(_INFERENCE_SERVICE, "ModelConfig", _G.MODEL_CONFIG, Scope.MODEL, "name"),
        _grpc(_INFERENCE_SERVICE, "ModelStatistics", _G.STATISTICS, Scope.MODEL_OR_ALL, "name"),
        _grpc(_INFERENCE_SERVICE, "RepositoryIndex", _G.MODEL_REPOSITORY, Scope.ALL),
        _grpc(_INFERENCE_SERVICE, "RepositoryModelLoad", _G.MODEL_REPOSITORY, Scope.MODEL, "model_name", "load"),
        _grpc(_INFERENCE_SERVICE, "RepositoryModelUnload", _G.MODEL_REPOSITORY, Scope.MODEL, "model_name", "unload"),
        *(
            _grpc(_INFERENCE_SERVICE, f"{kind}SharedMemory{verb}", _G.SHARED_MEMORY)
            for kind in ("System", "Cuda")
            for verb in ("Status", "Register", "Unregister")
        ),
        _grpc(_INFERENCE_SERVICE, "TraceSetting", _G.TRACE, Scope.MODEL_OR_ALL, "model_name"),
        _grpc(_INFERENCE_SERVICE, "LogSettings", _G.LOGGING),
    )
}


def _http(method: str, path: str, group: ApiGroup, scope: Scope = Scope.NONE, action: str = "") -> Endpoint:
    return Endpoint(f"{method} {path}", group, scope, action=action)


_MODEL = "/v2/models/{model}"
_VERSION = "/v2/models/{model}/versions/{version}"


def _shared_memory_routes() -> list[Endpoint]:
    routes = []
    for kind in ("systemsharedmemory", "cudasharedmemory"):
        routes += [
            _http("GET", f"/v2/{kind}/status", _G.SHARED_MEMORY),
            _http("GET", f"/v2/{kind}/region/{{region}}/status", _G.SHARED_MEMORY),
            _http("POST", f"/v2/{kind}/region/{{region}}/register", _G.SHARED_MEMORY),
            _http("POST", f"/v2/{kind}/unregister", _G.SHARED_MEMORY),
            _http("POST", f"/v2/{kind}/region/{{region}}/unregister", _G.SHARED_MEMORY),
        ]
    return routes


# Keyed by "METHOD canonical-path" as aiohttp's router spells the route (HEAD follows GET).
HTTP_ENDPOINTS: dict[str, Endpoint] = {
    e.name: e
    for e in (
        _http("GET", "/v2/health/live", _G.HEALTH),
        _http("GET", "/v2/health/ready", _G.HEALTH),
        _http("GET", f"{_MODEL}/ready", _G.HEALTH, Scope.MODEL),
        _http("GET", f"{_VERSION}/ready", _G.HEALTH, Scope.MODEL),
        _http("GET", "/v2", _G.METADATA),
        _http("GET", _MODEL, _G.METADATA, Scope.MODEL),
        _http("GET", _VERSION, _G.METADATA, Scope.MODEL),
        # The API's own description, like server metadata.
        _http("GET", "/v2/openapi.json", _G.METADATA),
        _http("POST", f"{_MODEL}/infer", _G.INFERENCE, Scope.MODEL),
        _http("POST", f"{_VERSION}/infer", _G.INFERENCE, Scope.MODEL),
        _http("GET", f"{_MODEL}/config", _G.MODEL_CONFIG, Scope.MODEL),
        _http("GET", f"{_VERSION}/config", _G.MODEL_CONFIG, Scope.MODEL),
        _http("GET", "/v2/models/stats", _G.STATISTICS, Scope.ALL),
        _http("GET", f"{_MODEL}/stats", _G.STATISTICS, Scope.MODEL),
        _http("GET", f"{_VERSION}/stats", _G.STATISTICS, Scope.MODEL),
        # The metrics port: per-model counters of every model, so statistics about all of them.
        _http("GET", "/metrics", _G.STATISTICS, Scope.ALL),
        _http("POST", "/v2/repository/index", _G.MODEL_REPOSITORY, Scope.ALL),
        _http("POST", "/v2/repository/models/{model}/load", _G.MODEL_REPOSITORY, Scope.MODEL, "load"),
        _http("POST", "/v2/repository/models/{model}/unload", _G.MODEL_REPOSITORY, Scope.MODEL, "unload"),
        *_shared_memory_routes(),
        _http("GET", "/v2/trace/setting", _G.TRACE, Scope.ALL),
        _http("POST", "/v2/trace/setting", _G.TRACE, Scope.ALL),
        _http("GET", f"{_MODEL}/trace/setting", _G.TRACE, Scope.MODEL),
        _http("POST", f"{_MODEL}/trace/setting", _G.TRACE, Scope.MODEL),
        _http("GET", "/v2/logging", _G.LOGGING),
        _http("POST", "/v2/logging", _G.LOGGING),
    )
}


def http_endpoint(method: str, canonical_path: str) -> Endpoint | None:
    """The endpoint of a route as aiohttp reports it (``route.method``, ``resource.canonical``)."""
    return HTTP_ENDPOINTS.get(f"{'GET' if method == 'HEAD' else method} {canonical_path}")
