"""Wire datatypes (KServe v2 / Triton) and their numpy and ONNX Runtime counterparts.

Raw tensor bytes are little-endian, row-major, unpadded. BYTES elements are each a 4-byte
little-endian length followed by that many bytes. ONNX Runtime string tensors hold UTF-8 text,
so BYTES elements must decode as UTF-8 to reach a model.
"""

from __future__ import annotations

from collections.abc import Sequence
from math import prod

import numpy as np

from server.bytes_codec import deserialize_bytes, serialize_bytes
from server.errors import ServerError

# Fixed-size wire types; BYTES is variable-size and handled apart.
_FIXED_WIRE_TO_NUMPY: dict[str, np.dtype] = {
    "BOOL": np.dtype(np.bool_),
    "UINT8": np.dtype("<u1"),
    "UINT16": np.dtype("<u2"),
    "UINT32": np.dtype("<u4"),
    "UINT64": np.dtype("<u8"),
    "INT8": np.dtype("<i1"),
    "INT16": np.dtype("<i2"),
    "INT32": np.dtype("<i4"),
    "INT64": np.dtype("<i8"),
    "FP16": np.dtype("<f2"),
    "FP32": np.dtype("<f4"),
    "FP64": np.dtype("<f8"),
}

WIRE_DATATYPES: frozenset[str] = frozenset([*_FIXED_WIRE_TO_NUMPY, "BYTES", "BF16"])
FIXED_SIZE_DATATYPES: frozenset[str] = frozenset(_FIXED_WIRE_TO_NUMPY)

# Types that ortserve can actually carry into ONNX Runtime. BF16 is a valid wire type but numpy
# (and so ORT's Python API) has no native bfloat16, so we refuse it with a clear message.
SUPPORTED_DATATYPES: frozenset[str] = frozenset([*_FIXED_WIRE_TO_NUMPY, "BYTES"])

_ORT_TYPE_TO_WIRE: dict[str, str] = {
    "tensor(bool)": "BOOL",
    "tensor(uint8)": "UINT8",
    "tensor(uint16)": "UINT16",
    "tensor(uint32)": "UINT32",
    "tensor(uint64)": "UINT64",
    "tensor(int8)": "INT8",
    "tensor(int16)": "INT16",
    "tensor(int32)": "INT32",
    "tensor(int64)": "INT64",
    "tensor(float16)": "FP16",
    "tensor(float)": "FP32",
    "tensor(double)": "FP64",
    "tensor(string)": "BYTES",
    "tensor(bfloat16)": "BF16",
}


def bf16_unsupported(tensor_name: str) -> ServerError:
    return ServerError.unsupported(
        f"tensor '{tensor_name}' has datatype BF16, which ortserve does not support "
        "(numpy and ONNX Runtime's Python API have no bfloat16 type); use FP16 or FP32"
    )


def wire_from_ort_type(ort_type: str) -> str | None:
    """Map an ORT type string such as ``tensor(float)`` to a wire type, or None if unknown."""
    return _ORT_TYPE_TO_WIRE.get(ort_type)


def wire_to_config(wire: str) -> str:
    """Wire datatype → config DataType enum name (``BYTES`` is ``TYPE_STRING`` in configs)."""
    return "TYPE_STRING" if wire == "BYTES" else f"TYPE_{wire}"


def config_to_wire(config_type: str) -> str:
    """Config DataType enum name → wire datatype."""
    name = config_type.removeprefix("TYPE_")
    return "BYTES" if name == "STRING" else name


def numpy_dtype(wire: str) -> np.dtype:
    """The numpy dtype that holds a wire type (object for BYTES)."""
    if wire == "BYTES":
        return np.dtype(object)
    return _FIXED_WIRE_TO_NUMPY[wire]


def element_size(wire: str) -> int:
    return _FIXED_WIRE_TO_NUMPY[wire].itemsize


def element_count(shape: Sequence[int]) -> int:
    return prod(shape)


def decode_raw(raw: bytes | bytearray | memoryview, wire: str, shape: Sequence[int], tensor_name: str, model_name: str) -> np.ndarray:
    """Decode raw tensor bytes into an array of ``shape``; zero-copy for fixed-size types.

    Raises ServerError(INVALID_ARG) with Triton's wording when the byte size does not fit.
    """
    if wire == "BYTES":
        return deserialize_bytes(raw, shape, tensor_name, model_name)
    dtype = _FIXED_WIRE_TO_NUMPY[wire]
    expected = element_count(shape) * dtype.itemsize
    if len(raw) != expected:
        raise ServerError.invalid_arg(
            f"input byte size mismatch for input '{tensor_name}' for model '{model_name}'. Expected {expected}, got {len(raw)}"
        )
    return np.frombuffer(raw, dtype=dtype).reshape(shape)


def encode_raw(array: np.ndarray) -> bytes:
    """Raw wire bytes for an output array (little-endian, row-major)."""
    if array.dtype.kind in ("O", "U", "S"):
        return serialize_bytes(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes(order="C")
