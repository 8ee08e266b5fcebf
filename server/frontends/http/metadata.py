"""Server and model metadata, model configuration and statistics routes (KServe v2 + Triton)."""

from __future__ import annotations

from typing import Any

from aiohttp import web

from server.frontends.http.json_codec import json_response
from server.frontends.http.model_config_json import config_to_json
from server.service import InferenceService
from server.types import Duration, ModelMetadata, ModelStatistics, TensorMetadata

_MODEL = "/v2/models/{model}"
_VERSION = "/v2/models/{model}/versions/{version}"


def _name_version(request: web.Request) -> tuple[str, str]:
    return request.match_info.get("model", ""), request.match_info.get("version", "")


def metadata_routes(service: InferenceService) -> list[web.RouteDef]:
    async def server_metadata(request: web.Request) -> web.Response:
        metadata = service.server_metadata()
        return json_response({"name": metadata.name, "version": metadata.version, "extensions": list(metadata.extensions)})

    async def model_metadata(request: web.Request) -> web.Response:
        return json_response(model_metadata_json(service.model_metadata(*_name_version(request))))

    async def model_config(request: web.Request) -> web.Response:
        return json_response(config_to_json(service.model_config(*_name_version(request))))

    async def statistics(request: web.Request) -> web.Response:
        return json_response(statistics_json(service.statistics(*_name_version(request))))

    return [
        web.get("/v2", server_metadata),
        # Before /v2/models/{model}, which would otherwise take "stats" for a model name.
        web.get("/v2/models/stats", statistics),
        web.get(f"{_MODEL}/stats", statistics),
        web.get(f"{_VERSION}/stats", statistics),
        web.get(_MODEL, model_metadata),
        web.get(_VERSION, model_metadata),
        web.get(f"{_MODEL}/config", model_config),
        web.get(f"{_VERSION}/config", model_config),
    ]


def model_metadata_json(metadata: ModelMetadata) -> dict[str, Any]:
    def tensors(items: tuple[TensorMetadata, ...]) -> list[dict[str, Any]]:
        return [{"name": t.name, "datatype": t.datatype, "shape": list(t.shape)} for t in items]

    return {
        "name": metadata.name,
        "versions": list(metadata.versions),
        "platform": metadata.platform,
        "inputs": tensors(metadata.inputs),
        "outputs": tensors(metadata.outputs),
    }


def _duration(duration: Duration) -> dict[str, int]:
    return {"count": duration.count, "ns": duration.ns}


def statistics_json(versions: list[ModelStatistics]) -> dict[str, Any]:
    """Triton's statistics extension JSON; the same figures as gRPC's ModelStatistics."""
    return {"model_stats": [_version_statistics(stats) for stats in versions]}


def _version_statistics(stats: ModelStatistics) -> dict[str, Any]:
    return {
        "name": stats.name,
        "version": stats.version,
        "last_inference": stats.last_inference_ms,
        "inference_count": stats.inference_count,
        "execution_count": stats.execution_count,
        "inference_stats": {
            "success": _duration(stats.success),
            "fail": _duration(stats.fail),
            "queue": _duration(stats.queue),
            "compute_input": _duration(stats.compute_input),
            "compute_infer": _duration(stats.compute_infer),
            "compute_output": _duration(stats.compute_output),
            "cache_hit": _duration(stats.cache_hit),
            "cache_miss": _duration(stats.cache_miss),
        },
        "batch_stats": [
            {
                "batch_size": batch.batch_size,
                "compute_input": _duration(batch.compute_input),
                "compute_infer": _duration(batch.compute_infer),
                "compute_output": _duration(batch.compute_output),
            }
            for batch in stats.batch_stats
        ],
    }
