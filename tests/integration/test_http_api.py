"""The HTTP/REST API through unmodified tritonclient.http (and perf_analyzer -i http).

Runs against the shared ``server`` fixture (the test repository), so expected values come from
tests/repository_builder.py. Where both protocols answer the same question, the HTTP answer is
also checked against gRPC's. Statistics are checked as deltas around this test's own requests.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException, triton_to_np_dtype

import server as ortserve
from loadtest import perf_analyzer
from scripts.harness import ServerProcess
from tests.repository_builder import IDENTITY_DATATYPES


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(server.http_url, concurrency=4)
    yield triton
    triton.close()


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        yield triton


def tensor(name: str, array: np.ndarray, datatype: str, binary: bool) -> httpclient.InferInput:
    item = httpclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array, binary_data=binary)
    return item


def sample(datatype: str, json_safe: bool) -> np.ndarray:
    """A [2, 3] array of each type's awkward values; JSON has no NaN or infinity, so ``json_safe`` leaves them out."""
    if datatype == "BYTES":
        rows = [["", "héllo", "日本語"], ["a" * 300, "nul\x00inside", "🎉"]]
        return np.array([[s.encode("utf-8") for s in row] for row in rows], dtype=np.object_)
    if datatype == "BOOL":
        return np.array([[True, False, True], [False, False, True]])
    dtype = triton_to_np_dtype(datatype)
    if np.issubdtype(dtype, np.integer):
        info = np.iinfo(dtype)
        return np.array([[info.min, 0, info.max], [1, 2, 3]], dtype=dtype)
    finfo = np.finfo(dtype)
    last = [1.5, -2.25] if json_safe else [np.inf, np.nan]
    return np.array([[finfo.min, -0.0, finfo.max], [finfo.smallest_subnormal, *last]], dtype=dtype)


def as_bytes(array: np.ndarray) -> np.ndarray:
    """BYTES outputs read from JSON are str, from binary data bytes: compare them as bytes."""
    return np.vectorize(lambda s: s if isinstance(s, bytes) else s.encode("utf-8"), otypes=[object])(array)


# ---- health and metadata -------------------------------------------------------------------


def test_server_is_live_and_ready(client: httpclient.InferenceServerClient) -> None:
    assert client.is_server_live() is True
    assert client.is_server_ready() is True


@pytest.mark.parametrize(("model", "version"), [("simple", ""), ("simple", "1"), ("versioned", "2"), ("versioned", "")])
def test_model_is_ready(client: httpclient.InferenceServerClient, model: str, version: str) -> None:
    assert client.is_model_ready(model, version) is True


def test_server_metadata(client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata["name"] == "ortserve"
    assert metadata["version"] == ortserve.__version__
    assert {"binary_tensor_data", "model_configuration", "model_repository", "statistics", "parameters"} <= set(metadata["extensions"])
    assert metadata["extensions"] == list(grpc_client.get_server_metadata().extensions)


def test_model_metadata_of_simple(client: httpclient.InferenceServerClient) -> None:
    tensor_shape = [-1, 16]
    assert client.get_model_metadata("simple") == {
        "name": "simple",
        "versions": ["1"],
        "platform": "onnxruntime_onnx",
        "inputs": [{"name": f"INPUT{i}", "datatype": "INT32", "shape": tensor_shape} for i in range(2)],
        "outputs": [{"name": f"OUTPUT{i}", "datatype": "INT32", "shape": tensor_shape} for i in range(2)],
    }


@pytest.mark.parametrize(
    ("model", "version"), [("versioned", ""), ("versioned", "3"), ("mlp", ""), ("scalar_scale", "1"), ("identity_bytes", "")]
)
def test_model_metadata_matches_grpc(
    client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient, model: str, version: str
) -> None:
    http = client.get_model_metadata(model, version)
    grpc = grpc_client.get_model_metadata(model, version, as_json=True)
    assert http["versions"] == grpc["versions"]
    assert http["platform"] == grpc["platform"]
    for kind in ("inputs", "outputs"):
        # gRPC's JSON mapping prints int64 dims as strings; HTTP sends numbers.
        assert [(t["name"], t["datatype"], [int(d) for d in t["shape"]]) for t in grpc[kind]] == [
            (t["name"], t["datatype"], t["shape"]) for t in http[kind]
        ]


def test_model_config_of_simple_keeps_the_file_config(client: httpclient.InferenceServerClient) -> None:
    config = client.get_model_config("simple", "1")
    assert config["name"] == "simple"
    assert config["platform"] == "onnxruntime_onnx"
    assert config["max_batch_size"] == 8
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["input"]] == [
        ("INPUT0", "TYPE_INT32", [16]),
        ("INPUT1", "TYPE_INT32", [16]),
    ]
    assert [(t["name"], t["data_type"], t["dims"]) for t in config["output"]] == [
        ("OUTPUT0", "TYPE_INT32", [16]),
        ("OUTPUT1", "TYPE_INT32", [16]),
    ]


def test_model_config_matches_grpc(client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient) -> None:
    http = client.get_model_config("mlp")
    grpc = grpc_client.get_model_config("mlp", as_json=True)["config"]
    assert http["max_batch_size"] == grpc["max_batch_size"] == 4
    assert [(t["name"], t["data_type"], t["dims"]) for t in http["input"]] == [("input", "TYPE_FP32", [256])]
    assert [[int(d) for d in t["dims"]] for t in grpc["input"]] == [t["dims"] for t in http["input"]]
    assert http["instance_group"][0]["kind"] == grpc["instance_group"][0]["kind"]


# ---- inference -----------------------------------------------------------------------------


@pytest.mark.parametrize("binary", [False, True], ids=["json", "binary"])
@pytest.mark.parametrize("datatype", IDENTITY_DATATYPES)
def test_identity_returns_its_input_for_every_datatype(client: httpclient.InferenceServerClient, datatype: str, binary: bool) -> None:
    data = sample(datatype, json_safe=not binary)
    outputs = [httpclient.InferRequestedOutput("OUTPUT0", binary_data=binary)]
    result = client.infer(f"identity_{datatype.lower()}", [tensor("INPUT0", data, datatype, binary)], outputs=outputs)
    output = result.get_output("OUTPUT0")
    assert output["datatype"] == datatype
    assert output["shape"] == [2, 3]
    assert ("binary_data_size" in output.get("parameters", {})) is binary
    got = result.as_numpy("OUTPUT0")
    if datatype == "BYTES":
        np.testing.assert_array_equal(as_bytes(got), data)
    else:
        assert got.dtype == data.dtype
        np.testing.assert_array_equal(got, data)


@pytest.mark.parametrize(("input_binary", "output_binary"), [(True, False), (False, True)])
def test_binary_and_json_mix_between_request_and_response(
    client: httpclient.InferenceServerClient, input_binary: bool, output_binary: bool
) -> None:
    first, second = np.arange(16, dtype=np.int32).reshape(1, 16), np.full((1, 16), 3, dtype=np.int32)
    inputs = [tensor("INPUT0", first, "INT32", input_binary), tensor("INPUT1", second, "INT32", not input_binary)]
    outputs = [
        httpclient.InferRequestedOutput("OUTPUT1", binary_data=output_binary),
        httpclient.InferRequestedOutput("OUTPUT0", binary_data=False),
    ]
    result = client.infer("simple", inputs, outputs=outputs)
    assert [o["name"] for o in result.get_response()["outputs"]] == ["OUTPUT1", "OUTPUT0"]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), first + second)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), first - second)


def test_no_outputs_named_means_all_of_them_in_binary(client: httpclient.InferenceServerClient) -> None:
    first = np.arange(32, dtype=np.int32).reshape(2, 16)
    result = client.infer("simple", [tensor("INPUT0", first, "INT32", True), tensor("INPUT1", first, "INT32", True)])
    response = result.get_response()
    assert [o["name"] for o in response["outputs"]] == ["OUTPUT0", "OUTPUT1"]
    assert all(o["parameters"]["binary_data_size"] == 2 * 16 * 4 for o in response["outputs"])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), first * 2)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.zeros_like(first))


def test_request_id_is_echoed_and_model_version_reported(client: httpclient.InferenceServerClient) -> None:
    data = np.ones((1, 4), dtype=np.float32)
    response = client.infer("versioned", [tensor("INPUT0", data, "FP32", True)], model_version="2", request_id="req-42").get_response()
    assert response["id"] == "req-42"
    assert response["model_name"] == "versioned"
    assert response["model_version"] == "2"


@pytest.mark.parametrize(("version", "added"), [("2", 200.0), ("3", 300.0), ("", 300.0)])
def test_versioned_model_serves_the_addressed_version(client: httpclient.InferenceServerClient, version: str, added: float) -> None:
    data = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = client.infer("versioned", [tensor("INPUT0", data, "FP32", False)], model_version=version)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data + added)


def test_mlp_matches_grpc(client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient) -> None:
    data = np.random.default_rng(1).standard_normal((3, 256)).astype(np.float32)
    http = client.infer("mlp", [tensor("input", data, "FP32", False)]).as_numpy("output")
    item = grpcclient.InferInput("input", [3, 256], "FP32")
    item.set_data_from_numpy(data)
    np.testing.assert_array_equal(http, grpc_client.infer("mlp", [item]).as_numpy("output"))


def test_custom_parameters_are_accepted(client: httpclient.InferenceServerClient) -> None:
    data = np.ones((1, 16), dtype=np.int32)
    inputs = [tensor("INPUT0", data, "INT32", False), tensor("INPUT1", data, "INT32", False)]
    result = client.infer("simple", inputs, parameters={"my_key": "v", "my_int": 3, "my_flag": True}, priority=1, timeout=10_000_000)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data * 2)


@pytest.mark.parametrize(
    ("request_algorithm", "response_algorithm"), [("gzip", "gzip"), ("deflate", "deflate"), (None, "gzip"), ("gzip", None)]
)
def test_compressed_request_and_response(
    client: httpclient.InferenceServerClient, request_algorithm: str | None, response_algorithm: str | None
) -> None:
    data = np.arange(4096, dtype=np.float32).reshape(4, 1024) % 7
    result = client.infer(
        "identity_fp32",
        [tensor("INPUT0", data, "FP32", True)],
        request_compression_algorithm=request_algorithm,
        response_compression_algorithm=response_algorithm,
    )
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


def test_async_infer_with_many_requests_in_flight(client: httpclient.InferenceServerClient) -> None:
    pending = []
    for index in range(16):
        data = np.full((1, 16), index, dtype=np.int32)
        inputs = [tensor("INPUT0", data, "INT32", index % 2 == 0), tensor("INPUT1", data, "INT32", True)]
        pending.append((index, client.async_infer("simple", inputs, request_id=str(index))))
    for index, request in pending:
        result = request.get_result()
        assert result.get_response()["id"] == str(index)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 16), 2 * index, dtype=np.int32))


def test_a_64_mib_binary_input_round_trips(client: httpclient.InferenceServerClient) -> None:
    data = np.random.default_rng(2).standard_normal((1, 16 * 1024 * 1024)).astype(np.float32)
    result = client.infer("identity_fp32", [tensor("INPUT0", data, "FP32", True)])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), data)


# ---- statistics, repository ----------------------------------------------------------------


def test_statistics_grow_by_exactly_what_was_sent(client: httpclient.InferenceServerClient) -> None:
    def stats() -> dict:
        (entry,) = client.get_inference_statistics("identity_int16", "1")["model_stats"]
        return entry

    before = stats()
    for _ in range(3):
        client.infer("identity_int16", [tensor("INPUT0", np.ones((2, 5), dtype=np.int16), "INT16", True)])
    after = stats()
    assert (after["name"], after["version"]) == ("identity_int16", "1")
    assert after["inference_count"] - before["inference_count"] == 6  # rows, not requests
    assert after["inference_stats"]["success"]["count"] - before["inference_stats"]["success"]["count"] == 3
    assert after["execution_count"] > before["execution_count"]
    assert after["last_inference"] >= before["last_inference"]
    assert after["last_inference"] > 0
    for phase in ("success", "queue", "compute_input", "compute_infer", "compute_output"):
        assert after["inference_stats"][phase]["ns"] > before["inference_stats"][phase]["ns"]
    assert after["inference_stats"]["cache_hit"] == {"count": 0, "ns": 0}
    sizes = {entry["batch_size"] for entry in after["batch_stats"]}
    assert sizes and all(isinstance(size, int) for size in sizes)


def test_statistics_match_grpc(client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient) -> None:
    (http,) = client.get_inference_statistics("simple", "1")["model_stats"]
    (grpc,) = grpc_client.get_inference_statistics("simple", "1", as_json=True)["model_stats"]
    # No traffic to 'simple' happens in between on this session's server within one test.
    assert int(grpc.get("inference_count", 0)) == http["inference_count"]
    assert int(grpc["inference_stats"]["success"].get("count", 0)) == http["inference_stats"]["success"]["count"]


def test_statistics_of_every_model_and_of_each_ready_version(client: httpclient.InferenceServerClient) -> None:
    names = {(s["name"], s["version"]) for s in client.get_inference_statistics()["model_stats"]}
    assert {("simple", "1"), ("mlp", "1"), ("versioned", "2"), ("versioned", "3")} <= names
    assert ("corrupt", "1") not in names
    assert [s["version"] for s in client.get_inference_statistics("versioned")["model_stats"]] == ["2", "3"]


def test_repository_index_lists_ready_and_failed_models(
    client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient
) -> None:
    entries = client.get_model_repository_index()
    index = {(m["name"], m["version"]): m for m in entries}
    assert index[("simple", "1")] == {"name": "simple", "version": "1", "state": "READY", "reason": ""}
    assert index[("corrupt", "1")]["state"] == "UNAVAILABLE"
    assert "onnx runtime error" in index[("corrupt", "1")]["reason"]
    assert {("versioned", "2"), ("versioned", "3")} <= index.keys()
    grpc = grpc_client.get_model_repository_index().models
    assert [(m["name"], m["version"], m["state"], m["reason"]) for m in entries] == [(m.name, m.version, m.state, m.reason) for m in grpc]


@pytest.mark.parametrize("call", ["load", "unload"])
def test_load_and_unload_answer_like_grpc(
    client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient, call: str
) -> None:
    """This server is not in explicit mode: both protocols refuse the same way (code and message)."""
    with pytest.raises(InferenceServerException) as http_error:
        client.load_model("simple") if call == "load" else client.unload_model("simple")
    with pytest.raises(InferenceServerException) as grpc_error:
        grpc_client.load_model("simple") if call == "load" else grpc_client.unload_model("simple")
    assert http_error.value.message() == grpc_error.value.message()
    expected_status = {"StatusCode.UNIMPLEMENTED": "501", "StatusCode.UNAVAILABLE": "503"}[grpc_error.value.status()]
    assert http_error.value.status() == expected_status


def test_shared_memory_is_refused_like_grpc(
    client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient
) -> None:
    with pytest.raises(InferenceServerException) as http_error:
        client.get_system_shared_memory_status()
    with pytest.raises(InferenceServerException) as grpc_error:
        grpc_client.get_system_shared_memory_status()
    assert http_error.value.status() == "501"
    assert http_error.value.message() == grpc_error.value.message()


# ---- perf_analyzer -------------------------------------------------------------------------


def test_perf_analyzer_over_http_on_mlp(server: ServerProcess, perf_analyzer_env: dict[str, str]) -> None:
    """Triton's perf_analyzer, unmodified, over HTTP: metadata, config, statistics and infer all satisfy it.

    ``-i http`` after the helper's ``-i grpc`` wins (the last occurrence of a flag counts).
    """
    args = [*perf_analyzer.QUICK_ARGS, "--max-trials", "8", "-i", "http", "--concurrency-range", "1:2"]
    run = perf_analyzer.run("mlp", server.http_url, args, 90.0, perf_analyzer_env)
    failure = f"{run.describe()}\n--- server log ---\n{server.log()[-4000:]}"
    assert run.returncode == 0, failure
    assert run.has_server_stats, failure
    assert [point.concurrency for point in run.points] == [1, 2], failure
    assert all(point.throughput > 0 for point in run.points), failure
