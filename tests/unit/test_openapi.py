"""The hand-written OpenAPI document and the HTTP router list exactly the same routes, and the
document is valid OpenAPI 3."""

from __future__ import annotations

import json
from typing import cast

from openapi_spec_validator import validate

from server.frontends.http.openapi import OPENAPI_PATH
from server.frontends.http.server import build_http_app
from server.service import InferenceService

METHODS = ("get", "put", "post", "delete", "patch", "options", "head", "trace")


def document() -> dict:
    return json.loads(OPENAPI_PATH.read_text())


def documented_routes() -> set[tuple[str, str]]:
    return {(method.upper(), path) for path, item in document()["paths"].items() for method in item if method in METHODS}


def served_routes() -> set[tuple[str, str]]:
    # Building the app registers routes only; no handler runs, so no service is needed behind it.
    app = build_http_app(cast(InferenceService, object()))
    routes = set()
    for route in app.router.routes():
        if route.method == "HEAD":  # aiohttp adds HEAD to every GET; it is not a separate API
            continue
        resource = route.resource
        assert resource is not None
        routes.add((route.method, resource.canonical))
    return routes


def test_every_documented_route_is_served() -> None:
    assert documented_routes() - served_routes() == set()


def test_every_served_route_is_documented() -> None:
    assert served_routes() - documented_routes() == set()


def test_document_is_valid_openapi_3() -> None:
    validate(document())


def test_path_parameters_are_declared() -> None:
    for path, item in document()["paths"].items():
        names = {part[1:-1] for part in path.split("/") if part.startswith("{")}
        for method, operation in item.items():
            declared = {p["name"] for p in operation.get("parameters", []) if p["in"] == "path"}
            assert declared == names, f"{method.upper()} {path}"
