"""Every gRPC method and every HTTP route ortserve serves belongs to exactly one of Triton's API
groups, and the table names nothing that is not served."""

from __future__ import annotations

from typing import cast

from aiohttp import web
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection_pb2

from server.frontends.http.health import health_port_app
from server.frontends.http.server import build_http_app, build_metrics_app
from server.proto import grpc_service_pb2
from server.security.groups import GROUP_NAMES, GRPC_ENDPOINTS, HTTP_ENDPOINTS, Scope, http_endpoint
from server.service import InferenceService

# The services GrpcFrontend registers (frontends/grpc/server.py).
SERVICES = (
    grpc_service_pb2.DESCRIPTOR.services_by_name["GRPCInferenceService"],
    health_pb2.DESCRIPTOR.services_by_name["Health"],
    reflection_pb2.DESCRIPTOR.services_by_name["ServerReflection"],
)


def served_methods() -> dict[str, object]:
    return {f"/{service.full_name}/{method.name}": method for service in SERVICES for method in service.methods}


def served_routes() -> list[tuple[str, str]]:
    # Building the apps registers routes only; no handler runs, so no service is needed behind them.
    service = cast(InferenceService, object())
    apps = [build_http_app(service), build_metrics_app(lambda: ""), health_port_app(service)]
    routes = []
    for app in apps:
        for route in cast(web.Application, app).router.routes():
            assert route.resource is not None
            routes.append((route.method, route.resource.canonical))
    return routes


def test_triton_group_names() -> None:
    # restricted_features.h, RESTRICTED_CATEGORY_NAMES, in order.
    expected = ("health", "metadata", "inference", "shared-memory", "model-config", "model-repository", "statistics", "trace", "logging")
    assert expected == GROUP_NAMES


def test_every_grpc_method_has_a_group() -> None:
    methods = served_methods()
    assert len(methods) == 23
    assert sorted(set(methods) - set(GRPC_ENDPOINTS)) == []


def test_the_grpc_table_names_only_served_methods() -> None:
    assert sorted(set(GRPC_ENDPOINTS) - set(served_methods())) == []


def test_grpc_model_fields_exist_on_the_request_messages() -> None:
    methods = served_methods()
    for name, endpoint in GRPC_ENDPOINTS.items():
        fields = {f.name for f in methods[name].input_type.fields}  # type: ignore[attr-defined]
        if endpoint.scope in (Scope.MODEL, Scope.MODEL_OR_ALL):
            assert endpoint.model_field in fields, name
        else:
            assert endpoint.model_field == "", name


def test_every_http_route_has_a_group() -> None:
    routes = served_routes()
    assert len(routes) > 40
    assert [f"{m} {p}" for m, p in routes if http_endpoint(m, p) is None] == []


def test_the_http_table_names_only_served_routes() -> None:
    served = {f"{m} {p}" for m, p in served_routes()}
    assert sorted(set(HTTP_ENDPOINTS) - served) == []


def test_http_model_scopes_match_the_path() -> None:
    for name, endpoint in HTTP_ENDPOINTS.items():
        assert ("{model}" in name) == (endpoint.scope is Scope.MODEL), name


def test_same_operation_same_group_on_both_protocols() -> None:
    pairs = {
        "ServerLive": "GET /v2/health/live",
        "ModelReady": "GET /v2/models/{model}/ready",
        "ServerMetadata": "GET /v2",
        "ModelMetadata": "GET /v2/models/{model}",
        "ModelInfer": "POST /v2/models/{model}/infer",
        "ModelConfig": "GET /v2/models/{model}/config",
        "ModelStatistics": "GET /v2/models/{model}/stats",
        "RepositoryIndex": "POST /v2/repository/index",
        "RepositoryModelLoad": "POST /v2/repository/models/{model}/load",
        "RepositoryModelUnload": "POST /v2/repository/models/{model}/unload",
        "SystemSharedMemoryStatus": "GET /v2/systemsharedmemory/status",
        "CudaSharedMemoryRegister": "POST /v2/cudasharedmemory/region/{region}/register",
        "TraceSetting": "GET /v2/trace/setting",
        "LogSettings": "GET /v2/logging",
    }
    for method, route in pairs.items():
        grpc_endpoint = GRPC_ENDPOINTS[f"/inference.GRPCInferenceService/{method}"]
        assert grpc_endpoint.group == HTTP_ENDPOINTS[route].group, method
        assert grpc_endpoint.action == HTTP_ENDPOINTS[route].action, method
