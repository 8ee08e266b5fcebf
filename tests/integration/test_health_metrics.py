"""Probes and metrics: grpc.health.v1, server reflection, KServe HTTP health, Prometheus text.

Readiness is checked on two servers: the shared one (--strict-readiness=false, so ready although
two models fail) and a dedicated strict one (the default) whose repository holds one good model
and one that cannot load. Metric values are checked as deltas around a test's own requests.
"""

from __future__ import annotations

import json
import re
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from google.protobuf.descriptor_pool import DescriptorPool
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import ServerProcess
from tests.repository_builder import SIMPLE_CONFIG, write_model

SERVING = health_pb2.HealthCheckResponse.SERVING
NOT_SERVING = health_pb2.HealthCheckResponse.NOT_SERVING
SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def get(url: str) -> tuple[int, bytes, str]:
    """(status, body, content type) of a GET; HTTP errors are answers too."""
    try:
        with urllib.request.urlopen(url, timeout=10) as response:
            return response.status, response.read(), response.headers.get("Content-Type", "")
    except urllib.error.HTTPError as error:
        return error.code, error.read(), error.headers.get("Content-Type", "")


def health_check(grpc_url: str, service: str = "") -> int:
    with grpc.insecure_channel(grpc_url) as channel:
        return health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(service=service), timeout=10).status


@pytest.fixture(scope="module")
def strict_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """Default --strict-readiness (true) on a repository where one of two models fails."""
    repository = tmp_path_factory.mktemp("strict_repo")
    write_model(repository, "simple", onnx_models.simple(), SIMPLE_CONFIG)
    (repository / "corrupt" / "1").mkdir(parents=True)
    (repository / "corrupt" / "1" / "model.onnx").write_bytes(b"not an ONNX model")
    with ServerProcess([repository], log_path=repository.parent / "strict.log") as process:
        wait_for_startup(process)
        yield process


def wait_for_startup(process: ServerProcess, timeout: float = 60.0) -> None:
    """Until startup has finished (it logs so once every load settled) with both models settled."""
    process.wait_for_log("ortserve ready to serve", timeout=timeout)
    with grpcclient.InferenceServerClient(process.grpc_url) as client:
        states = {m.name: m.state for m in client.get_model_repository_index().models}
    assert states == {"simple": "READY", "corrupt": "UNAVAILABLE"}, process.log()


# ---- gRPC health and reflection ----------------------------------------------------------------


@pytest.mark.parametrize("service", ["", "inference.GRPCInferenceService"], ids=["overall", "inference"])
def test_grpc_health_is_serving_on_a_ready_server(server: ServerProcess, service: str) -> None:
    assert health_check(server.grpc_url, service) == SERVING


@pytest.mark.parametrize("service", ["", "inference.GRPCInferenceService"], ids=["overall", "inference"])
def test_grpc_health_is_not_serving_when_strict_and_a_model_failed(strict_server: ServerProcess, service: str) -> None:
    assert health_check(strict_server.grpc_url, service) == NOT_SERVING


def test_grpc_health_of_an_unknown_service_is_not_found(server: ServerProcess) -> None:
    with pytest.raises(grpc.RpcError) as caught:
        health_check(server.grpc_url, "no.such.Service")
    assert caught.value.code() == grpc.StatusCode.NOT_FOUND  # type: ignore[attr-defined]


def test_strict_server_is_live_but_not_ready_and_still_serves_its_good_model(strict_server: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(strict_server.grpc_url) as client:
        assert client.is_server_live() is True
        assert client.is_server_ready() is False
        assert client.is_model_ready("simple") is True
    assert get(f"http://{strict_server.http_url}/v2/health/live")[0] == 200
    assert get(f"http://{strict_server.http_url}/v2/health/ready")[0] == 400
    assert get(f"http://{strict_server.http_url}/v2/models/simple/ready")[0] == 200


def test_reflection_lists_the_services(server: ServerProcess) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        database = ProtoReflectionDescriptorDatabase(channel)
        services = set(database.get_services())
        assert {"inference.GRPCInferenceService", "grpc.health.v1.Health"} <= services
        methods = {m.name for m in DescriptorPool(database).FindServiceByName("inference.GRPCInferenceService").methods}
    assert {"ServerLive", "ServerReady", "ModelMetadata", "ModelInfer", "ModelStreamInfer", "ModelStatistics"} <= methods


# ---- KServe HTTP health ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "status"),
    [
        ("/v2/health/live", 200),
        ("/v2/health/ready", 200),
        ("/v2/models/simple/ready", 200),
        ("/v2/models/simple/versions/1/ready", 200),
        ("/v2/models/versioned/versions/2/ready", 200),
    ],
)
def test_http_health_true_is_200_with_an_empty_body(server: ServerProcess, path: str, status: int) -> None:
    code, body, _ = get(f"http://{server.http_url}{path}")
    assert (code, body) == (status, b"")


@pytest.mark.parametrize(
    ("path", "status", "message"),
    [
        ("/v2/models/no_such_model/ready", 404, "Request for unknown model: 'no_such_model' is not found"),
        ("/v2/models/simple/versions/7/ready", 404, "Request for unknown model: 'simple' version 7 is not found"),
        ("/v2/models/corrupt/versions/1/ready", 503, "Request for unknown model: 'corrupt' version 1 is not at ready state"),
        ("/v2/models/corrupt/ready", 404, "Request for unknown model: 'corrupt' has no available versions"),
    ],
    ids=["unknown-model", "unknown-version", "unready-version", "no-ready-version"],
)
def test_http_model_ready_lookup_errors_are_json(server: ServerProcess, path: str, status: int, message: str) -> None:
    code, body, content_type = get(f"http://{server.http_url}{path}")
    assert code == status
    assert content_type.startswith("application/json")
    assert json.loads(body) == {"error": message}


# ---- /metrics ----------------------------------------------------------------------------------


def scrape(server: ServerProcess) -> tuple[str, dict[tuple[str, frozenset[tuple[str, str]]], float]]:
    """The exposition text and its samples keyed by (name, labels)."""
    status, body, content_type = get(server.metrics_url)
    assert status == 200 and content_type.startswith("text/plain")
    text = body.decode("utf-8")
    samples = {}
    for line in text.splitlines():
        if not line or line.startswith("#"):
            continue
        match = SAMPLE.match(line)
        assert match, f"not a Prometheus sample line: {line!r}"
        labels = frozenset(LABEL.findall(match["labels"] or ""))
        samples[(match["name"], labels)] = float(match["value"])
    return text, samples


def series(samples: dict, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def simple_inputs(rows: int) -> list[grpcclient.InferInput]:
    inputs = []
    for name in ("INPUT0", "INPUT1"):
        item = grpcclient.InferInput(name, [rows, 16], "INT32")
        item.set_data_from_numpy(np.ones((rows, 16), np.int32))
        inputs.append(item)
    return inputs


def test_metric_names_are_tritons(server: ServerProcess) -> None:
    text, samples = scrape(server)
    for family in ("nv_inference_request_success", "nv_inference_request_failure", "nv_inference_count", "nv_inference_exec_count"):
        assert f"# TYPE {family} counter" in text.splitlines()
    for family in ("nv_inference_request_duration_us", "nv_inference_queue_duration_us", "nv_inference_compute_infer_duration_us"):
        assert f"# TYPE {family} counter" in text.splitlines()
    assert "# TYPE nv_inference_pending_request_count gauge" in text.splitlines()
    nv_names = {name for name, _ in samples if name.startswith("nv_")}
    assert not [n for n in nv_names if n.endswith("_total")]
    assert "_created" not in text
    assert ("nv_inference_request_success", frozenset({("model", "simple"), ("version", "1")})) in samples


def test_request_counters_grow_by_exactly_what_was_sent(server: ServerProcess) -> None:
    labels = {"model": "simple", "version": "1"}
    _, before = scrape(server)
    rows = (1, 3, 2, 4, 1)
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        for count in rows:  # one at a time: one execution each
            client.infer("simple", simple_inputs(count))
        with pytest.raises(InferenceServerException):
            client.infer("simple", simple_inputs(1)[:1])
    _, after = scrape(server)

    def grew(name: str, **extra: str) -> float:
        return series(after, name, **labels, **extra) - series(before, name, **labels, **extra)

    assert grew("nv_inference_request_success") == len(rows)
    assert grew("nv_inference_count") == sum(rows)
    assert grew("nv_inference_exec_count") == len(rows)
    assert grew("nv_inference_request_failure", reason="OTHER") == 1
    for reason in ("REJECTED", "CANCELED", "BACKEND"):
        assert grew("nv_inference_request_failure", reason=reason) == 0, reason
    assert grew("nv_inference_request_duration_us") > 0
    assert series(after, "nv_inference_pending_request_count", **labels) == 0


def test_metrics_agree_with_model_statistics(server: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        client.infer("simple", simple_inputs(2))
        (stats,) = client.get_inference_statistics("simple", "1").model_stats
        _, samples = scrape(server)
    labels = {"model": "simple", "version": "1"}
    assert series(samples, "nv_inference_request_success", **labels) == stats.inference_stats.success.count
    assert series(samples, "nv_inference_count", **labels) == stats.inference_count
    assert series(samples, "nv_inference_exec_count", **labels) == stats.execution_count


def test_failed_models_have_no_series(server: ServerProcess) -> None:
    _, samples = scrape(server)
    models = {dict(labels).get("model") for _, labels in samples}
    assert "simple" in models and "versioned" in models
    assert not models & {"corrupt", "contradicting"}


def test_metrics_of_each_loaded_version(server: ServerProcess, test_repository: Path) -> None:
    _, samples = scrape(server)
    versions = {
        dict(labels)["version"] for name, labels in samples if name == "nv_inference_count" and dict(labels)["model"] == "versioned"
    }
    assert versions == {"2", "3"}
    assert (test_repository / "versioned" / "1").is_dir()  # present on disk, excluded by policy
