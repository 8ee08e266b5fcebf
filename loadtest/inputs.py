"""Synthetic requests from a model's metadata: random data of the right datatype and shape.

A request is built and serialized once; workers send the same bytes over and over (as
perf_analyzer does), so the client spends no time on protobuf per request. Streaming requests need
a distinct ``id`` each: it is appended as one more serialized field (protobuf keeps the last value
of a repeated scalar field), which costs a bytes concatenation instead of a re-serialization.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

from server.proto import grpc_service_pb2 as pb

# Wire datatype → numpy dtype for fixed-size types. BYTES and BF16 are handled apart.
NUMPY_DTYPES: dict[str, type[np.generic]] = {
    "BOOL": np.bool_,
    "UINT8": np.uint8,
    "UINT16": np.uint16,
    "UINT32": np.uint32,
    "UINT64": np.uint64,
    "INT8": np.int8,
    "INT16": np.int16,
    "INT32": np.int32,
    "INT64": np.int64,
    "FP16": np.float16,
    "FP32": np.float32,
    "FP64": np.float64,
}
ID_FIELD_TAG = b"\x1a"  # ModelInferRequest.id: field 3, wire type 2 (length-delimited)


@dataclass(frozen=True)
class InputSpec:
    """One input as the load tester will send it: the full shape, batch dim included."""

    name: str
    datatype: str
    shape: tuple[int, ...]


def request_shapes(metadata: pb.ModelMetadataResponse, batching: bool, batch: int, shapes: Mapping[str, Sequence[int]]) -> list[InputSpec]:
    """Each input's shape. For a batching model the metadata's leading -1 is the batch dim and
    ``shapes`` (like perf_analyzer's --shape) gives the dims after it; otherwise ``shapes`` gives the
    full shape. Raises ValueError when a dynamic dim is left without a value."""
    specs = []
    for tensor in metadata.inputs:
        dims = list(tensor.shape)
        if batching:
            dims = dims[1:]
        if tensor.name in shapes:
            given = list(shapes[tensor.name])
            if len(given) != len(dims) or any(d not in (-1, g) for d, g in zip(dims, given)):
                raise ValueError(f"--shape {tensor.name}:{','.join(map(str, given))} does not fit the model's dims {dims}")
            dims = given
        if any(d < 0 for d in dims):
            raise ValueError(f"input '{tensor.name}' has dynamic dims {list(tensor.shape)}: pass --shape {tensor.name}:d1,d2,...")
        specs.append(InputSpec(tensor.name, tensor.datatype, (batch, *dims) if batching else tuple(dims)))
    return specs


def random_bytes_elements(count: int, length: int, rng: np.random.Generator) -> bytes:
    """``count`` random printable strings of ``length`` bytes in Triton's BYTES wire encoding
    (each element prefixed by its 4-byte little-endian length)."""
    prefix = np.uint32(length).tobytes()
    letters = rng.integers(ord("a"), ord("z") + 1, size=(count, length), dtype=np.uint8)
    return b"".join(prefix + row.tobytes() for row in letters)


def random_tensor_bytes(spec: InputSpec, rng: np.random.Generator, string_length: int = 16) -> bytes:
    """Raw little-endian contents for ``spec`` (what goes in raw_input_contents)."""
    count = int(np.prod(spec.shape, dtype=np.int64))
    if spec.datatype == "BYTES":
        return random_bytes_elements(count, string_length, rng)
    if spec.datatype == "BF16":  # no numpy type: any 16-bit pattern of a small float will do
        return (rng.random(count, dtype=np.float32).view(np.uint32) >> 16).astype("<u2").tobytes()
    dtype = NUMPY_DTYPES.get(spec.datatype)
    if dtype is None:
        raise ValueError(f"input '{spec.name}' has datatype {spec.datatype}, which the load tester cannot fabricate")
    if dtype is np.bool_:
        values = rng.integers(0, 2, size=count).astype(np.bool_)
    elif np.issubdtype(dtype, np.floating):
        values = rng.random(count).astype(dtype)
    else:  # small non-negative integers fit every integer type and stay valid as indices
        values = rng.integers(0, 100, size=count).astype(dtype)
    return values.astype(np.dtype(dtype).newbyteorder("<")).tobytes()


def build_request(model: str, version: str, specs: Sequence[InputSpec], seed: int = 0, string_length: int = 16) -> bytes:
    """A serialized ModelInferRequest with random data for every input (no ``id``)."""
    rng = np.random.default_rng(seed)
    request = pb.ModelInferRequest(model_name=model, model_version=version)
    for spec in specs:
        request.inputs.add(name=spec.name, datatype=spec.datatype, shape=spec.shape)
        request.raw_input_contents.append(random_tensor_bytes(spec, rng, string_length))
    return request.SerializeToString()


def varint(value: int) -> bytes:
    out = bytearray()
    while True:
        low = value & 0x7F
        value >>= 7
        if value:
            out.append(low | 0x80)
        else:
            out.append(low)
            return bytes(out)


def with_id(serialized: bytes, request_id: str) -> bytes:
    """``serialized`` with its ``id`` field set to ``request_id``, without re-serializing."""
    encoded = request_id.encode()
    return serialized + ID_FIELD_TAG + varint(len(encoded)) + encoded


def rows_per_request(specs: Sequence[InputSpec], batching: bool) -> int:
    """Inferences one request carries (perf_analyzer's count): its batch dim, or 1."""
    return specs[0].shape[0] if batching and specs else 1
