"""Seeded fuzzing of a running server over gRPC and HTTP: hostile variations of real requests.

Each case starts from a valid request for a model the server has and changes what an attacker
or a broken client would: shapes (negative, huge, 65 dims, overflowing products), datatypes,
data of the wrong kind, size or nesting, parameters of every type, names with control
characters, requested outputs with odd parameters, bit flips and truncations of the serialized
message, and for HTTP the JSON, the binary header, compression and the raw form. What counts is
the answer: a precise refusal is fine, INTERNAL / UNKNOWN / 500 (or no answer) is a defect.

    results = fuzz_grpc(server_url, count=20_000, seed=1); results.defects  # [] when all is well
"""

from __future__ import annotations

import gzip
import http.client
import json
import random
import struct
import zlib
from collections import Counter
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import grpc

from server.proto import grpc_service_pb2 as pb

# The model the cases target, as the bundled model_repo/ and the tests have it.
MODEL = "simple"
INPUTS = ("INPUT0", "INPUT1")
DATATYPES = ("INT32", "FP32", "BYTES", "BOOL", "FP16", "BF16", "UINT64", "INT8", "FP8", "", "int32", "BYTES\x00")
NAMES = ("INPUT0", "INPUT1", "", "OUTPUT0", "INPUT0\n", "x" * 300, "\u202eINPUT0", "../INPUT0", "INPUT0 ")
GRPC_DEFECTS = frozenset({grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN, grpc.StatusCode.DATA_LOSS})


@dataclass
class FuzzResults:
    sent: int = 0
    outcomes: Counter[str] = field(default_factory=Counter)
    # (outcome, description of the case) for every answer that is a server defect
    defects: list[tuple[str, str]] = field(default_factory=list)


def _shape(rng: random.Random) -> list[int]:
    choice = rng.randrange(8)
    if choice == 0:
        return [rng.choice([-1, -(2**40), 0]), 16]
    if choice == 1:
        return [2**32, 2**32]
    if choice == 2:
        return [1] * rng.choice([0, 33, 64, 65, 100])
    if choice == 3:
        return [0, 2**62, 2**62]
    if choice == 4:
        return [rng.randrange(0, 5), rng.randrange(0, 40)]
    if choice == 5:
        return [2**63 - 1, 1]
    return [1, 16]


def _parameter(rng: random.Random) -> pb.InferParameter:
    kind = rng.randrange(5)
    if kind == 0:
        return pb.InferParameter(bool_param=rng.random() < 0.5)
    if kind == 1:
        return pb.InferParameter(int64_param=rng.choice([-1, 0, 3, 2**63 - 1, -(2**63)]))
    if kind == 2:
        return pb.InferParameter(string_param=rng.choice(["", "x" * 1000, "\n\x00", "3"]))
    if kind == 3:
        return pb.InferParameter(double_param=rng.choice([float("nan"), float("inf"), -0.0, 1e308]))
    return pb.InferParameter(uint64_param=rng.choice([0, 2**64 - 1]))


def _valid_grpc_message() -> pb.ModelInferRequest:
    request = pb.ModelInferRequest(model_name=MODEL)
    for name in INPUTS:
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(struct.pack("<16i", *range(16)))
    return request


def _grpc_message(rng: random.Random) -> pb.ModelInferRequest:
    """A valid request with one to three hostile changes (a few stay valid: the path must serve)."""
    request = _valid_grpc_message()
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        _GRPC_MUTATIONS[rng.randrange(len(_GRPC_MUTATIONS))](rng, request)
    return request


def _mutate_model(rng: random.Random, request: pb.ModelInferRequest) -> None:
    request.model_name = rng.choice(["", "nope", "simple\n", "a" * 300, "../simple"])
    if rng.random() < 0.5:
        request.model_version = rng.choice(["1", "0", "-1", "x", "99999999999999999999", "1 "])


def _mutate_id(rng: random.Random, request: pb.ModelInferRequest) -> None:
    request.id = rng.choice(["", "r" * 5000, "id\n\x1b[31m", "ok-id"])


def _mutate_input(rng: random.Random, request: pb.ModelInferRequest) -> None:
    tensor = request.inputs[rng.randrange(len(request.inputs))] if request.inputs else request.inputs.add()
    change = rng.randrange(5)
    if change == 0:
        tensor.name = rng.choice(NAMES)
    elif change == 1:
        tensor.datatype = rng.choice(DATATYPES)
    elif change == 2:
        del tensor.shape[:]
        tensor.shape.extend(_shape(rng))
    elif change == 3:
        _typed_contents(rng, tensor)
    else:
        tensor.parameters[rng.choice(["shared_memory_region", "binary_data_size", "x"])].CopyFrom(_parameter(rng))


def _mutate_raw(rng: random.Random, request: pb.ModelInferRequest) -> None:
    if rng.random() < 0.5:
        del request.raw_input_contents[:]
    for _ in range(rng.choice([0, 1, 2])):
        request.raw_input_contents.append(rng.randbytes(rng.choice([0, 1, 63, 64, 65, 128])))


def _mutate_inputs_count(rng: random.Random, request: pb.ModelInferRequest) -> None:
    if request.inputs and rng.random() < 0.5:
        del request.inputs[rng.randrange(len(request.inputs))]
    else:
        request.inputs.add(name=rng.choice(NAMES), datatype=rng.choice(DATATYPES), shape=_shape(rng))


def _mutate_outputs(rng: random.Random, request: pb.ModelInferRequest) -> None:
    output = request.outputs.add(name=rng.choice(["OUTPUT0", "OUTPUT1", "nope", ""]))
    if rng.random() < 0.7:
        output.parameters[rng.choice(["classification", "binary_data", "shared_memory_region"])].CopyFrom(_parameter(rng))


def _mutate_parameters(rng: random.Random, request: pb.ModelInferRequest) -> None:
    key = rng.choice(["priority", "timeout", "sequence_id", "triton_x", "custom", "binary_data_output", "sequence_start"])
    request.parameters[key].CopyFrom(_parameter(rng))


_GRPC_MUTATIONS = (
    _mutate_model,
    _mutate_id,
    _mutate_input,
    _mutate_input,
    _mutate_raw,
    _mutate_inputs_count,
    _mutate_outputs,
    _mutate_parameters,
)


def _typed_contents(rng: random.Random, tensor: pb.ModelInferRequest.InferInputTensor) -> None:
    count = rng.choice([0, 1, 15, 16, 17])
    field_name = rng.choice(["int_contents", "fp32_contents", "bytes_contents", "bool_contents", "uint64_contents"])
    values: list[Any]
    if field_name == "bytes_contents":
        values = [rng.randbytes(rng.randrange(4)) for _ in range(count)]
    elif field_name == "bool_contents":
        values = [rng.random() < 0.5 for _ in range(count)]
    elif field_name == "fp32_contents":
        values = [rng.uniform(-1e30, 1e30) for _ in range(count)]
    elif field_name == "uint64_contents":
        values = [rng.randrange(2**64) for _ in range(count)]
    else:
        values = [rng.randrange(-(2**31), 2**31) for _ in range(count)]
    getattr(tensor.contents, field_name).extend(values)


def _mangled(rng: random.Random, data: bytes) -> bytes:
    """A serialized message with bits flipped, bytes cut, or garbage spliced in."""
    if not data or rng.random() < 0.2:
        return rng.randbytes(rng.randrange(1, 200))
    buffer = bytearray(data)
    for _ in range(rng.randrange(1, 6)):
        position = rng.randrange(len(buffer))
        buffer[position] ^= 1 << rng.randrange(8)
    if rng.random() < 0.3:
        del buffer[rng.randrange(len(buffer)) :]
    return bytes(buffer)


def fuzz_grpc(url: str, count: int, seed: int = 0, threads: int = 8) -> FuzzResults:
    """Send ``count`` fuzzed ModelInfer calls (a fifth of them as raw, mangled bytes)."""
    rng = random.Random(seed)
    cases = []
    for _ in range(count):
        message = _grpc_message(rng)
        raw = _mangled(rng, message.SerializeToString()) if rng.random() < 0.2 else None
        cases.append((message, raw))
    results = FuzzResults()
    with grpc.insecure_channel(url, options=[("grpc.max_send_message_length", -1)]) as channel:
        typed = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", pb.ModelInferRequest.SerializeToString, lambda b: b)
        untyped = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", lambda b: b, lambda b: b)

        def send(case: tuple[pb.ModelInferRequest, bytes | None]) -> tuple[str, str]:
            message, raw = case
            try:
                (untyped(raw, timeout=60) if raw is not None else typed(message, timeout=60))
                return "OK", ""
            except grpc.RpcError as error:
                code = error.code()  # type: ignore[attr-defined]
                detail = "" if code not in GRPC_DEFECTS else f"{error.details()} <- {str(message)[:300]!r}"  # type: ignore[attr-defined]
                return code.name, detail

        with ThreadPoolExecutor(threads) as pool:
            for outcome, detail in pool.map(send, cases):
                results.sent += 1
                results.outcomes[outcome] += 1
                if detail:
                    results.defects.append((outcome, detail))
    return results


def _http_document(rng: random.Random) -> Any:
    """A valid JSON request with hostile changes (or, now and then, no JSON object at all)."""
    if rng.random() < 0.05:
        return rng.choice([[], "x", 3, None, {"inputs": {}}])
    inputs: list[dict[str, Any]] = [{"name": name, "datatype": "INT32", "shape": [1, 16], "data": list(range(16))} for name in INPUTS]
    for _ in range(rng.choice([0, 1, 1, 2, 3])):
        _http_mutation(rng, inputs)
    document: dict[str, Any] = {"inputs": inputs}
    if rng.random() < 0.2:
        parameter = {rng.choice(["classification", "binary_data"]): rng.choice([3, -1, "x", True])}
        document["outputs"] = [{"name": rng.choice(["OUTPUT0", "nope"]), "parameters": parameter}]
    if rng.random() < 0.2:
        key = rng.choice(["priority", "timeout", "binary_data_output", "triton_x"])
        document["parameters"] = {key: rng.choice([1, -1, "x", None, [], 1.5])}
    if rng.random() < 0.1:
        document["id"] = rng.choice([3, None, "x" * 5000])
    return document


def _http_mutation(rng: random.Random, inputs: list[dict[str, Any]]) -> None:
    if not inputs or rng.random() < 0.1:
        inputs.append({"name": rng.choice(NAMES), "datatype": rng.choice(DATATYPES), "shape": _shape(rng)})
        return
    entry = inputs[rng.randrange(len(inputs))]
    change = rng.randrange(6)
    if change == 0:
        entry["name"] = rng.choice(NAMES)
    elif change == 1:
        entry["datatype"] = rng.choice(DATATYPES)
    elif change == 2:
        entry["shape"] = _shape(rng) if rng.random() < 0.8 else rng.choice(["x", [1.5, 16], None, [[1], 16]])
    elif change == 3:
        nested: Any = rng.choice(["s", 1, 1.5, True, None])
        for _ in range(rng.choice([1, 2, 33, 40, 100])):
            nested = [nested]
        entry["data"] = nested
    elif change == 4:
        entry["data"] = rng.choice([{"a": 1}, "text", [[1, 2], [3]], [2**70], [1e400], list(range(17)), [True] * 16])
    else:
        entry.pop("data", None)
        entry["parameters"] = {"binary_data_size": rng.choice([-1, 0, 64, 2**40, "64", 1.5])}


def _http_case(rng: random.Random) -> tuple[str, dict[str, str], bytes]:
    path = rng.choice([f"/v2/models/{MODEL}/infer"] * 8 + ["/v2/models/nope/infer", f"/v2/models/{MODEL}/versions/x/infer"])
    headers: dict[str, str] = {}
    body = json.dumps(_http_document(rng), allow_nan=True).encode()
    choice = rng.randrange(10)
    if choice == 0:
        binary = rng.randbytes(rng.choice([0, 64, 128]))
        headers["Inference-Header-Content-Length"] = rng.choice([str(len(body)), "-1", "x", str(len(body) + 10), "0"])
        body += binary
    elif choice == 1:
        body, headers["Content-Encoding"] = gzip.compress(body), "gzip"
    elif choice == 2:
        body, headers["Content-Encoding"] = zlib.compress(body), "deflate"
    elif choice == 3:
        headers["Content-Encoding"] = rng.choice(["gzip", "deflate", "br", "zstd"])  # undecodable
    elif choice == 4:
        body = _mangled(rng, body)
    elif choice == 5:
        headers["Content-Type"] = "application/octet-stream"
        body = struct.pack("<16i", *range(16)) if rng.random() < 0.5 else rng.randbytes(rng.randrange(100))
    return path, headers, body


def fuzz_http(port: int, count: int, seed: int = 0, threads: int = 8) -> FuzzResults:
    """Send ``count`` fuzzed HTTP inference requests; a 500 (or 502), or no answer, is a defect.

    501 (what ortserve does not implement, e.g. BF16) and 503 (overload) are precise answers."""
    rng = random.Random(seed)
    cases = [_http_case(rng) for _ in range(count)]
    results = FuzzResults()

    def send(case: tuple[str, dict[str, str], bytes]) -> tuple[str, str]:
        path, headers, body = case
        connection = http.client.HTTPConnection("127.0.0.1", port, timeout=60)
        try:
            connection.request("POST", path, body, headers)
            response = connection.getresponse()
            response.read()
            status = response.status
        except (OSError, http.client.HTTPException) as exc:
            return "no answer", f"{exc!r} <- {path} {headers} {body[:200]!r}"
        finally:
            connection.close()
        defect = status in (500, 502)
        return str(status), f"{status} <- {path} {headers} {body[:300]!r}" if defect else ""

    with ThreadPoolExecutor(threads) as pool:
        for outcome, detail in pool.map(send, cases):
            results.sent += 1
            results.outcomes[outcome] += 1
            if detail:
                results.defects.append((outcome, detail))
    return results
