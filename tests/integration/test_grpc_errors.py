"""Every error of reference section 6 that applies, with its gRPC code and Triton's message.

Triton's core prefixes many messages with ``[request id: <id>] ``; the cases compare the message
after that prefix (exactly, or by its start where Triton appends details), and one test pins the
prefix itself. After every error the same server must still answer a good request.
"""

from __future__ import annotations

import base64
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass

import grpc
import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from scripts.harness import ServerProcess
from server.proto import grpc_service_pb2 as pb
from server.proto import grpc_service_pb2_grpc as pb_grpc

MAX_MESSAGE_BYTES = 2**31 - 1
REQUEST_ID_PREFIX = re.compile(r"^\[request id: [^\]]*\] ")
InputTensor = pb.ModelInferRequest.InferInputTensor


@dataclass(frozen=True)
class Clients:
    triton: grpcclient.InferenceServerClient
    stub: pb_grpc.GRPCInferenceServiceStub


@pytest.fixture(scope="module")
def clients(server: ServerProcess) -> Iterator[Clients]:
    options = [("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)]
    with grpcclient.InferenceServerClient(server.grpc_url) as triton, grpc.insecure_channel(server.grpc_url, options=options) as channel:
        yield Clients(triton, pb_grpc.GRPCInferenceServiceStub(channel))


def failure(call: Callable[[], object]) -> tuple[str, str]:
    """(gRPC code name, message) of a call that must fail, from tritonclient or a raw stub."""
    try:
        call()
    except InferenceServerException as error:
        return str(error.status()).removeprefix("StatusCode."), str(error.message())
    except grpc.RpcError as error:
        return error.code().name, error.details()  # type: ignore[attr-defined]
    raise AssertionError("the call succeeded but should have failed")


def tensor(name: str, array: np.ndarray, datatype: str, shape: list[int] | None = None) -> grpcclient.InferInput:
    """An input whose declared shape may lie about its data (``shape``), to reach server checks."""
    item = grpcclient.InferInput(name, list(array.shape), datatype)
    item.set_data_from_numpy(array)
    if shape is not None:
        item.set_shape(shape)
    return item


def ints(rows: int = 1, cols: int = 16) -> np.ndarray:
    return np.arange(rows * cols, dtype=np.int32).reshape(rows, cols)


def simple(first: np.ndarray | None = None, second: np.ndarray | None = None) -> list[grpcclient.InferInput]:
    return [tensor("INPUT0", ints() if first is None else first, "INT32"), tensor("INPUT1", ints() if second is None else second, "INT32")]


def raw_simple(parameters: dict[str, pb.InferParameter] | None = None, raw_entries: int = 2) -> pb.ModelInferRequest:
    """simple's two INT32 [1,16] inputs with ``raw_entries`` raw_input_contents entries."""
    return pb.ModelInferRequest(
        model_name="simple",
        inputs=[InputTensor(name=n, datatype="INT32", shape=[1, 16]) for n in ("INPUT0", "INPUT1")],
        raw_input_contents=[ints().tobytes()] * raw_entries,
        parameters=parameters,
    )


def assert_still_serving(clients: Clients) -> None:
    result = clients.triton.infer("simple", simple())
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), ints() * 2)


# ---- ModelInfer --------------------------------------------------------------------------------

Call = Callable[[Clients], object]
SHAPE_NOTE = "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension"


@dataclass(frozen=True)
class Case:
    id: str
    call: Call
    code: str
    message: str
    # "exact": equal after the request-id prefix; "start": Triton appends details after it.
    match: str = "exact"


def _contents_and_raw(c: Clients) -> object:
    request = raw_simple()
    request.inputs[0].contents.int_contents.extend(range(16))
    return c.stub.ModelInfer(request, timeout=10)


def _bytes_count_mismatch(c: Clients) -> object:
    three = b"".join(len(s).to_bytes(4, "little") + s for s in (b"a", b"b", b"c"))
    request = pb.ModelInferRequest(
        model_name="identity_bytes", inputs=[InputTensor(name="INPUT0", datatype="BYTES", shape=[1, 2])], raw_input_contents=[three]
    )
    return c.stub.ModelInfer(request, timeout=10)


def _typed_count_mismatch(c: Clients) -> object:
    contents = pb.InferTensorContents(fp32_contents=[1.0, 2.0])
    request = pb.ModelInferRequest(
        model_name="identity_fp32", inputs=[InputTensor(name="INPUT0", datatype="FP32", shape=[1, 3], contents=contents)]
    )
    return c.stub.ModelInfer(request, timeout=10)


def _typed_out_of_range(c: Clients) -> object:
    contents = pb.InferTensorContents(int_contents=[300, -1])
    request = pb.ModelInferRequest(
        model_name="identity_int8", inputs=[InputTensor(name="INPUT0", datatype="INT8", shape=[1, 2], contents=contents)]
    )
    return c.stub.ModelInfer(request, timeout=10)


def _bf16(c: Clients) -> object:
    # A raw request: tritonclient wants ml_dtypes.bfloat16 arrays for BF16; the server refuses BF16 whatever the bytes.
    request = pb.ModelInferRequest(
        model_name="versioned", inputs=[InputTensor(name="INPUT0", datatype="BF16", shape=[1, 4])], raw_input_contents=[bytes(8)]
    )
    return c.stub.ModelInfer(request, timeout=10)


SHM_DISABLED = "system shared memory is disabled on this server: start ortserve with --allow-client-shm=true to use it"


def _shared_memory_input(c: Clients) -> object:
    inputs = simple()
    inputs[0].set_shared_memory("region", 64)
    return c.triton.infer("simple", inputs)


def _not_utf8(c: Clients) -> object:
    return c.triton.infer("identity_bytes", [tensor("INPUT0", np.array([[b"ok", b"\xff\xfe"]], dtype=np.object_), "BYTES")])


INFER_CASES = [
    Case(
        "unknown-model",
        lambda c: c.triton.infer("no_such_model", simple()),
        "NOT_FOUND",
        "Request for unknown model: 'no_such_model' is not found",
    ),
    Case(
        "unknown-version",
        lambda c: c.triton.infer("simple", simple(), model_version="7"),
        "NOT_FOUND",
        "Request for unknown model: 'simple' version 7 is not found",
    ),
    Case(
        "version-excluded-by-policy",
        lambda c: c.triton.infer("versioned", [tensor("INPUT0", np.zeros((1, 4), np.float32), "FP32")], model_version="1"),
        "NOT_FOUND",
        "Request for unknown model: 'versioned' version 1 is not found",
    ),
    Case(
        "unready-version",
        lambda c: c.triton.infer("corrupt", simple(), model_version="1"),
        "UNAVAILABLE",
        "Request for unknown model: 'corrupt' version 1 is not at ready state",
    ),
    Case(
        "unready-version-contradicting-config",
        lambda c: c.triton.infer("contradicting", simple(), model_version="1"),
        "UNAVAILABLE",
        "Request for unknown model: 'contradicting' version 1 is not at ready state",
    ),
    Case(
        "no-ready-version",
        lambda c: c.triton.infer("corrupt", simple()),
        "NOT_FOUND",
        "Request for unknown model: 'corrupt' has no available versions",
    ),
    Case(
        "bad-version-string",
        lambda c: c.triton.infer("simple", simple(), model_version="x"),
        "INVALID_ARGUMENT",
        "failed to get model version from specified version string 'x'",
        "start",
    ),
    Case(
        "zero-version-string",
        lambda c: c.triton.infer("simple", simple(), model_version="0"),
        "INVALID_ARGUMENT",
        "failed to get model version from specified version string '0'",
        "start",
    ),
    Case(
        "unexpected-input",
        lambda c: c.triton.infer("simple", [*simple(), tensor("INPUT2", ints(), "INT32")]),
        "INVALID_ARGUMENT",
        "unexpected inference input 'INPUT2' for model 'simple'",
    ),
    Case(
        "unexpected-output",
        lambda c: c.triton.infer("simple", simple(), outputs=[grpcclient.InferRequestedOutput("OUTPUT9")]),
        "INVALID_ARGUMENT",
        "unexpected inference output 'OUTPUT9' for model 'simple'",
    ),
    Case(
        "missing-input",
        lambda c: c.triton.infer("simple", simple()[:1]),
        "INVALID_ARGUMENT",
        "expected 2 inputs but got 1 inputs for model 'simple'. Got input(s) ['INPUT0'], "
        "but missing required input(s) ['INPUT1']. Please provide all required input(s).",
    ),
    Case(
        "wrong-datatype",
        lambda c: c.triton.infer("simple", [simple()[0], tensor("INPUT1", np.ones((1, 16), np.float32), "FP32")]),
        "INVALID_ARGUMENT",
        "inference input 'INPUT1' data-type is 'FP32', but model 'simple' expects 'INT32'",
    ),
    Case(
        "wrong-shape-batching",
        lambda c: c.triton.infer("simple", simple(ints(1, 15), ints(1, 15))),
        "INVALID_ARGUMENT",
        f"unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], got [1,15]. {SHAPE_NOTE}",
        "start",
    ),
    Case(
        "wrong-shape-non-batching",
        lambda c: c.triton.infer(
            "state_update",
            [tensor("state", np.zeros((2, 3, 128), np.float32), "FP32"), tensor("x", np.zeros((3, 64), np.float32), "FP32")],
        ),
        "INVALID_ARGUMENT",
        "unexpected shape for input 'x' for model 'state_update'. Expected [-1,128], got [3,64]. ",
    ),
    Case(
        "no-shape",
        lambda c: c.triton.infer("simple", [tensor("INPUT0", ints(), "INT32", shape=[]), simple()[1]]),
        "INVALID_ARGUMENT",
        "input 'INPUT0' has no shape but model requires batch dimension for 'simple'",
    ),
    Case(
        "batch-mismatch",
        lambda c: c.triton.infer("simple", simple(ints(1), ints(2))),
        "INVALID_ARGUMENT",
        "input 'INPUT1' batch size does not match other inputs for 'simple'",
    ),
    Case(
        "batch-over-max",
        lambda c: c.triton.infer("simple", simple(ints(9), ints(9))),
        "INVALID_ARGUMENT",
        "inference request batch-size must be <= 8 for 'simple'",
    ),
    Case(
        "raw-byte-size",
        lambda c: c.triton.infer("simple", [tensor("INPUT0", ints(1, 12), "INT32", shape=[1, 16]), simple()[1]]),
        "INVALID_ARGUMENT",
        "input byte size mismatch for input 'INPUT0' for model 'simple'. Expected 64, got 48",
    ),
    Case(
        "bytes-element-count",
        _bytes_count_mismatch,
        "INVALID_ARGUMENT",
        "unexpected number of string elements 3 for inference input 'INPUT0' for model 'identity_bytes', expecting 2",
    ),
    Case(
        "contents-and-raw",
        _contents_and_raw,
        "INVALID_ARGUMENT",
        "contents field must not be specified when using raw_input_contents for 'INPUT0' for model 'simple'",
    ),
    Case(
        "typed-contents-count",
        _typed_count_mismatch,
        "INVALID_ARGUMENT",
        "unexpected number of elements 2 in contents of input 'INPUT0' for model 'identity_fp32', expecting 3",
        "start",
    ),
    Case(
        "typed-contents-out-of-range",
        _typed_out_of_range,
        "INVALID_ARGUMENT",
        "input 'INPUT0' for model 'identity_int8': a value in int_contents is out of range for datatype 'INT8'",
    ),
    Case(
        "raw-entry-count",
        lambda c: c.stub.ModelInfer(raw_simple(raw_entries=1), timeout=10),
        "INVALID_ARGUMENT",
        "expected 2 raw_input_contents entries (one per input) but got 1 for model 'simple'",
    ),
    Case(
        "reserved-triton-parameter",
        # A raw request: tritonclient refuses reserved keys before sending.
        lambda c: c.stub.ModelInfer(raw_simple(parameters={"triton_foo": pb.InferParameter(int64_param=1)}), timeout=10),
        "INVALID_ARGUMENT",
        "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified",
        "start",
    ),
    Case(
        "priority-as-string",
        lambda c: c.stub.ModelInfer(raw_simple(parameters={"priority": pb.InferParameter(string_param="high")}), timeout=10),
        "INVALID_ARGUMENT",
        "invalid value type for 'priority' parameter",
        "start",
    ),
    Case(
        "negative-priority",
        lambda c: c.stub.ModelInfer(raw_simple(parameters={"priority": pb.InferParameter(int64_param=-1)}), timeout=10),
        "INVALID_ARGUMENT",
        "invalid value for 'priority' parameter",
        "start",
    ),
    Case(
        "timeout-as-string",
        lambda c: c.stub.ModelInfer(raw_simple(parameters={"timeout": pb.InferParameter(string_param="soon")}), timeout=10),
        "INVALID_ARGUMENT",
        "invalid value type for 'timeout' parameter",
        "start",
    ),
    Case(
        "bf16-refused",
        _bf16,
        "UNIMPLEMENTED",
        "tensor 'INPUT0' has datatype BF16, which ortserve does not support",
        "start",
    ),
    Case(
        "bytes-not-utf8",
        _not_utf8,
        "INVALID_ARGUMENT",
        "input 'INPUT0' for model 'identity_bytes' holds a BYTES element that is not valid UTF-8",
        "start",
    ),
    Case(
        "shared-memory-input-while-disabled",
        _shared_memory_input,
        "UNIMPLEMENTED",
        SHM_DISABLED,
    ),
]


@pytest.mark.parametrize("case", INFER_CASES, ids=[case.id for case in INFER_CASES])
def test_infer_error(clients: Clients, case: Case) -> None:
    code, message = failure(lambda: case.call(clients))
    assert code == case.code, message
    message = REQUEST_ID_PREFIX.sub("", message, count=1)
    if case.match == "exact":
        assert message == case.message
    else:
        assert message.startswith(case.message), message
    assert_still_serving(clients)


def test_validation_errors_carry_the_request_id(clients: Clients) -> None:
    code, message = failure(lambda: clients.triton.infer("simple", simple()[:1], request_id="req-17"))
    assert code == "INVALID_ARGUMENT"
    assert message.startswith("[request id: req-17] expected 2 inputs but got 1 inputs for model 'simple'.")
    _, anonymous = failure(lambda: clients.triton.infer("simple", simple()[:1]))
    assert anonymous.startswith("[request id: <id_unknown>] expected 2 inputs")


def test_unknown_tensor_names_are_refused_without_the_request_id(clients: Clients) -> None:
    # Triton words its model lookups (unknown input or output) without the request-id prefix.
    unknown_output = [grpcclient.InferRequestedOutput("OUTPUT9")]
    _, message = failure(lambda: clients.triton.infer("simple", simple(), outputs=unknown_output, request_id="req-18"))
    assert message == "unexpected inference output 'OUTPUT9' for model 'simple'"
    _, message = failure(lambda: clients.triton.infer("simple", [*simple(), tensor("INPUT2", ints(), "INT32")], request_id="req-18"))
    assert message == "unexpected inference input 'INPUT2' for model 'simple'"


def test_bf16_message_says_what_to_use_instead(clients: Clients) -> None:
    _, message = failure(lambda: _bf16(clients))
    assert "FP16 or FP32" in message


# ---- the other model RPCs ----------------------------------------------------------------------

MODEL_RPCS: dict[str, Callable[[grpcclient.InferenceServerClient, str, str], object]] = {
    "ModelReady": lambda t, m, v: t.is_model_ready(m, v),
    "ModelMetadata": lambda t, m, v: t.get_model_metadata(m, v),
    "ModelConfig": lambda t, m, v: t.get_model_config(m, v),
    "ModelStatistics": lambda t, m, v: t.get_inference_statistics(m, v),
}
LOOKUPS = [
    ("unknown-model", "no_such_model", "", "NOT_FOUND", "Request for unknown model: 'no_such_model' is not found"),
    ("unknown-version", "simple", "9", "NOT_FOUND", "Request for unknown model: 'simple' version 9 is not found"),
    ("unready-version", "corrupt", "1", "UNAVAILABLE", "Request for unknown model: 'corrupt' version 1 is not at ready state"),
    ("no-ready-version", "corrupt", "", "NOT_FOUND", "Request for unknown model: 'corrupt' has no available versions"),
]


@pytest.mark.parametrize("rpc", ["ModelMetadata", "ModelConfig"])
@pytest.mark.parametrize(("model", "version", "code", "expected"), [pytest.param(*row[1:], id=row[0]) for row in LOOKUPS])
def test_model_lookup_error(clients: Clients, rpc: str, model: str, version: str, code: str, expected: str) -> None:
    assert failure(lambda: MODEL_RPCS[rpc](clients.triton, model, version)) == (code, expected)


STATISTICS_LOOKUPS = [
    ("unknown-model", "no_such_model", "", "requested model 'no_such_model' is not available"),
    ("unknown-version", "simple", "9", "requested model version is not available for model 'simple'"),
    ("unready-version", "corrupt", "1", "requested model 'corrupt' is not available"),
    ("no-ready-version", "corrupt", "", "requested model 'corrupt' is not available"),
]


@pytest.mark.parametrize(("model", "version", "expected"), [pytest.param(*row[1:], id=row[0]) for row in STATISTICS_LOOKUPS])
def test_statistics_of_an_unavailable_model_or_version(clients: Clients, model: str, version: str, expected: str) -> None:
    assert failure(lambda: clients.triton.get_inference_statistics(model, version)) == ("INVALID_ARGUMENT", expected)


@pytest.mark.parametrize(("model", "version"), [pytest.param(*row[1:3], id=row[0]) for row in LOOKUPS])
def test_model_ready_answers_false_where_other_rpcs_fail_the_lookup(clients: Clients, model: str, version: str) -> None:
    # Triton 2.41: ModelReady is OK with ready=false for an unknown model or an unready version.
    response = clients.stub.ModelReady(pb.ModelReadyRequest(name=model, version=version), timeout=10)
    assert response.ready is False
    assert clients.triton.is_model_ready(model, version) is False


@pytest.mark.parametrize("rpc", ["ModelReady", "ModelMetadata", "ModelConfig"])
def test_model_rpcs_refuse_a_bad_version_string(clients: Clients, rpc: str) -> None:
    code, message = failure(lambda: MODEL_RPCS[rpc](clients.triton, "simple", "v1"))
    assert code == "INVALID_ARGUMENT"
    assert message.startswith("failed to get model version from specified version string 'v1'")


# ---- RPCs ortserve does not implement ----------------------------------------------------------

CUDA_SHARED_MEMORY = (
    "CUDA shared memory is not supported by ortserve (it has not been built and tested on a GPU); "
    "use system shared memory or send tensors in the request"
)
UNIMPLEMENTED_RPCS: list[tuple[str, Callable[[grpcclient.InferenceServerClient], object], str]] = [
    # This server runs without --allow-client-shm (the default).
    ("SystemSharedMemoryStatus", lambda t: t.get_system_shared_memory_status(), SHM_DISABLED),
    ("SystemSharedMemoryRegister", lambda t: t.register_system_shared_memory("region", "/key", 64), SHM_DISABLED),
    ("SystemSharedMemoryUnregister", lambda t: t.unregister_system_shared_memory(), SHM_DISABLED),
    # tritonclient base64-decodes the handle before sending it.
    ("CudaSharedMemoryRegister", lambda t: t.register_cuda_shared_memory("region", base64.b64encode(b"handle"), 0, 64), CUDA_SHARED_MEMORY),
    ("LogSettings-get", lambda t: t.get_log_settings(), "the logging extension is not supported by ortserve"),
    ("LogSettings-update", lambda t: t.update_log_settings({"log_verbose_level": 1}), "the logging extension is not supported by ortserve"),
]


def test_cuda_shared_memory_has_no_regions_to_show_or_unregister(clients: Clients) -> None:
    """perf_analyzer --shared-memory system unregisters every CUDA region first: that must succeed."""
    clients.triton.unregister_cuda_shared_memory()
    assert list(clients.triton.get_cuda_shared_memory_status().regions) == []
    assert failure(lambda: clients.triton.get_cuda_shared_memory_status("r")) == (
        "NOT_FOUND",
        "Unable to find cuda shared memory region: 'r'",
    )


@pytest.mark.parametrize(("call", "expected"), [pytest.param(call, msg, id=rpc) for rpc, call, msg in UNIMPLEMENTED_RPCS])
def test_unimplemented_rpc(clients: Clients, call: Callable[[grpcclient.InferenceServerClient], object], expected: str) -> None:
    assert failure(lambda: call(clients.triton)) == ("UNIMPLEMENTED", expected)
    assert_still_serving(clients)


@pytest.mark.parametrize(
    "call", [lambda t: t.load_model("simple"), lambda t: t.unload_model("simple")], ids=["RepositoryModelLoad", "RepositoryModelUnload"]
)
def test_load_and_unload_are_refused_outside_explicit_mode(
    clients: Clients, call: Callable[[grpcclient.InferenceServerClient], object]
) -> None:
    code, message = failure(lambda: call(clients.triton))
    assert code == "UNAVAILABLE"
    assert message.startswith("explicit model load / unload is not allowed"), message
    assert clients.triton.is_model_ready("simple")
    assert_still_serving(clients)


def test_statistics_without_a_model_name_ignore_the_version(clients: Clients) -> None:
    # Triton 2.41 answers with every model's statistics when no name is given, version or not.
    every = clients.stub.ModelStatistics(pb.ModelStatisticsRequest(name=""), timeout=10)
    with_version = clients.stub.ModelStatistics(pb.ModelStatisticsRequest(name="", version="1"), timeout=10)
    assert {(s.name, s.version) for s in with_version.model_stats} == {(s.name, s.version) for s in every.model_stats}
