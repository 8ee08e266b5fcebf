"""Every HTTP error: its status, its ``{"error": ...}`` body and, where gRPC can make the same
mistake, the very same message as gRPC gives.

Core mistakes (unknown model, input, shape, datatype, byte size, parameters) are sent through
tritonclient.http, as binary and as JSON, and through tritonclient.grpc. Wire-format mistakes only
HTTP can make are sent byte for byte. Body limits use a second server with a 4 KiB limit. After
all of it the server must still answer.
"""

from __future__ import annotations

import gzip
import http.client
import json
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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
from tests.integration.test_http_raw import HEADER_LENGTH, Reply, call, infer
from tests.repository_builder import write_model

GRPC_TO_HTTP = {"INVALID_ARGUMENT": 400, "NOT_FOUND": 404, "UNAVAILABLE": 503, "INTERNAL": 500, "UNIMPLEMENTED": 501}
NO_ID = "[request id: <id_unknown>] "


@pytest.fixture(scope="module")
def http_client(server: ServerProcess) -> Iterator[httpclient.InferenceServerClient]:
    triton = httpclient.InferenceServerClient(server.http_url)
    yield triton
    triton.close()


@pytest.fixture(scope="module")
def grpc_client(server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(server.grpc_url) as triton:
        yield triton


def failure(call: Callable[[], object]) -> tuple[str, str]:
    """(status, message) of a tritonclient call that must fail: "400" for HTTP, "INVALID_ARGUMENT" for gRPC."""
    try:
        call()
    except InferenceServerException as error:
        return str(error.status()).removeprefix("StatusCode."), str(error.message())
    raise AssertionError("the call succeeded but should have failed")


# ---- core mistakes: HTTP (binary and JSON) and gRPC give the same status and message ------------


@dataclass(frozen=True)
class Mistake:
    model: str
    inputs: list[tuple[str, np.ndarray, str]]  # name, data, declared datatype
    status: int
    message: str
    version: str = ""
    declared_shape: list[int] | None = None  # a shape that lies about the data, for the first input
    outputs: list[str] = field(default_factory=list)
    parameters: dict[str, Any] | None = None
    request_id: str = ""
    json_too: bool = True  # False when JSON data cannot express the mistake


F32 = np.ones((1, 4), dtype=np.float32)
I32 = np.ones((1, 16), dtype=np.int32)
SIMPLE = [("INPUT0", I32, "INT32"), ("INPUT1", I32, "INT32")]

MISTAKES = {
    "unknown-model": Mistake("nope", [("INPUT0", F32, "FP32")], 404, "Request for unknown model: 'nope' is not found"),
    "unknown-version": Mistake("simple", SIMPLE, 404, "Request for unknown model: 'simple' version 7 is not found", version="7"),
    "bad-version": Mistake(
        "simple",
        SIMPLE,
        400,
        "failed to get model version from specified version string 'x' (details: a version must be a positive decimal integer)",
        version="x",
    ),
    "unknown-input": Mistake("identity_fp32", [("NOPE", F32, "FP32")], 400, "unexpected inference input 'NOPE' for model 'identity_fp32'"),
    "missing-input": Mistake(
        "simple",
        SIMPLE[:1],
        400,
        f"{NO_ID}expected 2 inputs but got 1 inputs for model 'simple'. Got input(s) ['INPUT0'], but missing required input(s) "
        "['INPUT1']. Please provide all required input(s).",
    ),
    "wrong-datatype": Mistake(
        "identity_fp32",
        [("INPUT0", np.ones((1, 4), dtype=np.int32), "INT32")],
        400,
        f"{NO_ID}inference input 'INPUT0' data-type is 'INT32', but model 'identity_fp32' expects 'FP32'",
    ),
    "wrong-shape": Mistake(
        "simple",
        [("INPUT0", np.ones((1, 15), dtype=np.int32), "INT32"), ("INPUT1", I32, "INT32")],
        400,
        f"{NO_ID}unexpected shape for input 'INPUT0' for model 'simple'. Expected [-1,16], got [1,15]. NOTE: Setting a non-zero",
    ),
    "batch-too-large": Mistake(
        "identity_fp32",
        [("INPUT0", np.ones((5, 2), dtype=np.float32), "FP32")],
        400,
        f"{NO_ID}inference request batch-size must be <= 4 for 'identity_fp32'",
    ),
    "byte-size": Mistake(
        "identity_fp32",
        [("INPUT0", np.ones((1, 3), dtype=np.float32), "FP32")],
        400,
        "[request id: r-9] input byte size mismatch for input 'INPUT0' for model 'identity_fp32'. Expected 16, got 12",
        declared_shape=[1, 4],
        request_id="r-9",
        json_too=False,
    ),
    "unknown-output": Mistake("simple", SIMPLE, 400, "unexpected inference output 'NOPE' for model 'simple'", outputs=["NOPE"]),
    "bf16": Mistake(
        "identity_fp32",
        [("INPUT0", np.ones((1, 4), dtype=np.float32), "BF16")],
        501,
        f"{NO_ID}tensor 'INPUT0' has datatype BF16, which ortserve does not support",
        json_too=False,  # tritonclient itself refuses BF16 as JSON
    ),
}


def _http_infer(client: httpclient.InferenceServerClient, case: Mistake, binary: bool) -> object:
    inputs = []
    for index, (name, data, datatype) in enumerate(case.inputs):
        item = httpclient.InferInput(name, list(data.shape), datatype)
        if datatype == "BF16":
            item._raw_data, item._parameters["binary_data_size"] = data.tobytes()[:8], 8  # tritonclient has no numpy BF16
        else:
            item.set_data_from_numpy(data, binary_data=binary)
        if index == 0 and case.declared_shape:
            item.set_shape(case.declared_shape)
        inputs.append(item)
    outputs = [httpclient.InferRequestedOutput(name) for name in case.outputs]
    return client.infer(case.model, inputs, case.version, outputs or None, case.request_id, parameters=case.parameters)


def _grpc_infer(client: grpcclient.InferenceServerClient, case: Mistake) -> object:
    inputs = []
    for index, (name, data, datatype) in enumerate(case.inputs):
        item = grpcclient.InferInput(name, list(data.shape), datatype)
        if datatype == "BF16":
            item._raw_content = data.tobytes()[:8]
        else:
            item.set_data_from_numpy(data)
        if index == 0 and case.declared_shape:
            item.set_shape(case.declared_shape)
        inputs.append(item)
    outputs = [grpcclient.InferRequestedOutput(name) for name in case.outputs]
    return client.infer(case.model, inputs, case.version, outputs or None, case.request_id, parameters=case.parameters)


@pytest.mark.parametrize("name", list(MISTAKES))
def test_core_mistake_is_refused_over_http_as_over_grpc(
    http_client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient, name: str
) -> None:
    case = MISTAKES[name]
    grpc_status, grpc_message = failure(lambda: _grpc_infer(grpc_client, case))
    assert grpc_message.startswith(case.message)
    for binary in (True, False) if case.json_too else (True,):
        status, message = failure(lambda binary=binary: _http_infer(http_client, case, binary))
        assert (int(status), message) == (case.status, grpc_message), f"binary={binary}"
        assert GRPC_TO_HTTP[grpc_status] == case.status


@pytest.mark.parametrize(
    ("call_name", "status", "message"),
    [
        ("get_model_metadata", 404, "Request for unknown model: 'nope' is not found"),
        ("get_model_config", 404, "Request for unknown model: 'nope' is not found"),
        ("get_inference_statistics", 400, "requested model 'nope' is not available"),
        ("is_model_ready", 404, "Request for unknown model: 'nope' is not found"),
    ],
)
def test_unknown_model_on_every_model_route(
    http_client: httpclient.InferenceServerClient, grpc_client: grpcclient.InferenceServerClient, call_name: str, status: int, message: str
) -> None:
    if call_name == "is_model_ready":  # tritonclient.http turns any non-200 into False: read the reply itself
        reply = call_path(http_client, "/v2/models/nope/ready")
        assert (reply.status, reply.json()) == (status, {"error": message})
        return
    http_status, http_message = failure(lambda: getattr(http_client, call_name)("nope"))
    grpc_status, grpc_message = failure(lambda: getattr(grpc_client, call_name)("nope"))
    assert (int(http_status), http_message) == (status, message) == (GRPC_TO_HTTP[grpc_status], grpc_message)


def call_path(client: httpclient.InferenceServerClient, path: str) -> Reply:
    host, port = client._parsed_url.host, client._parsed_url.port
    connection = http.client.HTTPConnection(host, port, timeout=30)
    try:
        connection.request("GET", path)
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


# ---- wire-format mistakes only HTTP can make ------------------------------------------------


def fp32_input(**fields: Any) -> dict[str, Any]:
    return {"name": "INPUT0", "shape": [1, 4], "datatype": "FP32", **fields}


def refused(reply: Reply, status: int = 400) -> str:
    assert reply.status == status, reply.body
    assert reply.headers["Content-Type"].startswith("application/json")
    body = reply.json()
    assert list(body) == ["error"]
    return body["error"]


INVALID_JSON_BODIES = {
    "malformed": (b'{"inputs": [', "failed to parse the inference request JSON: "),
    "not-an-object": (b"[1, 2]", "the inference request for model 'identity_fp32' must be a JSON object"),
    "no-inputs": (b'{"id": "a"}', "the inference request for model 'identity_fp32' must have an 'inputs' array"),
    "input-not-object": (b'{"inputs": [3]}', "input 0 of the inference request for model 'identity_fp32' must be a JSON object"),
    "no-name": (
        b'{"inputs": [{"shape": [1], "datatype": "FP32", "data": [1]}]}',
        "input 0 of the inference request for model 'identity_fp32' must have a 'name' string",
    ),
    "no-datatype": (
        b'{"inputs": [{"name": "INPUT0", "shape": [1], "data": [1]}]}',
        "input 'INPUT0' of the inference request for model 'identity_fp32' must have a 'datatype' string",
    ),
    "float-shape": (
        b'{"inputs": [{"name": "INPUT0", "shape": [1.0, 4], "datatype": "FP32", "data": [1, 2, 3, 4]}]}',
        "input 'INPUT0' for model 'identity_fp32' must have a 'shape' array of integers",
    ),
    "id-not-string": (b'{"id": 3, "inputs": []}', "the 'id' of the inference request for model 'identity_fp32' must be a string"),
    "outputs-not-array": (
        b'{"inputs": [], "outputs": {}}',
        "the 'outputs' of the inference request for model 'identity_fp32' must be an array",
    ),
}


@pytest.mark.parametrize("case", list(INVALID_JSON_BODIES))
def test_malformed_request_json(server: ServerProcess, case: str) -> None:
    body, message = INVALID_JSON_BODIES[case]
    error = refused(call(server, "POST", "/v2/models/identity_fp32/infer", body))
    assert error.startswith(message) if case == "malformed" else error == message


DATA_MISTAKES = {
    "too-few": (
        fp32_input(data=[1, 2, 3]),
        "unexpected number of elements 3 in 'data' of input 'INPUT0' for model 'identity_fp32', expecting 4 for shape [1, 4]",
    ),
    "too-many-nested": (
        fp32_input(data=[[1, 2], [3, 4], [5, 6]]),
        "unexpected number of elements 6 in 'data' of input 'INPUT0' for model 'identity_fp32', expecting 4 for shape [1, 4]",
    ),
    "ragged": (
        fp32_input(data=[[1, 2, 3], [4]]),
        "unable to parse 'data' of input 'INPUT0' for model 'identity_fp32' as FP32: its nested lists are ragged",
    ),
    "string-in-fp32": (
        fp32_input(data=[1, 2, "3", 4]),
        "unable to parse 'data' of input 'INPUT0' for model 'identity_fp32' as FP32: expected number elements",
    ),
    "null-in-fp32": (
        fp32_input(data=[1, 2, None, 4]),
        "unable to parse 'data' of input 'INPUT0' for model 'identity_fp32' as FP32: expected number elements",
    ),
    "unknown-datatype": (
        fp32_input(datatype="FP8", data=[1, 2, 3, 4]),
        # The core checks the datatype before the data is read, with Triton's words.
        "[request id: <id_unknown>] inference input 'INPUT0' data-type is 'FP8', but model 'identity_fp32' expects 'FP32'",
    ),
    "data-and-binary": (
        fp32_input(data=[1, 2, 3, 4], parameters={"binary_data_size": 16}),
        "input 'INPUT0' for model 'identity_fp32' has both 'data' and a 'binary_data_size' parameter",
    ),
    "negative-binary-size": (
        fp32_input(parameters={"binary_data_size": -1}),
        "the 'binary_data_size' of input 'INPUT0' for model 'identity_fp32' must be an integer >= 0",
    ),
    "nested-parameter": (
        fp32_input(data=[1, 2, 3, 4], parameters={"x": {"y": 1}}),
        "parameter 'x' of input 'INPUT0' for model 'identity_fp32' must be a bool, a number or a string",
    ),
}


@pytest.mark.parametrize("case", list(DATA_MISTAKES))
def test_bad_input_data(server: ServerProcess, case: str) -> None:
    entry, message = DATA_MISTAKES[case]
    assert refused(infer(server, "identity_fp32", {"inputs": [entry]})) == message


@pytest.mark.parametrize(
    ("model", "datatype", "data", "reason"),
    [
        ("identity_int32", "INT32", [1, 2.5, 3, 4], "expected integer elements"),
        ("identity_int8", "INT8", [1, 300, 3, 4], "an element is outside [-128, 127]"),
        ("identity_uint8", "UINT8", [1, -1, 3, 4], "an element is outside [0, 255]"),
        ("identity_uint64", "UINT64", [1, 2**64, 3, 4], "expected integer elements"),  # JSON parsers read it as a float
        ("identity_int64", "INT64", [1, 2**63, 3, 4], "an element is outside [-9223372036854775808, 9223372036854775807]"),
        ("identity_bool", "BOOL", [1, 0, 1, 0], "expected true or false elements"),
        ("identity_bytes", "BYTES", ["a", 2, "c", "d"], "expected string elements in regular nested lists"),
        ("identity_bytes", "BYTES", [["a", "b", "c"], ["d"]], "expected string elements in regular nested lists"),
    ],
)
def test_elements_of_the_wrong_kind(server: ServerProcess, model: str, datatype: str, data: list, reason: str) -> None:
    document = {"inputs": [{"name": "INPUT0", "shape": [1, 4], "datatype": datatype, "data": data}]}
    message = refused(infer(server, model, document))
    assert message == f"unable to parse 'data' of input 'INPUT0' for model '{model}' as {datatype}: {reason}"


def binary_request(server: ServerProcess, sizes: list[int], binary: bytes, header_length: str | None = "auto") -> Reply:
    document = {
        "inputs": [
            {"name": f"INPUT{i}", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": s}} for i, s in enumerate(sizes)
        ]
    }
    header = json.dumps(document).encode()
    headers = {} if header_length is None else {HEADER_LENGTH: str(len(header)) if header_length == "auto" else header_length}
    return call(server, "POST", "/v2/models/simple/infer", header + binary, headers)


def test_binary_sizes_that_do_not_add_up(server: ServerProcess) -> None:
    assert refused(binary_request(server, [64, 64], bytes(100))) == (
        "input 'INPUT1' for model 'simple' declares binary_data_size 64 but only 36 bytes of binary data remain"
    )
    assert refused(binary_request(server, [64, 64], bytes(132))) == (
        "unexpected additional input data for model 'simple': 4 bytes after the binary data that the inputs' "
        "binary_data_size parameters account for"
    )
    assert refused(binary_request(server, [64, 64], b"", header_length=None)) == (
        "input 'INPUT0' for model 'simple' declares binary_data_size 64 but only 0 bytes of binary data remain "
        f"(is the {HEADER_LENGTH} header missing?)"
    )


def test_bad_header_length(server: ServerProcess) -> None:
    assert refused(binary_request(server, [64, 64], bytes(128), header_length="abc")) == f"{HEADER_LENGTH} 'abc' is not an integer"
    reply = binary_request(server, [64, 64], bytes(128), header_length="100000")
    assert refused(reply).startswith(f"{HEADER_LENGTH} 100000 is outside the request body of ")
    reply = binary_request(server, [64, 64], bytes(128), header_length="-1")
    assert refused(reply).startswith(f"{HEADER_LENGTH} -1 is outside the request body of ")


def test_reserved_parameter_is_refused_over_http_as_over_grpc(server: ServerProcess) -> None:
    # Raw requests on both sides: tritonclient refuses triton_* parameters before sending.
    request = pb.ModelInferRequest(
        model_name="simple",
        inputs=[pb.ModelInferRequest.InferInputTensor(name=name, datatype="INT32", shape=[1, 16]) for name, _, _ in SIMPLE],
        raw_input_contents=[I32.tobytes()] * len(SIMPLE),
        parameters={"triton_x": pb.InferParameter(int64_param=1)},
    )
    with grpc.insecure_channel(server.grpc_url) as channel, pytest.raises(grpc.RpcError) as over_grpc:
        pb_grpc.GRPCInferenceServiceStub(channel).ModelInfer(request, timeout=10)
    assert over_grpc.value.code() == grpc.StatusCode.INVALID_ARGUMENT
    message = over_grpc.value.details()
    reserved = "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified, got 'triton_x'"
    assert message.startswith(reserved)
    inputs = [{"name": name, "shape": [1, 16], "datatype": "INT32", "data": I32.ravel().tolist()} for name, _, _ in SIMPLE]
    assert refused(infer(server, "simple", {"inputs": inputs, "parameters": {"triton_x": 1}})) == message


def test_bad_output_and_request_parameters(server: ServerProcess) -> None:
    inputs = [fp32_input(data=[1, 2, 3, 4])]
    document = {"inputs": inputs, "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": "yes"}}]}
    assert (
        refused(infer(server, "identity_fp32", document))
        == "the 'binary_data' parameter of output 'OUTPUT0' for model 'identity_fp32' must be a bool"
    )
    document = {"inputs": inputs, "parameters": {"binary_data_output": 1}}
    assert refused(infer(server, "identity_fp32", document)) == "invalid value type for 'binary_data_output' parameter, expected bool"
    document = {"inputs": inputs, "parameters": [1]}
    assert (
        refused(infer(server, "identity_fp32", document))
        == "the 'parameters' of the inference request for model 'identity_fp32' must be a JSON object"
    )
    document = {"inputs": inputs, "parameters": {"priority": "high"}}
    assert refused(infer(server, "identity_fp32", document)) == "invalid value type for 'priority' parameter, expected int64 or uint64"


def test_raw_body_mistakes(server: ServerProcess) -> None:
    raw = {HEADER_LENGTH: "0"}
    no_id = "[request id: <id_unknown>] "
    assert refused(call(server, "POST", "/v2/models/simple/infer", bytes(64), raw)) == (
        f"{no_id}Raw request must only have 1 input (found 1) to be deduced but got 2 inputs in 'simple' model configuration"
    )
    assert refused(call(server, "POST", "/v2/models/identity_fp32/infer", bytes(7), raw)) == (
        f"{no_id}input byte size mismatch for input 'INPUT0' for model 'identity_fp32'. Expected 4, got 7"
    )
    assert refused(call(server, "POST", "/v2/models/state_update/infer", bytes(8), raw)) == (
        f"{no_id}Raw request must only have 1 input (found 1) to be deduced but got 2 inputs in 'state_update' model configuration"
    )
    assert refused(call(server, "POST", "/v2/models/identity_bytes/infer", b"text", raw)) == (
        f"{no_id}For BYTE datatype raw input 'INPUT0', the model must have input shape [1]"
    )
    assert refused(call(server, "POST", "/v2/models/mlp/infer", bytes(1000), raw)).startswith(
        "[request id: <id_unknown>] input byte size mismatch for input 'input' for model 'mlp'. Expected 1024, got 1000"
    )
    assert refused(call(server, "POST", "/v2/models/nope/infer", bytes(8), raw), 404) == "Request for unknown model: 'nope' is not found"


def test_bytes_that_are_not_utf8(server: ServerProcess) -> None:
    body = b"\x02\x00\x00\x00\xff\xfe"
    document = {"inputs": [{"name": "INPUT0", "shape": [1, 1], "datatype": "BYTES", "parameters": {"binary_data_size": len(body)}}]}
    message = refused(infer(server, "identity_bytes", document, body))
    assert message.startswith(f"{NO_ID}input 'INPUT0' for model 'identity_bytes' holds a BYTES element that is not valid UTF-8")


def test_content_encoding_mistakes(server: ServerProcess) -> None:
    body = json.dumps({"inputs": [fp32_input(data=[1, 2, 3, 4])]}).encode()
    assert refused(call(server, "POST", "/v2/models/identity_fp32/infer", body, {"Content-Encoding": "compress"})) == (
        "unsupported Content-Encoding 'compress' (supported: gzip, deflate, identity)"
    )
    path = "/v2/models/identity_fp32/infer"
    message = refused(call(server, "POST", path, b"plain text, not gzip at all", {"Content-Encoding": "gzip"}))
    assert message == "the request body is not valid gzip data: Error -3 while decompressing data: incorrect header check"
    message = refused(call(server, "POST", path, b"\x78\x9c garbage", {"Content-Encoding": "deflate"}))
    assert message.startswith("the request body is not valid deflate data: Error -3 while decompressing data: ")
    message = refused(call(server, "POST", path, gzip.compress(body)[:-20], {"Content-Encoding": "gzip"}))
    assert message == "the request body is not valid gzip data: the compressed stream is truncated"
    message = refused(call(server, "POST", path, zlib.compress(body) + b"tail", {"Content-Encoding": "deflate"}))
    assert message == "the request body is not valid deflate data: 4 bytes follow the compressed stream"


def test_unknown_route_and_wrong_method(server: ServerProcess) -> None:
    assert refused(call(server, "GET", "/v2/nope"), 404) == "Not Found: GET /v2/nope"
    reply = call(server, "GET", "/v2/models/simple/infer")
    assert refused(reply, 405) == "Method Not Allowed: GET /v2/models/simple/infer"
    assert reply.headers["Allow"] == "POST"


# ---- repository and extension routes --------------------------------------------------------


def test_repository_request_mistakes(server: ServerProcess) -> None:
    assert (
        refused(call(server, "POST", "/v2/repository/index", b'{"ready": "yes"}'))
        == "the 'ready' field of the repository index request must be a bool"
    )
    assert refused(call(server, "POST", "/v2/repository/index", b"[]")) == "the repository index request must be a JSON object"
    assert refused(call(server, "POST", "/v2/repository/index", b"{")).startswith("failed to parse the repository index request JSON: ")
    load = "/v2/repository/models/simple/load"
    assert refused(call(server, "POST", load, b'{"parameters": {"file:1/model.onnx": "not base64!"}}')).startswith(
        "load parameter 'file:1/model.onnx' is not valid base64: "
    )
    assert refused(call(server, "POST", load, b'{"parameters": {"config": {"name": "x"}}}')) == (
        "invalid value type for load parameter 'config', expected a string holding the config as JSON"
    )
    assert refused(call(server, "POST", load, b'{"parameters": {"colour": "red"}}')) == ("unrecognized load parameter 'colour'.")
    unload = "/v2/repository/models/simple/unload"
    assert refused(call(server, "POST", unload, b'{"parameters": {"unload_dependents": "yes"}}')) == (
        "unload parameter 'unload_dependents' must be a bool"
    )


SHM_DISABLED = "system shared memory is disabled on this server: start ortserve with --allow-client-shm=true to use it"
CUDA_SHARED_MEMORY = (
    "CUDA shared memory is not supported by ortserve (it has not been built and tested on a GPU); "
    "use system shared memory or send tensors in the request"
)


@pytest.mark.parametrize(
    ("method", "path", "message"),
    [
        # Without --allow-client-shm (the default).
        ("GET", "/v2/systemsharedmemory/status", SHM_DISABLED),
        ("POST", "/v2/systemsharedmemory/unregister", SHM_DISABLED),
        ("POST", "/v2/cudasharedmemory/region/r/register", CUDA_SHARED_MEMORY),
        ("GET", "/v2/logging", "the logging extension is not supported by ortserve"),
    ],
)
def test_unimplemented_extensions_answer_501(server: ServerProcess, method: str, path: str, message: str) -> None:
    assert refused(call(server, method, path), 501) == message


# ---- body size limit ------------------------------------------------------------------------

LIMIT = 4096


@pytest.fixture(scope="module")
def small_limit_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("limit-repo")
    write_model(repository, "identity_fp32", onnx_models.identity("FP32", ["batch", "n"]))
    log = tmp_path_factory.mktemp("logs") / "limit.log"
    with ServerProcess([Path(repository)], ["--http-max-input-bytes", str(LIMIT)], log_path=log) as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


def fp32_body(count: int) -> bytes:
    header = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [1, count], "datatype": "FP32", "parameters": {"binary_data_size": 4 * count}}]}
    )
    return header.encode() + bytes(4 * count)


def test_a_body_at_the_limit_is_served(small_limit_server: ServerProcess) -> None:
    body = fp32_body(950)
    body = body.replace(b'"shape"', b" " * (LIMIT - len(body)) + b'"shape"', 1)  # pad the JSON to exactly the limit
    assert len(body) == LIMIT
    length = str(body.index(b"}]}") + 3)
    reply = call(small_limit_server, "POST", "/v2/models/identity_fp32/infer", body, {HEADER_LENGTH: length})
    assert reply.status == 200, reply.body


def test_a_declared_body_over_the_limit_is_413(small_limit_server: ServerProcess) -> None:
    body = fp32_body(1100)
    reply = call(small_limit_server, "POST", "/v2/models/identity_fp32/infer", body, {HEADER_LENGTH: str(len(body) - 4400)})
    assert refused(reply, 413) == f"request body of {len(body)} bytes exceeds the server's limit of {LIMIT} bytes (--http-max-input-bytes)"


def test_a_chunked_body_over_the_limit_is_413(small_limit_server: ServerProcess) -> None:
    connection = http.client.HTTPConnection("127.0.0.1", small_limit_server.http_port, timeout=30)
    try:
        chunks = iter([b"{" + b" " * 3000, b" " * 3000, b"}"])
        connection.request("POST", "/v2/models/identity_fp32/infer", body=chunks, encode_chunked=True)
        response = connection.getresponse()
        reply = Reply(response.status, response.headers, response.read())
    finally:
        connection.close()
    assert refused(reply, 413) == f"request body exceeds the server's limit of {LIMIT} bytes (--http-max-input-bytes)"


def test_a_compressed_body_that_expands_past_the_limit_is_413(small_limit_server: ServerProcess) -> None:
    bomb = gzip.compress(b"{" + b" " * 1_000_000 + b"}")
    assert len(bomb) < LIMIT
    reply = call(small_limit_server, "POST", "/v2/models/identity_fp32/infer", bomb, {"Content-Encoding": "gzip"})
    assert refused(reply, 413) == f"decoded request body exceeds the server's limit of {LIMIT} bytes (--http-max-input-bytes)"
    assert call(small_limit_server, "GET", "/v2/health/live").status == 200


# ---- and the server is still there ----------------------------------------------------------


def test_server_still_answers_after_every_mistake(server: ServerProcess, http_client: httpclient.InferenceServerClient) -> None:
    assert http_client.is_server_live()
    item = httpclient.InferInput("INPUT0", [1, 4], "FP32")
    item.set_data_from_numpy(F32)
    np.testing.assert_array_equal(http_client.infer("identity_fp32", [item]).as_numpy("OUTPUT0"), F32)
    assert "Traceback" not in server.log()
