"""Triton 2.41 behaviour end to end: classification, scalars, the batcher's closing rule, server
identity and the completed config, through tritonclient (gRPC unary and streaming, HTTP JSON
and binary) and raw protobuf where tritonclient cannot send the mistake."""

from __future__ import annotations

import json
import queue
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import ServerProcess
from server.proto import grpc_service_pb2 as pb
from server.proto import grpc_service_pb2_grpc as pb_grpc
from tests.repository_builder import write_model

LABELS = ["cat", "dog", "", "owl"]  # class 2 has an empty label and class 4 none at all
CLASSIFIER_CONFIG = """
max_batch_size: 8
input [ { name: "features", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "probs", data_type: TYPE_FP32, dims: [ 5 ], label_filename: "labels.txt" } ]
"""
# A delay far longer than any test: a request that waits for it would time the test out.
PREFERRED_CONFIG = """
max_batch_size: 8
dynamic_batching { preferred_batch_size: [ 2, 6 ] max_queue_delay_microseconds: 3600000000 }
"""
# Ragged: four requests of different lengths form one batch (the preferred size) however slowly
# they arrive, since the delay is far longer than any test.
RAGGED_CONFIG = """
max_batch_size: 8
input [ { name: "x", data_type: TYPE_FP32, dims: [ -1 ], allow_ragged_batch: true } ]
batch_input [
  { kind: BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO, target_name: "offsets", data_type: TYPE_INT32, source_input: "x" },
  { kind: BATCH_ELEMENT_COUNT, target_name: "counts", data_type: TYPE_INT32, source_input: "x" }
]
output [
  { name: "sum", data_type: TYPE_FP32, dims: [ 1 ], reshape { shape: [ ] } },
  { name: "count", data_type: TYPE_FP32, dims: [ 1 ], reshape { shape: [ ] } }
]
dynamic_batching { preferred_batch_size: [ 4 ] max_queue_delay_microseconds: 3600000000 }
"""
SERVER_ID = "conformance-under-test"


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("conformance_repo")
    write_model(repository, "classifier", onnx_models.classifier(), CLASSIFIER_CONFIG)
    (repository / "classifier" / "labels.txt").write_text("\n".join(LABELS) + "\n")
    write_model(repository, "scalar_scale", onnx_models.scalar_scale())
    write_model(repository, "preferred", onnx_models.add_constant("FP32", ["batch", 4], 1.0), PREFERRED_CONFIG)
    write_model(repository, "ragged", onnx_models.ragged_sum(), RAGGED_CONFIG)
    write_model(repository, "ragged_unbatched", onnx_models.ragged_sum(), RAGGED_CONFIG.split("dynamic_batching")[0])
    process = ServerProcess([Path(repository)], ["--id", SERVER_ID], log_path=repository / "server.log")
    with process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


@pytest.fixture
def grpc_client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        yield client


@pytest.fixture
def http_client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    client = httpclient.InferenceServerClient(server.http_url)
    yield client
    client.close()


FEATURES = np.random.default_rng(7).standard_normal((3, 4)).astype(np.float32)


def expected_classes(probs: np.ndarray, count: int) -> list[list[str]]:
    """The reference: top ``count`` per row as Triton prints them, checked independently of the server."""
    rows = []
    for row in probs:
        ranked = sorted(range(len(row)), key=lambda i: (-row[i], i))[:count]
        texts = [f"{float(row[i]):f}:{i}" + (f":{LABELS[i]}" if i < len(LABELS) and LABELS[i] else "") for i in ranked]
        rows.append(texts)
    return rows


def grpc_features(array: np.ndarray = FEATURES) -> list[grpcclient.InferInput]:
    item = grpcclient.InferInput("features", list(array.shape), "FP32")
    item.set_data_from_numpy(array)
    return [item]


def http_features(array: np.ndarray = FEATURES, binary: bool = True) -> list[httpclient.InferInput]:
    item = httpclient.InferInput("features", list(array.shape), "FP32")
    item.set_data_from_numpy(array, binary_data=binary)
    return [item]


def decoded(strings: np.ndarray) -> list[list[str]]:
    return [[s.decode() if isinstance(s, bytes) else s for s in row] for row in strings]


# ---- classification --------------------------------------------------------------------------


def test_classification_over_grpc_matches_the_plain_output(grpc_client: grpcclient.InferenceServerClient) -> None:
    probs = grpc_client.infer("classifier", grpc_features()).as_numpy("probs")
    result = grpc_client.infer("classifier", grpc_features(), outputs=[grpcclient.InferRequestedOutput("probs", class_count=3)])
    output = result.get_output("probs")
    assert (output.datatype, list(output.shape)) == ("BYTES", [3, 3])
    assert decoded(result.as_numpy("probs")) == expected_classes(probs, 3)


def test_classification_over_a_stream(grpc_client: grpcclient.InferenceServerClient) -> None:
    probs = grpc_client.infer("classifier", grpc_features()).as_numpy("probs")
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    grpc_client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        grpc_client.async_stream_infer("classifier", grpc_features(), outputs=[grpcclient.InferRequestedOutput("probs", class_count=2)])
        result, error = answers.get(timeout=30)
    finally:
        grpc_client.stop_stream()
    assert error is None, error
    assert decoded(result.as_numpy("probs")) == expected_classes(probs, 2)  # type: ignore[union-attr]


@pytest.mark.parametrize("binary", [True, False], ids=["binary", "json"])
def test_classification_over_http(http_client: httpclient.InferenceServerClient, binary: bool) -> None:
    probs = http_client.infer("classifier", http_features()).as_numpy("probs")
    requested = [httpclient.InferRequestedOutput("probs", binary_data=binary, class_count=5)]
    result = http_client.infer("classifier", http_features(binary=binary), outputs=requested)
    assert result.get_output("probs")["datatype"] == "BYTES"
    assert decoded(result.as_numpy("probs")) == expected_classes(probs, 5)


def test_class_count_above_the_class_count_returns_every_class(grpc_client: grpcclient.InferenceServerClient) -> None:
    result = grpc_client.infer("classifier", grpc_features(FEATURES[:1]), outputs=[grpcclient.InferRequestedOutput("probs", 50)])
    assert list(result.get_output("probs").shape) == [1, 5]


def classification_request(value: pb.InferParameter) -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name="classifier")
    request.inputs.add(name="features", datatype="FP32", shape=[1, 4])
    request.raw_input_contents.append(FEATURES[:1].tobytes())
    output = request.outputs.add(name="probs")
    output.parameters["classification"].CopyFrom(value)
    return request


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (pb.InferParameter(string_param="3"), "invalid value type for 'classification' parameter, expected int64_param"),
        (pb.InferParameter(uint64_param=3), "invalid value type for 'classification' parameter, expected int64_param"),
        (pb.InferParameter(int64_param=0), "invalid value for 'classification' parameter, expected >= 0"),
        (pb.InferParameter(int64_param=-2), "invalid value for 'classification' parameter, expected >= 0"),
    ],
    ids=["string", "uint64", "zero", "negative"],
)
def test_bad_classification_parameters_over_grpc(server: ServerProcess, value: pb.InferParameter, message: str) -> None:
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(classification_request(value), timeout=30)
        assert (caught.value.code(), caught.value.details()) == (grpc.StatusCode.INVALID_ARGUMENT, message)  # type: ignore[attr-defined]
        assert stub.ModelReady(pb.ModelReadyRequest(name="classifier"), timeout=30).ready


def http_post(server: ServerProcess, path: str, document: dict) -> tuple[int, dict]:
    request = urllib.request.Request(f"http://{server.http_url}{path}", data=json.dumps(document).encode(), method="POST")
    try:
        with urllib.request.urlopen(request, timeout=30) as response:
            return response.status, json.loads(response.read())
    except urllib.error.HTTPError as error:
        return error.code, json.loads(error.read())


@pytest.mark.parametrize("value", [-1, 2.5, "3", True], ids=["negative", "float", "string", "bool"])
def test_bad_classification_parameters_over_http(server: ServerProcess, value: object) -> None:
    document = {
        "inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": FEATURES[0].tolist()}],
        "outputs": [{"name": "probs", "parameters": {"classification": value}}],
    }
    status, body = http_post(server, "/v2/models/classifier/infer", document)
    assert (status, body) == (
        400,
        {"error": "Unable to set 'classification': attempt to access JSON non-unsigned-integer as unsigned-integer"},
    )


def test_http_classification_zero_means_the_plain_tensor(server: ServerProcess) -> None:
    document = {
        "inputs": [{"name": "features", "shape": [1, 4], "datatype": "FP32", "data": FEATURES[0].tolist()}],
        "outputs": [{"name": "probs", "parameters": {"classification": 0}}],
    }
    status, body = http_post(server, "/v2/models/classifier/infer", document)
    assert status == 200 and body["outputs"][0]["datatype"] == "FP32" and body["outputs"][0]["shape"] == [1, 5]


def test_classification_is_advertised(grpc_client: grpcclient.InferenceServerClient) -> None:
    assert "classification" in grpc_client.get_server_metadata().extensions


# ---- scalars ---------------------------------------------------------------------------------


def scalar_request(scale_shape: list[int]) -> list[grpcclient.InferInput]:
    x = grpcclient.InferInput("x", [3], "FP32")
    x.set_data_from_numpy(np.array([1.0, 2.0, 3.0], np.float32))
    scale = grpcclient.InferInput("scale", scale_shape, "FP32")
    scale.set_data_from_numpy(np.array(2.5, np.float32).reshape(scale_shape))
    return [x, scale]


@pytest.mark.parametrize("shape", [[1], []], ids=["config-dims", "rank-0"])
def test_a_scalar_input_takes_shape_one_or_no_dims(grpc_client: grpcclient.InferenceServerClient, shape: list[int]) -> None:
    result = grpc_client.infer("scalar_scale", scalar_request(shape))
    np.testing.assert_allclose(result.as_numpy("y"), [2.5, 5.0, 7.5])


def test_a_scalar_is_described_as_triton_does(grpc_client: grpcclient.InferenceServerClient) -> None:
    config = grpc_client.get_model_config("scalar_scale", as_json=True)["config"]
    scale = next(entry for entry in config["input"] if entry["name"] == "scale")
    assert scale["dims"] == ["1"] and "reshape" not in scale
    metadata = grpc_client.get_model_metadata("scalar_scale", as_json=True)
    assert next(t for t in metadata["inputs"] if t["name"] == "scale")["shape"] == ["1"]


def test_a_scalar_of_the_wrong_rank_is_refused(grpc_client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        grpc_client.infer("scalar_scale", scalar_request([1, 1]))
    assert caught.value.status() == "StatusCode.INVALID_ARGUMENT"
    assert caught.value.message().endswith("unexpected shape for input 'scale' for model 'scalar_scale'. Expected [1], got [1,1]. ")


# ---- the batcher dispatches a batch that cannot grow at once ---------------------------------


def test_a_request_past_the_largest_preferred_size_does_not_wait_for_the_delay(
    grpc_client: grpcclient.InferenceServerClient,
) -> None:
    rows = np.arange(28, dtype=np.float32).reshape(7, 4)
    item = grpcclient.InferInput("INPUT0", [7, 4], "FP32")
    item.set_data_from_numpy(rows)
    # The delay is an hour: an answer within the client timeout means the batch did not wait.
    result = grpc_client.infer("preferred", [item], client_timeout=120)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), rows + 1)


# ---- identity and the completed config -------------------------------------------------------


def test_the_id_flag_names_the_server(grpc_client: grpcclient.InferenceServerClient, http_client: httpclient.InferenceServerClient) -> None:
    assert grpc_client.get_server_metadata().name == SERVER_ID
    assert http_client.get_server_metadata()["name"] == SERVER_ID


def test_the_completed_config_has_tritons_defaults(grpc_client: grpcclient.InferenceServerClient) -> None:
    config = grpc_client.get_model_config("classifier", as_json=True)["config"]
    assert [group["name"] for group in config["instance_group"]] == ["classifier"]
    assert config["optimization"]["input_pinned_memory"] == {"enable": True}
    assert config["optimization"]["output_pinned_memory"] == {"enable": True}


# ---- ragged batching and batch inputs --------------------------------------------------------


def ragged_input(values: np.ndarray) -> list[grpcclient.InferInput]:
    item = grpcclient.InferInput("x", [1, len(values)], "FP32")
    item.set_data_from_numpy(values.reshape(1, -1))
    return [item]


def test_requests_of_different_lengths_share_one_batch(grpc_client: grpcclient.InferenceServerClient) -> None:
    before = grpc_client.get_inference_statistics("ragged", as_json=True)["model_stats"][0]
    runs = [np.arange(n, dtype=np.float32) + n for n in (3, 1, 5, 2)]
    done: queue.Queue[tuple[int, object, object]] = queue.Queue()
    for index, values in enumerate(runs):
        grpc_client.async_infer(
            "ragged", ragged_input(values), lambda result, error, index=index: done.put((index, result, error)), client_timeout=120
        )
    answers = {}
    for _ in runs:
        index, result, error = done.get(timeout=120)
        assert error is None, error
        answers[index] = result
    for index, values in enumerate(runs):
        result = answers[index]
        np.testing.assert_allclose(result.as_numpy("sum"), [[values.sum()]])
        np.testing.assert_array_equal(result.as_numpy("count"), [[len(values)]])
    after = grpc_client.get_inference_statistics("ragged", as_json=True)["model_stats"][0]
    assert int(after.get("execution_count", 0)) - int(before.get("execution_count", 0)) == 1
    assert {b["batch_size"]: b["compute_infer"]["count"] for b in after["batch_stats"]}.get("4") == "1"


def test_a_lone_ragged_request_over_http(http_client: httpclient.InferenceServerClient) -> None:
    values = np.array([1.5, 2.5], np.float32)
    item = httpclient.InferInput("x", [1, 2], "FP32")
    item.set_data_from_numpy(values.reshape(1, 2))
    result = http_client.infer("ragged_unbatched", [item])
    np.testing.assert_allclose(result.as_numpy("sum"), [[4.0]])
    np.testing.assert_array_equal(result.as_numpy("count"), [[2.0]])


def test_a_ragged_input_whose_data_does_not_fill_its_shape_is_refused(server: ServerProcess) -> None:
    request = pb.ModelInferRequest(model_name="ragged_unbatched")
    request.inputs.add(name="x", datatype="FP32", shape=[1, 3])
    request.raw_input_contents.append(np.ones(2, np.float32).tobytes())
    with grpc.insecure_channel(server.grpc_url) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        with pytest.raises(grpc.RpcError) as caught:
            stub.ModelInfer(request, timeout=30)
        assert caught.value.code() == grpc.StatusCode.INVALID_ARGUMENT  # type: ignore[attr-defined]
        assert caught.value.details().endswith(  # type: ignore[attr-defined]
            "input byte size mismatch for input 'x' for model 'ragged_unbatched'. Expected 12, got 8"
        )
        assert stub.ModelReady(pb.ModelReadyRequest(name="ragged_unbatched"), timeout=30).ready
