"""The HTTP wire forms tritonclient does not produce, sent byte for byte with http.client.

Nested and flat JSON ``data``, BYTES/BOOL/FP16 as JSON, scalars, hand-built binary bodies
(Triton's binary tensor extension), compressed request bodies and responses, and the raw
single-input body (``Inference-Header-Content-Length: 0``). Runs on the shared ``server``.
"""

from __future__ import annotations

import gzip
import http.client
import json
import struct
import zlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from scripts.harness import ServerProcess
from server.frontends.http.openapi import OPENAPI_PATH

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass
class Reply:
    status: int
    headers: http.client.HTTPMessage
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def call(server: ServerProcess, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
    connection = http.client.HTTPConnection("127.0.0.1", server.http_port, timeout=30)
    try:
        connection.request(method, path, body=body, headers=headers or {})
        response = connection.getresponse()
        return Reply(response.status, response.headers, response.read())
    finally:
        connection.close()


def infer(server: ServerProcess, model: str, document: dict[str, Any], binary: bytes = b"", headers: dict[str, str] | None = None) -> Reply:
    header = json.dumps(document).encode()
    extra = {HEADER_LENGTH: str(len(header))} if binary else {}
    return call(server, "POST", f"/v2/models/{model}/infer", header + binary, {**extra, **(headers or {})})


def split_binary(reply: Reply) -> tuple[dict[str, Any], dict[str, bytes]]:
    """The response's JSON header and each binary output's bytes by name."""
    length = int(reply.headers[HEADER_LENGTH])
    header = json.loads(reply.body[:length])
    blobs, offset = {}, length
    for output in header["outputs"]:
        size = output.get("parameters", {}).get("binary_data_size")
        if size is not None:
            blobs[output["name"]] = reply.body[offset : offset + size]
            offset += size
    assert offset == len(reply.body)
    return header, blobs


def length_prefixed(*items: bytes) -> bytes:
    return b"".join(struct.pack("<I", len(item)) + item for item in items)


ROW = list(range(16))
ONES = [1] * 16


# ---- JSON data -----------------------------------------------------------------------------


def test_nested_and_flat_data_give_flat_outputs(server: ServerProcess) -> None:
    document = {
        "inputs": [
            {"name": "INPUT0", "shape": [2, 16], "datatype": "INT32", "data": [ROW, ROW]},
            {"name": "INPUT1", "shape": [2, 16], "datatype": "INT32", "data": ONES + ONES},
        ]
    }
    reply = infer(server, "simple", document)
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert HEADER_LENGTH not in reply.headers
    assert reply.json() == {
        "model_name": "simple",
        "model_version": "1",
        "outputs": [
            {"name": "OUTPUT0", "datatype": "INT32", "shape": [2, 16], "data": [v + 1 for v in ROW] * 2},
            {"name": "OUTPUT1", "datatype": "INT32", "shape": [2, 16], "data": [v - 1 for v in ROW] * 2},
        ],
    }


def test_three_level_nesting(server: ServerProcess) -> None:
    state = [[[1.0] * 128], [[2.0] * 128]]  # [2, seq=1, 128]
    document = {
        "inputs": [
            {"name": "state", "shape": [2, 1, 128], "datatype": "FP32", "data": state},
            {"name": "x", "shape": [1, 128], "datatype": "FP32", "data": [[0.5] * 128]},
        ]
    }
    (output,) = infer(server, "state_update", document).json()["outputs"]
    assert output["shape"] == [2, 1, 128]
    assert output["data"] == [1.5] * 128 + [2.5] * 128


@pytest.mark.parametrize(
    ("model", "datatype", "data", "expected"),
    [
        ("identity_bytes", "BYTES", [["héllo", ""], ["日本語", "a b"]], ["héllo", "", "日本語", "a b"]),
        ("identity_bool", "BOOL", [[True, False], [False, True]], [True, False, False, True]),
        ("identity_fp16", "FP16", [0.5, -2, 65504, 0.1], [0.5, -2.0, 65504.0, 0.0999755859375]),
        ("identity_fp32", "FP32", [0.1, 1, -0.0, 3.4028234663852886e38], [0.1, 1.0, -0.0, 3.4028235e38]),
        ("identity_uint64", "UINT64", [0, 1, 2**63, 2**64 - 1], [0, 1, 2**63, 2**64 - 1]),
        ("identity_int64", "INT64", [-(2**63), 0, 1, 2**63 - 1], [-(2**63), 0, 1, 2**63 - 1]),
        ("identity_int8", "INT8", [-128, 0, 1, 127], [-128, 0, 1, 127]),
    ],
)
def test_json_data_of_each_kind(server: ServerProcess, model: str, datatype: str, data: list, expected: list) -> None:
    document = {"id": "k", "inputs": [{"name": "INPUT0", "shape": [2, 2], "datatype": datatype, "data": data}]}
    reply = infer(server, model, document)
    assert reply.status == 200, reply.body
    assert reply.json() == {
        "model_name": model,
        "model_version": "1",
        "id": "k",
        "outputs": [{"name": "OUTPUT0", "datatype": datatype, "shape": [2, 2], "data": expected}],
    }


@pytest.mark.parametrize("scale", [2.0, [2.0], [[2.0]]], ids=["bare", "list", "nested"])
def test_one_element_input_in_any_nesting(server: ServerProcess, scale: Any) -> None:
    # The graph's scalar is presented as [1] (auto-complete reshapes it), as Triton does.
    document = {
        "inputs": [
            {"name": "x", "shape": [3], "datatype": "FP32", "data": [1, 2, 3]},
            {"name": "scale", "shape": [1], "datatype": "FP32", "data": scale},
        ]
    }
    (output,) = infer(server, "scalar_scale", document).json()["outputs"]
    assert (output["shape"], output["data"]) == ([3], [2.0, 4.0, 6.0])


def test_empty_batch(server: ServerProcess) -> None:
    document = {"inputs": [{"name": "INPUT0", "shape": [0, 3], "datatype": "INT32", "data": []}]}
    (output,) = infer(server, "identity_int32", document).json()["outputs"]
    assert (output["shape"], output["data"]) == ([0, 3], [])


# ---- binary tensor extension ---------------------------------------------------------------


def test_hand_built_binary_body_with_per_output_choice(server: ServerProcess) -> None:
    first = np.arange(16, dtype=np.int32).reshape(1, 16)
    document = {
        "id": "mixed",
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": ONES},
        ],
        "outputs": [{"name": "OUTPUT1", "parameters": {"binary_data": True}}, {"name": "OUTPUT0"}],
    }
    reply = infer(server, "simple", document, first.tobytes())
    assert reply.status == 200, reply.body
    assert reply.headers["Content-Type"] == "application/octet-stream"
    header, blobs = split_binary(reply)
    assert header["id"] == "mixed"
    assert header["outputs"] == [
        {"name": "OUTPUT1", "datatype": "INT32", "shape": [1, 16], "parameters": {"binary_data_size": 64}},
        {"name": "OUTPUT0", "datatype": "INT32", "shape": [1, 16], "data": [v + 1 for v in ROW]},
    ]
    np.testing.assert_array_equal(np.frombuffer(blobs["OUTPUT1"], dtype="<i4"), first.ravel() - 1)


def test_binary_data_output_applies_to_outputs_without_their_own_choice(server: ServerProcess) -> None:
    document = {
        "parameters": {"binary_data_output": True},
        "inputs": [
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "data": ROW},
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "data": ONES},
        ],
        "outputs": [{"name": "OUTPUT0"}, {"name": "OUTPUT1", "parameters": {"binary_data": False}}],
    }
    header, blobs = split_binary(infer(server, "simple", document))
    assert list(blobs) == ["OUTPUT0"]
    assert header["outputs"][1]["data"] == [v - 1 for v in ROW]


def test_bool_is_one_byte_and_bytes_are_length_prefixed(server: ServerProcess) -> None:
    bools = b"\x01\x00\x00\x01"
    document = {
        "parameters": {"binary_data_output": True},
        "inputs": [{"name": "INPUT0", "shape": [2, 2], "datatype": "BOOL", "parameters": {"binary_data_size": 4}}],
    }
    _, blobs = split_binary(infer(server, "identity_bool", document, bools))
    assert blobs["OUTPUT0"] == bools
    strings = length_prefixed(b"", "héllo".encode(), b"x" * 70000)
    document = {
        "inputs": [{"name": "INPUT0", "shape": [1, 3], "datatype": "BYTES", "parameters": {"binary_data_size": len(strings)}}],
        "outputs": [{"name": "OUTPUT0", "parameters": {"binary_data": True}}],
    }
    _, blobs = split_binary(infer(server, "identity_bytes", document, strings))
    assert blobs["OUTPUT0"] == strings


def test_two_binary_inputs_take_their_bytes_in_order(server: ServerProcess) -> None:
    first, second = np.arange(16, dtype=np.int32), np.full(16, 5, dtype=np.int32)
    document = {
        "inputs": [
            {"name": "INPUT1", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
            {"name": "INPUT0", "shape": [1, 16], "datatype": "INT32", "parameters": {"binary_data_size": 64}},
        ]
    }
    outputs = infer(server, "simple", document, second.tobytes() + first.tobytes()).json()["outputs"]
    assert outputs[1]["data"] == (first - second).tolist()


# ---- compression ---------------------------------------------------------------------------

DOCUMENT = {"inputs": [{"name": "INPUT0", "shape": [4, 64], "datatype": "FP32", "data": [float(i % 5) for i in range(256)]}]}


@pytest.mark.parametrize(
    ("encoding", "compress"),
    [
        ("gzip", gzip.compress),
        ("gzip", lambda data: gzip.compress(data[:10]) + gzip.compress(data[10:])),
        ("deflate", zlib.compress),
        ("deflate", lambda data: zlib.compress(data)[2:-4]),
    ],
    ids=["gzip", "gzip-two-members", "deflate-zlib", "deflate-raw"],
)
def test_compressed_request_body(server: ServerProcess, encoding: str, compress: Any) -> None:
    body = compress(json.dumps(DOCUMENT).encode())
    reply = call(server, "POST", "/v2/models/identity_fp32/infer", body, {"Content-Encoding": encoding})
    assert reply.status == 200, reply.body
    assert reply.json()["outputs"][0]["data"] == DOCUMENT["inputs"][0]["data"]


def test_compressed_binary_request_keeps_the_uncompressed_header_length(server: ServerProcess) -> None:
    data = np.arange(256, dtype=np.float32)
    header = json.dumps(
        {"inputs": [{"name": "INPUT0", "shape": [4, 64], "datatype": "FP32", "parameters": {"binary_data_size": 1024}}]}
    ).encode()
    headers = {"Content-Encoding": "gzip", HEADER_LENGTH: str(len(header))}
    reply = call(server, "POST", "/v2/models/identity_fp32/infer", gzip.compress(header + data.tobytes()), headers)
    assert reply.status == 200, reply.body
    assert reply.json()["outputs"][0]["data"] == data.tolist()


@pytest.mark.parametrize(
    ("accept", "coding"),
    [
        ("gzip", "gzip"),
        ("deflate", "deflate"),
        ("gzip;q=0.5, deflate", "deflate"),
        ("deflate;q=0, gzip", "gzip"),
        ("gzip;q=0", None),
        ("br", None),
        ("identity", None),
    ],
)
def test_response_follows_accept_encoding(server: ServerProcess, accept: str, coding: str | None) -> None:
    reply = infer(server, "identity_fp32", DOCUMENT, headers={"Accept-Encoding": accept})
    assert reply.status == 200
    assert reply.headers.get("Content-Encoding") == coding
    body = {"gzip": gzip.decompress, "deflate": zlib.decompress, None: bytes}[coding](reply.body)
    assert json.loads(body)["outputs"][0]["data"] == DOCUMENT["inputs"][0]["data"]


def test_compressed_binary_response_header_length_is_uncompressed(server: ServerProcess) -> None:
    document = {**DOCUMENT, "parameters": {"binary_data_output": True}}
    reply = infer(server, "identity_fp32", document, headers={"Accept-Encoding": "gzip"})
    assert reply.headers["Content-Encoding"] == "gzip"
    body = gzip.decompress(reply.body)
    length = int(reply.headers[HEADER_LENGTH])
    assert json.loads(body[:length])["outputs"][0]["parameters"] == {"binary_data_size": 1024}
    assert np.frombuffer(body[length:], dtype="<f4").tolist() == DOCUMENT["inputs"][0]["data"]


# ---- raw single-input body -----------------------------------------------------------------


def raw_infer(server: ServerProcess, model: str, body: bytes, headers: dict[str, str] | None = None) -> Reply:
    return call(server, "POST", f"/v2/models/{model}/infer", body, {HEADER_LENGTH: "0", **(headers or {})})


def test_raw_body_is_the_single_input_as_a_batch_of_one(server: ServerProcess) -> None:
    data = np.array([1.5, -2.0, 3.25], dtype=np.float32)
    header, blobs = split_binary(raw_infer(server, "identity_fp32", data.tobytes()))
    assert header == {
        "model_name": "identity_fp32",
        "model_version": "1",
        "outputs": [{"name": "OUTPUT0", "datatype": "FP32", "shape": [1, 3], "parameters": {"binary_data_size": 12}}],
    }
    assert blobs["OUTPUT0"] == data.tobytes()


def test_raw_body_for_fixed_dims_and_for_bytes(server: ServerProcess) -> None:
    data = np.random.default_rng(3).standard_normal(256).astype(np.float32)
    header, blobs = split_binary(raw_infer(server, "mlp", data.tobytes()))
    assert header["outputs"][0]["shape"] == [1, 10]
    json_reply = infer(server, "mlp", {"inputs": [{"name": "input", "shape": [1, 256], "datatype": "FP32", "data": data.tolist()}]})
    np.testing.assert_array_equal(
        np.frombuffer(blobs["output"], dtype="<f4"), np.array(json_reply.json()["outputs"][0]["data"], dtype=np.float32)
    )
    # BYTES: the whole body is the one element (Triton's rule), so the input must have shape [1].
    text = "日本 text".encode()
    header, blobs = split_binary(raw_infer(server, "identity_text", text))
    assert header["outputs"][0]["shape"] == [1, 1]
    assert blobs["OUTPUT0"] == length_prefixed(text)


def test_octet_stream_body_without_a_json_header_is_the_raw_form(server: ServerProcess) -> None:
    data = np.array([4.0, 5.0], dtype=np.float32)
    reply = call(server, "POST", "/v2/models/identity_fp32/infer", data.tobytes(), {"Content-Type": "application/octet-stream"})
    header, blobs = split_binary(reply)
    assert header["outputs"][0]["shape"] == [1, 2]
    assert blobs["OUTPUT0"] == data.tobytes()


def test_raw_body_may_be_compressed(server: ServerProcess) -> None:
    data = np.arange(64, dtype=np.int64)
    _, blobs = split_binary(raw_infer(server, "identity_int64", gzip.compress(data.tobytes()), {"Content-Encoding": "gzip"}))
    assert blobs["OUTPUT0"] == data.tobytes()


# ---- the OpenAPI document ------------------------------------------------------------------


def test_openapi_document_is_served(server: ServerProcess) -> None:
    reply = call(server, "GET", "/v2/openapi.json")
    assert reply.status == 200
    assert reply.headers["Content-Type"].startswith("application/json")
    assert reply.json() == json.loads(Path(OPENAPI_PATH).read_text())
