"""The gRPC API through unmodified tritonclient (and a raw stub where tritonclient cannot go).

Every test runs against the shared ``server`` fixture (the test repository), so expected values
come from tests/repository_builder.py. Statistics are checked as deltas around the requests a
test sends itself, so other tests' traffic does not matter.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator
from pathlib import Path

import grpc
import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.grpc import service_pb2
from tritonclient.utils import InferenceServerException, deserialize_bytes_tensor, triton_to_np_dtype

import server as ortserve
from scripts import onnx_models
from scripts.harness import ServerProcess
from server.proto import grpc_service_pb2 as pb
from server.proto import grpc_service_pb2_grpc as pb_grpc
from tests.repository_builder import IDENTITY_DATATYPES, write_model

MAX_MESSAGE_BYTES = 2**31 - 1
InputTensor = pb.ModelInferRequest.InferInputTensor


@pytest.fixture(scope="module")
def client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        yield triton


@pytest.fixture(scope="module")
def stub(server: ServerProcess) -> Iterator[pb_grpc.GRPCInferenceServiceStub]:
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    with grpc.insecure_channel(server.grpc_url, options=options) as channel:
        yield pb_grpc.GRPCInferenceServiceStub(channel)


def tensor(name: str, array: np.ndarray, datatype: str) -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    return item


def simple_inputs(first: np.ndarray, second: np.ndarray) -> list[grpcclient.InferInput]:
    return [tensor("INPUT0", first, "INT32"), tensor("INPUT1", second, "INT32")]


def sample(datatype: str) -> np.ndarray:
    """A [2, 3] array holding each type's awkward values (extremes, -0.0, NaN, empty/non-ASCII strings)."""
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
    return np.array([[finfo.min, -0.0, finfo.max], [finfo.smallest_subnormal, np.inf, np.nan]], dtype=dtype)


# ---- health and metadata -------------------------------------------------------------------


def test_server_is_live_and_ready(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_server_live() is True
    assert client.is_server_ready() is True


@pytest.mark.parametrize(("model", "version"), [("simple", ""), ("simple", "1"), ("versioned", "2"), ("versioned", "")])
def test_model_is_ready(client: grpcclient.InferenceServerClient, model: str, version: str) -> None:
    assert client.is_model_ready(model, version) is True


def test_model_ready_of_unknown_model_is_false(client: grpcclient.InferenceServerClient) -> None:
    assert client.is_model_ready("no_such_model") is False
    assert client.is_model_ready("simple", "9") is False


def test_server_metadata(client: grpcclient.InferenceServerClient) -> None:
    metadata = client.get_server_metadata()
    assert metadata.name == "ortserve"
    assert metadata.version == ortserve.__version__
    assert "statistics" in metadata.extensions
    assert {"model_configuration", "model_repository"} <= set(metadata.extensions)


TensorRow = tuple[str, str, list[int]]
METADATA_CASES: list[tuple[str, str, list[str], list[TensorRow], list[TensorRow]]] = [
    (
        "simple",
        "",
        ["1"],
        [("INPUT0", "INT32", [-1, 16]), ("INPUT1", "INT32", [-1, 16])],
        [("OUTPUT0", "INT32", [-1, 16]), ("OUTPUT1", "INT32", [-1, 16])],
    ),
    ("mlp", "", ["1"], [("input", "FP32", [-1, 256])], [("output", "FP32", [-1, 10])]),
    ("identity_bytes", "", ["1"], [("INPUT0", "BYTES", [-1, -1])], [("OUTPUT0", "BYTES", [-1, -1])]),
    # max_batch_size 0: no batch dim is added.
    (
        "state_update",
        "",
        ["1"],
        [("state", "FP32", [2, -1, 128]), ("x", "FP32", [-1, 128])],
        [("new_state", "FP32", [2, -1, 128])],
    ),
    ("versioned", "", ["2", "3"], [("INPUT0", "FP32", [-1, 4])], [("OUTPUT0", "FP32", [-1, 4])]),
    ("versioned", "2", ["2"], [("INPUT0", "FP32", [-1, 4])], [("OUTPUT0", "FP32", [-1, 4])]),
]


@pytest.mark.parametrize(
    ("model", "version", "versions", "inputs", "outputs"),
    [pytest.param(*case, id=f"{case[0]}-v{case[1] or 'latest'}") for case in METADATA_CASES],
)
def test_model_metadata(
    client: grpcclient.InferenceServerClient,
    model: str,
    version: str,
    versions: list[str],
    inputs: list[TensorRow],
    outputs: list[TensorRow],
) -> None:
    metadata = client.get_model_metadata(model, version)
    assert metadata.name == model
    assert list(metadata.versions) == versions
    assert metadata.platform == "onnxruntime_onnx"
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.inputs] == inputs
    assert [(t.name, t.datatype, list(t.shape)) for t in metadata.outputs] == outputs


def test_model_config_of_mlp_is_auto_completed(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("mlp").config
    assert (config.name, config.platform, config.backend) == ("mlp", "onnxruntime_onnx", "onnxruntime")
    assert config.max_batch_size == 4
    assert config.HasField("dynamic_batching")
    assert [(i.name, list(i.dims)) for i in config.input] == [("input", [256])]
    assert [(o.name, list(o.dims)) for o in config.output] == [("output", [10])]
    assert config.input[0].data_type == config.output[0].data_type == 11  # TYPE_FP32
    assert config.default_model_filename == "model.onnx"
    assert len(config.instance_group) >= 1 and config.instance_group[0].count >= 1


def test_model_config_of_state_update_keeps_max_batch_size_zero(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("state_update").config
    assert config.max_batch_size == 0
    assert not config.HasField("dynamic_batching")
    assert [(i.name, list(i.dims)) for i in config.input] == [("state", [2, -1, 128]), ("x", [-1, 128])]


def test_model_config_of_simple_keeps_the_file_config(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("simple", "1").config
    assert config.max_batch_size == 8
    assert [(i.name, list(i.dims)) for i in config.input] == [("INPUT0", [16]), ("INPUT1", [16])]


# ---- inference -----------------------------------------------------------------------------


@pytest.mark.parametrize("datatype", IDENTITY_DATATYPES)
def test_identity_returns_its_input_for_every_datatype(client: grpcclient.InferenceServerClient, datatype: str) -> None:
    sent = sample(datatype)
    result = client.infer(f"identity_{datatype.lower()}", [tensor("INPUT0", sent, datatype)])
    output = result.get_output("OUTPUT0")
    assert (output.datatype, list(output.shape)) == (datatype, [2, 3])
    received = result.as_numpy("OUTPUT0")
    if datatype == "BYTES":
        assert received.tolist() == sent.tolist()
    else:
        assert received.dtype == sent.dtype
        assert received.tobytes() == sent.tobytes()  # bit-exact: -0.0 and NaN included


def test_simple_returns_sum_and_difference(client: grpcclient.InferenceServerClient) -> None:
    first = np.arange(48, dtype=np.int32).reshape(3, 16)
    second = np.full((3, 16), 7, dtype=np.int32)
    result = client.infer("simple", simple_inputs(first, second))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), first + second)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), first - second)
    response = result.get_response()
    assert (response.model_name, response.model_version) == ("simple", "1")
    assert [o.name for o in response.outputs] == ["OUTPUT0", "OUTPUT1"]


def test_mlp_matches_onnxruntime_in_process(client: grpcclient.InferenceServerClient, test_repository: Path) -> None:
    batch = np.random.default_rng(7).standard_normal((4, 256)).astype(np.float32)
    session = ort.InferenceSession(str(test_repository / "mlp" / "1" / "model.onnx"), providers=["CPUExecutionProvider"])
    (expected,) = session.run(["output"], {"input": batch})
    result = client.infer("mlp", [tensor("input", batch, "FP32")])
    np.testing.assert_allclose(result.as_numpy("output"), expected, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    ("version", "added", "served"),
    [pytest.param("", 300.0, "3", id="latest"), pytest.param("2", 200.0, "2", id="v2"), pytest.param("3", 300.0, "3", id="v3")],
)
def test_versioned_model_serves_the_addressed_version(
    client: grpcclient.InferenceServerClient, version: str, added: float, served: str
) -> None:
    values = np.arange(8, dtype=np.float32).reshape(2, 4)
    result = client.infer("versioned", [tensor("INPUT0", values, "FP32")], model_version=version)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), values + added)
    assert result.get_response().model_version == served


@pytest.mark.parametrize("names", [["OUTPUT1"], ["OUTPUT0"], ["OUTPUT1", "OUTPUT0"]], ids=["only1", "only0", "reversed"])
def test_requested_outputs_come_back_exactly_and_in_order(client: grpcclient.InferenceServerClient, names: list[str]) -> None:
    first = np.arange(16, dtype=np.int32).reshape(1, 16)
    second = np.ones((1, 16), dtype=np.int32)
    outputs = [grpcclient.InferRequestedOutput(name) for name in names]
    result = client.infer("simple", simple_inputs(first, second), outputs=outputs)
    response = result.get_response()
    assert [o.name for o in response.outputs] == names
    assert len(response.raw_output_contents) == len(names)
    expected = {"OUTPUT0": first + second, "OUTPUT1": first - second}
    for name in names:
        np.testing.assert_array_equal(result.as_numpy(name), expected[name])
    for name in set(expected) - set(names):
        assert result.as_numpy(name) is None


def test_request_id_is_echoed(client: grpcclient.InferenceServerClient) -> None:
    ones = np.ones((1, 16), dtype=np.int32)
    result = client.infer("simple", simple_inputs(ones, ones), request_id="my-request-42")
    assert result.get_response().id == "my-request-42"


def test_custom_parameters_are_accepted(client: grpcclient.InferenceServerClient) -> None:
    ones = np.ones((1, 16), dtype=np.int32)
    # No triton_* key: tritonclient refuses reserved keys itself (the server's handling of them is
    # tests/unit/test_request_inputs.py).
    parameters = {"custom_text": "x", "custom_int": 3, "custom_flag": True}
    result = client.infer("simple", simple_inputs(ones, ones), parameters=parameters, priority=1, timeout=10_000_000)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), ones * 2)


def test_async_infer_with_many_requests_in_flight(client: grpcclient.InferenceServerClient) -> None:
    answers: queue.Queue[tuple[int, object, object]] = queue.Queue()
    count = 24
    for index in range(count):
        first = np.full((1 + index % 3, 16), index, dtype=np.int32)

        def callback(result: object, error: object, index: int = index) -> None:
            answers.put((index, result, error))

        client.async_infer("simple", simple_inputs(first, first), callback, request_id=f"async-{index}")
    received = [answers.get(timeout=30) for _ in range(count)]
    assert sorted(index for index, _, _ in received) == list(range(count))
    for index, result, error in received:
        assert error is None, error
        assert result.get_response().id == f"async-{index}"  # type: ignore[attr-defined]
        expected = np.full((1 + index % 3, 16), 2 * index, dtype=np.int32)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), expected)  # type: ignore[attr-defined]


@pytest.fixture(scope="module")
def short_delay_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A dynamic-batching model whose queue delay (100 us) is shorter than a millisecond."""
    repository = tmp_path_factory.mktemp("short_delay_repo")
    config = "max_batch_size: 8\ndynamic_batching { max_queue_delay_microseconds: 100 }\ninstance_group [ { kind: KIND_CPU, count: 1 } ]"
    write_model(repository, "add_one", onnx_models.add_constant("FP32", ["batch", 4], 1.0), config)
    with ServerProcess([repository], log_path=repository / "server.log") as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


def test_many_requests_to_a_model_with_a_sub_millisecond_queue_delay_all_succeed(short_delay_server: ServerProcess) -> None:
    answers: queue.Queue[tuple[int, object, object]] = queue.Queue()
    count = 400
    with grpcclient.InferenceServerClient(short_delay_server.grpc_url) as client:
        for index in range(count):

            def callback(result: object, error: object, index: int = index) -> None:
                answers.put((index, result, error))

            client.async_infer("add_one", [tensor("INPUT0", np.full((1, 4), index, np.float32), "FP32")], callback)
        received = [answers.get(timeout=60) for _ in range(count)]
    errors = [str(error) for _, _, error in received if error is not None]
    assert errors == []
    for index, result, _ in received:
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 4), index + 1, np.float32))  # type: ignore[attr-defined]


# ---- statistics and repository index -------------------------------------------------------


def simple_stats(client: grpcclient.InferenceServerClient) -> service_pb2.ModelStatistics:
    (stats,) = client.get_inference_statistics("simple", "1").model_stats
    return stats


def test_statistics_grow_by_exactly_what_was_sent(client: grpcclient.InferenceServerClient) -> None:
    before = simple_stats(client)
    batch_sizes = (1, 2, 3, 5)
    for rows in batch_sizes:  # one at a time, so no two requests share an execution
        ones = np.ones((rows, 16), dtype=np.int32)
        client.infer("simple", simple_inputs(ones, ones))
    with pytest.raises(InferenceServerException):
        client.infer("simple", [tensor("INPUT0", np.ones((1, 16), np.int32), "INT32")])
    after = simple_stats(client)
    assert (after.name, after.version) == ("simple", "1")
    grown = after.inference_stats
    was = before.inference_stats
    assert grown.success.count - was.success.count == len(batch_sizes)
    assert grown.queue.count - was.queue.count == len(batch_sizes)
    assert grown.queue.count == grown.success.count
    for phase in ("compute_input", "compute_infer", "compute_output"):
        assert getattr(grown, phase).count - getattr(was, phase).count == len(batch_sizes), phase
    assert grown.success.ns > was.success.ns
    assert grown.fail.count - was.fail.count == 1
    assert after.inference_count - before.inference_count == sum(batch_sizes)
    assert after.execution_count - before.execution_count == len(batch_sizes)
    assert after.last_inference > 0 and after.last_inference >= before.last_inference


def test_statistics_list_one_entry_per_ready_version(client: grpcclient.InferenceServerClient) -> None:
    stats = client.get_inference_statistics("versioned").model_stats
    assert [(s.name, s.version) for s in stats] == [("versioned", "2"), ("versioned", "3")]


def test_statistics_without_a_name_cover_every_loaded_version(client: grpcclient.InferenceServerClient) -> None:
    listed = {(s.name, s.version) for s in client.get_inference_statistics().model_stats}
    assert {("simple", "1"), ("mlp", "1"), ("versioned", "2"), ("versioned", "3")} <= listed
    assert not {name for name, _ in listed} & {"corrupt", "contradicting"}
    assert ("versioned", "1") not in listed


def test_repository_index_lists_ready_and_failed_models(client: grpcclient.InferenceServerClient) -> None:
    index = {(m.name, m.version): m for m in client.get_model_repository_index().models}
    for name in ("simple", "mlp", "state_update", "scalar_scale", *(f"identity_{t.lower()}" for t in IDENTITY_DATATYPES)):
        assert index[(name, "1")].state == "READY", name
    assert index[("versioned", "2")].state == index[("versioned", "3")].state == "READY"
    assert ("versioned", "1") not in index  # excluded by version policy latest 2
    corrupt = index[("corrupt", "1")]
    assert corrupt.state == "UNAVAILABLE"
    assert corrupt.reason.startswith("Invalid argument: onnx runtime error 7: ") and "Protobuf parsing failed" in corrupt.reason
    assert "/1/model.onnx" not in corrupt.reason and "1/model.onnx" in corrupt.reason  # no host paths
    contradicting = index[("contradicting", "1")]
    assert contradicting.state == "UNAVAILABLE"
    assert "INPUT0" in contradicting.reason and "TYPE_FP32" in contradicting.reason and "INT32" in contradicting.reason


def test_repository_index_ready_filter(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    models = stub.RepositoryIndex(pb.RepositoryIndexRequest(ready=True), timeout=10).models
    names = {m.name for m in models}
    assert {"simple", "mlp", "versioned"} <= names
    assert not names & {"corrupt", "contradicting"}
    assert all(m.state == "READY" for m in models)


# ---- the wire below tritonclient -----------------------------------------------------------

# (datatype, InferTensorContents field, values for shape [1, 3])
TYPED_CONTENTS = [
    ("BOOL", "bool_contents", [True, False, True]),
    ("INT8", "int_contents", [-128, 0, 127]),
    ("INT16", "int_contents", [-32768, 0, 32767]),
    ("INT32", "int_contents", [-(2**31), 0, 2**31 - 1]),
    ("INT64", "int64_contents", [-(2**63), 0, 2**63 - 1]),
    ("UINT8", "uint_contents", [0, 1, 255]),
    ("UINT16", "uint_contents", [0, 1, 65535]),
    ("UINT32", "uint_contents", [0, 1, 2**32 - 1]),
    ("UINT64", "uint64_contents", [0, 1, 2**64 - 1]),
    ("FP32", "fp32_contents", [-1.5, 0.0, 3.25]),
    ("FP64", "fp64_contents", [-1.5, 0.0, 1e300]),
    ("BYTES", "bytes_contents", [b"", "é".encode(), b"abc"]),
]


@pytest.mark.parametrize(("datatype", "field", "values"), TYPED_CONTENTS, ids=[c[0] for c in TYPED_CONTENTS])
def test_typed_contents_input_is_answered_in_raw_output(
    stub: pb_grpc.GRPCInferenceServiceStub, datatype: str, field: str, values: list[object]
) -> None:
    contents = pb.InferTensorContents(**{field: values})
    request = pb.ModelInferRequest(
        model_name=f"identity_{datatype.lower()}",
        id="typed",
        inputs=[InputTensor(name="INPUT0", datatype=datatype, shape=[1, 3], contents=contents)],
    )
    response = stub.ModelInfer(request, timeout=10)
    assert response.id == "typed"
    assert [(o.name, o.datatype, list(o.shape)) for o in response.outputs] == [("OUTPUT0", datatype, [1, 3])]
    assert not response.outputs[0].HasField("contents")
    (raw,) = response.raw_output_contents
    if datatype == "BYTES":
        assert deserialize_bytes_tensor(raw).tolist() == values
    else:
        assert np.frombuffer(raw, dtype=triton_to_np_dtype(datatype)).tolist() == values


def test_typed_contents_for_two_inputs(stub: pb_grpc.GRPCInferenceServiceStub) -> None:
    first = pb.InferTensorContents(int_contents=range(16))
    second = pb.InferTensorContents(int_contents=[1] * 16)
    request = pb.ModelInferRequest(
        model_name="simple",
        inputs=[
            InputTensor(name="INPUT0", datatype="INT32", shape=[1, 16], contents=first),
            InputTensor(name="INPUT1", datatype="INT32", shape=[1, 16], contents=second),
        ],
    )
    response = stub.ModelInfer(request, timeout=10)
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[0], np.int32), np.arange(16) + 1)
    np.testing.assert_array_equal(np.frombuffer(response.raw_output_contents[1], np.int32), np.arange(16) - 1)


def test_a_64_mib_input_round_trips(client: grpcclient.InferenceServerClient) -> None:
    """Larger than grpcio's 4 MiB default: both ends must use the 2^31-1 limit, as Triton does."""
    sent = np.random.default_rng(3).integers(0, 256, size=(1, 64 * 2**20), dtype=np.uint8)
    result = client.infer("identity_uint8", [tensor("INPUT0", sent, "UINT8")], client_timeout=120)
    assert np.array_equal(result.as_numpy("OUTPUT0"), sent)
