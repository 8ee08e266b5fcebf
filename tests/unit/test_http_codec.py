"""The HTTP frontend's pure parts: JSON data ⇄ numpy, request bodies (binary tensor extension and
the raw form), response rendering, Content-Encoding and Accept-Encoding, ModelConfig as JSON."""

from __future__ import annotations

import gzip
import json
import struct
import zlib
from typing import Any

import numpy as np
import pytest
from aiohttp.web import ContentCoding, HTTPRequestEntityTooLarge
from google.protobuf import text_format

from server.errors import ErrorCode, ServerError
from server.frontends.http.model_config_json import config_to_json
from server.frontends.http.repository import load_parameters
from server.frontends.http.request_codec import BinaryOutputs, header_length, parse_infer_body, parse_raw_body
from server.frontends.http.response_codec import render_response
from server.frontends.http.tensor_json import array_from_data, data_from_array
from server.frontends.http.transfer import MAX_GZIP_MEMBERS, inflate, response_coding
from server.proto import model_config_pb2 as mc
from server.types import InferOutput, InferResponse, TensorMetadata


def refusal(call: Any, code: ErrorCode = ErrorCode.INVALID_ARG) -> str:
    with pytest.raises(ServerError) as caught:
        call()
    assert caught.value.code is code
    return caught.value.message


# ---- JSON data → numpy -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "data", "dtype"),
    [
        ("BOOL", [True, False, True, True], np.bool_),
        ("UINT8", [0, 1, 254, 255], np.uint8),
        ("UINT16", [0, 1, 2, 65535], np.uint16),
        ("UINT32", [0, 1, 2, 2**32 - 1], np.uint32),
        ("UINT64", [0, 1, 2**63, 2**64 - 1], np.uint64),
        ("INT8", [-128, -1, 0, 127], np.int8),
        ("INT16", [-(2**15), -1, 0, 2**15 - 1], np.int16),
        ("INT32", [-(2**31), -1, 0, 2**31 - 1], np.int32),
        ("INT64", [-(2**63), -1, 0, 2**63 - 1], np.int64),
        ("FP16", [0.5, -2, 65504, 0], np.float16),
        ("FP32", [0.1, -2, 3, 1e30], np.float32),
        ("FP64", [0.1, -2, 3, 1e300], np.float64),
    ],
)
def test_flat_and_nested_data_of_every_numeric_type(datatype: str, data: list, dtype: type) -> None:
    expected = np.array(data, dtype=dtype).reshape(2, 2)
    for given in (data, [data[:2], data[2:]], [[data[:2]], [data[2:]]]):
        array = array_from_data(given, datatype, (2, 2), "x", "m")
        assert array.dtype == np.dtype(dtype)
        np.testing.assert_array_equal(array, expected)


def test_bytes_data_is_an_object_array_of_str() -> None:
    array = array_from_data([["a", "é"], ["", "日本"]], "BYTES", (1, 4), "x", "m")
    assert array.dtype == object
    assert array.tolist() == [["a", "é", "", "日本"]]


def test_only_the_element_count_has_to_match_the_shape() -> None:
    array = array_from_data([[1, 2], [3, 4], [5, 6]], "INT32", (2, 3), "x", "m")
    assert array.tolist() == [[1, 2, 3], [4, 5, 6]]


def test_a_bare_number_fills_a_one_element_shape() -> None:
    assert array_from_data(2.5, "FP32", (1,), "x", "m").tolist() == [2.5]
    assert array_from_data("s", "BYTES", (1,), "x", "m").tolist() == ["s"]


def test_empty_data_for_an_empty_shape() -> None:
    array = array_from_data([], "INT64", (0, 3), "x", "m")
    assert array.shape == (0, 3) and array.dtype == np.int64


def test_json_data_is_decoded_only_when_the_core_asks() -> None:
    """The core refuses a bad shape (with the words gRPC gets) before the data is looked at."""
    raw, length = body({"inputs": [{"name": "x", "shape": [-1, 2], "datatype": "FP32", "data": "not even a list"}]})
    (item,) = parse_infer_body(raw, length, "m", "").request.inputs
    assert item.array is None and item.decode is not None


def test_data_nested_past_what_numpy_builds_is_refused() -> None:
    nested: object = "x"
    for _ in range(40):
        nested = [nested]
    assert refusal(lambda: array_from_data(nested, "BYTES", (1,), "x", "m")).endswith("its lists are nested more than 32 deep")


@pytest.mark.parametrize(
    ("datatype", "data", "shape", "message"),
    [
        ("FP32", [1, 2, 3], (1, 4), "unexpected number of elements 3 in 'data' of input 'x' for model 'm', expecting 4 for shape [1, 4]"),
        ("FP32", [[1, 2], [3]], (1, 3), "unable to parse 'data' of input 'x' for model 'm' as FP32: its nested lists are ragged"),
        ("FP32", [1, "2"], (2,), "unable to parse 'data' of input 'x' for model 'm' as FP32: expected number elements"),
        ("FP64", [1, None], (2,), "unable to parse 'data' of input 'x' for model 'm' as FP64: expected number elements"),
        ("FP32", [True, False], (2,), "unable to parse 'data' of input 'x' for model 'm' as FP32: expected number elements"),
        ("INT32", [1, 2.5], (2,), "unable to parse 'data' of input 'x' for model 'm' as INT32: expected integer elements"),
        ("INT16", [1, 40000], (2,), "unable to parse 'data' of input 'x' for model 'm' as INT16: an element is outside [-32768, 32767]"),
        ("UINT32", [-1, 1], (2,), "unable to parse 'data' of input 'x' for model 'm' as UINT32: an element is outside [0, 4294967295]"),
        (
            "UINT64",
            [1, 2**64],
            (2,),
            "unable to parse 'data' of input 'x' for model 'm' as UINT64: an element is outside [0, 18446744073709551615]",
        ),
        (
            "UINT64",
            [-1, 2**64 - 1],
            (2,),
            "unable to parse 'data' of input 'x' for model 'm' as UINT64: an element is outside [0, 18446744073709551615]",
        ),
        ("BOOL", [1, 0], (2,), "unable to parse 'data' of input 'x' for model 'm' as BOOL: expected true or false elements"),
        (
            "BYTES",
            ["a", 1],
            (2,),
            "unable to parse 'data' of input 'x' for model 'm' as BYTES: expected string elements in regular nested lists",
        ),
        (
            "BYTES",
            [["a", "b"], ["c"]],
            (3,),
            "unable to parse 'data' of input 'x' for model 'm' as BYTES: expected string elements in regular nested lists",
        ),
        ("FP8", [1], (1,), "input 'x' for model 'm': datatype 'FP8' is not a known datatype"),
    ],
)
def test_bad_data(datatype: str, data: Any, shape: tuple[int, ...], message: str) -> None:
    assert refusal(lambda: array_from_data(data, datatype, shape, "x", "m")) == message


def test_bf16_data_is_unsupported() -> None:
    assert "BF16" in refusal(lambda: array_from_data([1.0], "BF16", (1,), "x", "m"), ErrorCode.UNSUPPORTED)


# ---- numpy → JSON data -----------------------------------------------------------------------


def test_output_data_is_flat_and_fp16_exact() -> None:
    assert data_from_array(np.array([[0.1, 2]], dtype=np.float16), "y").tolist() == [0.0999755859375, 2.0]
    numeric = data_from_array(np.arange(6, dtype=">i4").reshape(2, 3), "y")
    assert numeric.dtype == np.dtype("=i4") and numeric.tolist() == [0, 1, 2, 3, 4, 5]
    assert data_from_array(np.array([["a", b"b\xc3\xa9"]], dtype=object), "y") == ["a", "bé"]


def test_non_utf8_bytes_output_cannot_be_json() -> None:
    message = refusal(lambda: data_from_array(np.array([b"\xff"], dtype=object), "y"))
    assert message == "output 'y' holds BYTES that are not valid UTF-8 and cannot be sent as JSON; request it with binary_data"


# ---- request bodies --------------------------------------------------------------------------


def body(document: dict[str, Any], binary: bytes = b"") -> tuple[bytes, int | None]:
    header = json.dumps(document).encode()
    return header + binary, (len(header) if binary else None)


def test_json_request_with_id_parameters_and_outputs() -> None:
    raw, length = body(
        {
            "id": "7",
            "parameters": {"priority": 1, "binary_data_output": True, "custom": "c"},
            "inputs": [{"name": "a", "shape": [1, 2], "datatype": "INT32", "data": [1, 2], "parameters": {"p": 1.5}}],
            "outputs": [{"name": "y", "parameters": {"binary_data": False, "other": 1}}, {"name": "z"}],
        }
    )
    parsed = parse_infer_body(raw, length, "m", "2")
    request = parsed.request
    assert (request.model_name, request.model_version, request.id) == ("m", "2", "7")
    assert request.parameters == {"priority": 1, "binary_data_output": True, "custom": "c"}
    (item,) = request.inputs
    assert (item.name, item.datatype, item.shape, item.parameters, item.raw) == ("a", "INT32", (1, 2), {"p": 1.5}, None)
    assert item.array is None and item.decode is not None and item.decode().tolist() == [[1, 2]]  # decoded by the core, later
    # binary_data is HTTP's business: it is taken out of what the core sees
    assert [(o.name, o.parameters) for o in request.outputs] == [("y", {"other": 1}), ("z", {})]
    assert (parsed.binary_outputs.wants("y"), parsed.binary_outputs.wants("z")) == (False, True)


def test_binary_inputs_are_views_of_the_body_in_input_order() -> None:
    first, second = struct.pack("<4f", 1, 2, 3, 4), struct.pack("<2i", 5, 6)
    raw, length = body(
        {
            "inputs": [
                {"name": "a", "shape": [1, 4], "datatype": "FP32", "parameters": {"binary_data_size": 16}},
                {"name": "j", "shape": [1], "datatype": "INT32", "data": [9]},
                {"name": "b", "shape": [1, 2], "datatype": "INT32", "parameters": {"binary_data_size": 8}},
            ]
        },
        first + second,
    )
    a, j, b = parse_infer_body(raw, length, "m", "").request.inputs
    assert isinstance(a.raw, memoryview) and bytes(a.raw) == first and a.parameters == {}
    assert bytes(b.raw) == second
    assert j.raw is None and j.decode is not None and j.decode().tolist() == [9]


def test_zero_sized_binary_input() -> None:
    raw, _ = body({"inputs": [{"name": "a", "shape": [0, 4], "datatype": "FP32", "parameters": {"binary_data_size": 0}}]})
    (a,) = parse_infer_body(raw, len(raw), "m", "").request.inputs
    assert bytes(a.raw) == b""


def test_no_outputs_follow_binary_data_output() -> None:
    raw, length = body({"inputs": [], "parameters": {"binary_data_output": True}})
    assert parse_infer_body(raw, length, "m", "").binary_outputs.wants("anything")
    raw, length = body({"inputs": []})
    assert not parse_infer_body(raw, length, "m", "").binary_outputs.wants("anything")


@pytest.mark.parametrize(
    ("document", "binary", "message"),
    [
        (
            {"inputs": [{"name": "a", "shape": [2], "datatype": "INT32", "parameters": {"binary_data_size": 8}}]},
            b"1234",
            "input 'a' for model 'm' declares binary_data_size 8 but only 4 bytes of binary data remain",
        ),
        (
            {"inputs": [{"name": "a", "shape": [1], "datatype": "INT32", "parameters": {"binary_data_size": 4}}]},
            b"123456",
            "unexpected additional input data for model 'm': 2 bytes after the binary data that the inputs' "
            "binary_data_size parameters account for",
        ),
        (
            {"inputs": [{"name": "a", "shape": [1], "datatype": "INT32", "parameters": {"binary_data_size": True}}]},
            b"x",
            "the 'binary_data_size' of input 'a' for model 'm' must be an integer >= 0",
        ),
        (
            {"inputs": [{"name": "a", "shape": [1], "datatype": "INT32", "data": [1], "parameters": {"binary_data_size": 4}}]},
            b"1234",
            "input 'a' for model 'm' has both 'data' and a 'binary_data_size' parameter",
        ),
        (
            {"inputs": [{"name": "a", "shape": [True], "datatype": "INT32", "data": [1]}]},
            b"",
            "input 'a' for model 'm' must have a 'shape' array of integers",
        ),
        (
            {"inputs": [{"name": "a", "shape": [1], "datatype": 5, "data": [1]}]},
            b"",
            "input 'a' of the inference request for model 'm' must have a 'datatype' string",
        ),
        ({"inputs": [], "outputs": [{"parameters": {}}]}, b"", "output 0 of the inference request for model 'm' must have a 'name' string"),
        ({"inputs": [], "outputs": ["y"]}, b"", "output 0 of the inference request for model 'm' must be a JSON object"),
        (
            {"inputs": [], "parameters": {"k": [1]}},
            b"",
            "parameter 'k' of the inference request for model 'm' must be a bool, a number or a string",
        ),
        ({"inputs": {}}, b"", "the inference request for model 'm' must have an 'inputs' array"),
    ],
)
def test_malformed_requests(document: dict[str, Any], binary: bytes, message: str) -> None:
    raw, length = body(document, binary)
    assert refusal(lambda: parse_infer_body(raw, length, "m", "")) == message


def test_malformed_json_names_the_position() -> None:
    message = refusal(lambda: parse_infer_body(b'{"inputs": [}', None, "m", ""))
    assert message.startswith("failed to parse the inference request JSON: ") and "char 12" in message


@pytest.mark.parametrize(("value", "expected"), [(None, None), ("0", 0), ("10", 10), ("20", 20)])
def test_header_length(value: str | None, expected: int | None) -> None:
    assert header_length(value, 20) == expected


@pytest.mark.parametrize(
    ("value", "message"),
    [
        ("x", "Inference-Header-Content-Length 'x' is not an integer"),
        ("21", "Inference-Header-Content-Length 21 is outside the request body of 20 bytes"),
        ("-1", "Inference-Header-Content-Length -1 is outside the request body of 20 bytes"),
    ],
)
def test_bad_header_length(value: str, message: str) -> None:
    assert refusal(lambda: header_length(value, 20)) == message


# ---- the raw single-input form ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("datatype", "shape", "batching", "raw", "expected"),
    [
        ("FP32", (-1, -1), True, bytes(12), (1, 3)),
        ("FP32", (-1, 256), True, bytes(1024), (1, 256)),
        ("INT8", (2, -1), False, bytes(6), (2, 3)),
        ("INT64", (4,), False, bytes(32), (4,)),
        ("FP32", (-1, -1), True, b"", (1, 0)),
        # Triton divides without checking: a size that does not divide fails the byte-size check later.
        ("FP32", (-1, -1), True, bytes(7), (1, 1)),
    ],
)
def test_raw_body_shape(datatype: str, shape: tuple[int, ...], batching: bool, raw: bytes, expected: tuple[int, ...]) -> None:
    parsed = parse_raw_body(raw, "m", "1", (TensorMetadata("x", datatype, shape),), batching)
    (item,) = parsed.request.inputs
    assert (item.name, item.datatype, item.shape, item.raw) == ("x", datatype, expected, raw)
    assert parsed.request.model_version == "1"
    assert parsed.binary_outputs.wants("any output")


def test_raw_bytes_body_is_one_element() -> None:
    parsed = parse_raw_body("héllo".encode(), "m", "", (TensorMetadata("t", "BYTES", (-1, 1)),), True)
    (item,) = parsed.request.inputs
    assert item.shape == (1, 1) and item.array is not None and item.array.tolist() == [["héllo"]]


def test_raw_body_that_cannot_be_shaped() -> None:
    no_id = "[request id: <id_unknown>] "
    two_variable = (TensorMetadata("x", "FP32", (-1, -1, -1)),)
    assert refusal(lambda: parse_raw_body(bytes(8), "m", "", two_variable, True)) == (
        f"{no_id}The shape of the raw input 'x' can not be deduced because there are more than one variable-sized dimension"
    )
    strings = (TensorMetadata("t", "BYTES", (-1, -1)),)
    assert refusal(lambda: parse_raw_body(b"abc", "m", "", strings, True)) == (
        f"{no_id}For BYTE datatype raw input 't', the model must have input shape [1]"
    )
    two_inputs = (TensorMetadata("a", "FP32", (-1, 2)), TensorMetadata("b", "FP32", (-1, 2)))
    assert refusal(lambda: parse_raw_body(bytes(8), "m", "", two_inputs, True)) == (
        f"{no_id}Raw request must only have 1 input (found 1) to be deduced but got 2 inputs in 'm' model configuration"
    )
    assert "not valid UTF-8" in refusal(lambda: parse_raw_body(b"\xff", "m", "", (TensorMetadata("t", "BYTES", (-1, 1)),), True))


# ---- response bodies -------------------------------------------------------------------------


def response(*outputs: InferOutput, request_id: str = "") -> InferResponse:
    return InferResponse(model_name="m", model_version="1", id=request_id, outputs=list(outputs))


Y = InferOutput("y", "FP32", (1, 2), np.array([[1.5, 2]], dtype=np.float32))
S = InferOutput("s", "BYTES", (2,), np.array(["a", "é"], dtype=object))
B = InferOutput("b", "BOOL", (3,), np.array([True, False, True]))


def test_json_response() -> None:
    rendered = render_response(response(Y, S, request_id="r"), BinaryOutputs())
    assert rendered.json_length is None
    assert json.loads(rendered.body) == {
        "model_name": "m",
        "model_version": "1",
        "id": "r",
        "outputs": [
            {"name": "y", "datatype": "FP32", "shape": [1, 2], "data": [1.5, 2.0]},
            {"name": "s", "datatype": "BYTES", "shape": [2], "data": ["a", "é"]},
        ],
    }


def test_binary_response_appends_outputs_after_the_header_in_order() -> None:
    rendered = render_response(response(Y, S, B), BinaryOutputs(default=True, explicit={"s": True, "y": True, "b": True}))
    header = json.loads(rendered.body[: rendered.json_length])
    assert "id" not in header
    sizes = [o["parameters"]["binary_data_size"] for o in header["outputs"]]
    assert sizes == [8, 4 + 1 + 4 + 2, 3]
    assert all("data" not in o for o in header["outputs"])
    tail = rendered.body[rendered.json_length :]
    assert tail == struct.pack("<2f", 1.5, 2) + struct.pack("<I", 1) + b"a" + struct.pack("<I", 2) + "é".encode() + b"\x01\x00\x01"


def test_per_output_choice_overrides_the_default() -> None:
    rendered = render_response(response(Y, S), BinaryOutputs(default=True, explicit={"s": False}))
    header = json.loads(rendered.body[: rendered.json_length])
    assert [("data" in o, "parameters" in o) for o in header["outputs"]] == [(False, True), (True, False)]


# ---- compression -----------------------------------------------------------------------------

TEXT = b'{"inputs": []}' * 100


@pytest.mark.parametrize(
    ("encoding", "compressed"),
    [
        ("gzip", gzip.compress(TEXT)),
        ("gzip", gzip.compress(TEXT[:7]) + gzip.compress(TEXT[7:])),
        ("deflate", zlib.compress(TEXT)),
        ("deflate", zlib.compress(TEXT)[2:-4]),
        ("gzip", b""),
    ],
    ids=["gzip", "gzip-members", "zlib", "raw-deflate", "empty"],
)
def test_inflate(encoding: str, compressed: bytes) -> None:
    assert inflate(compressed, encoding, len(TEXT)) == (TEXT if compressed else b"")


def test_many_gzip_members_are_refused_without_quadratic_work() -> None:
    # 200k empty members (4 MB): copying the rest of the body per member made this take a minute.
    body = gzip.compress(b"") * 209_715
    assert refusal(lambda: inflate(body, "gzip", 10**6)) == f"the request body has more than {MAX_GZIP_MEMBERS} gzip members"
    assert inflate(gzip.compress(b"a") * MAX_GZIP_MEMBERS, "gzip", 10**6) == b"a" * MAX_GZIP_MEMBERS


def test_a_bomb_stops_within_the_limit_plus_one_chunk() -> None:
    import tracemalloc

    bomb = gzip.compress(bytes(50_000_000), 9)  # about 50 kB on the wire
    tracemalloc.start()
    try:
        with pytest.raises(HTTPRequestEntityTooLarge):
            inflate(bomb, "gzip", 1_000_000)
        _, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak < 8_000_000, peak  # the limit, one output buffer's growth and one input chunk


def test_inflate_stops_at_the_limit() -> None:
    with pytest.raises(HTTPRequestEntityTooLarge) as caught:
        inflate(gzip.compress(bytes(10_000_000)), "gzip", 1000)
    assert caught.value.text == "decoded request body exceeds the server's limit of 1000 bytes (--http-max-input-bytes)"


@pytest.mark.parametrize(
    ("encoding", "compressed", "message"),
    [
        ("gzip", gzip.compress(TEXT)[:-9], "the request body is not valid gzip data: the compressed stream is truncated"),
        ("gzip", b"not gzip", "the request body is not valid gzip data: Error -3 while decompressing data: incorrect header check"),
        ("deflate", zlib.compress(TEXT) + b"xy", "the request body is not valid deflate data: 2 bytes follow the compressed stream"),
    ],
)
def test_inflate_refuses_corrupt_bodies(encoding: str, compressed: bytes, message: str) -> None:
    assert refusal(lambda: inflate(compressed, encoding, 10**6)) == message


@pytest.mark.parametrize(
    ("accept", "expected"),
    [
        (None, None),
        ("", None),
        ("identity", None),
        ("gzip", ContentCoding.gzip),
        ("GZIP", ContentCoding.gzip),
        ("deflate, gzip", ContentCoding.deflate),
        ("gzip;q=0.2, deflate;q=0.8", ContentCoding.deflate),
        ("gzip; q=0, deflate; q=0", None),
        ("br, gzip;q=0.5", ContentCoding.gzip),
        ("gzip;q=oops", None),
    ],
)
def test_response_coding(accept: str | None, expected: ContentCoding | None) -> None:
    assert response_coding(accept) == expected


# ---- model config as JSON, load parameters ---------------------------------------------------


def test_config_json_has_numbers_for_64_bit_integers_and_every_default() -> None:
    config = text_format.Parse(
        """
        name: "m" max_batch_size: 8
        input [ { name: "x" data_type: TYPE_FP32 dims: [ 16, -1 ] } ]
        dynamic_batching { preferred_batch_size: [ 2, 4 ] max_queue_delay_microseconds: 100 }
        parameters { key: "k" value: { string_value: "v" } }
        """,
        mc.ModelConfig(),
    )
    document = config_to_json(config)
    assert document["input"][0]["dims"] == [16, -1]
    assert document["dynamic_batching"]["max_queue_delay_microseconds"] == 100
    assert document["dynamic_batching"]["preferred_batch_size"] == [2, 4]
    assert document["max_batch_size"] == 8
    assert document["input"][0]["data_type"] == "TYPE_FP32"
    assert document["parameters"] == {"k": {"string_value": "v"}}
    assert document["output"] == [] and document["backend"] == ""  # defaults are printed, as Triton does


def test_load_parameters() -> None:
    parameters = load_parameters({"config": '{"max_batch_size": 2}', "file:1/model.onnx": "aGVsbG8="})
    assert parameters == {"config": '{"max_batch_size": 2}', "file:1/model.onnx": b"hello"}
    assert load_parameters({}) == {}
    assert (
        refusal(lambda: load_parameters({"file:1/model.onnx": 3}))
        == "load parameter 'file:1/model.onnx' must carry the file content as a base64 string"
    )
