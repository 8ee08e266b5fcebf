"""Wire datatypes (KServe v2 / Triton) and their numpy and ONNX Runtime counterparts.

Raw tensor bytes are little-endian, row-major, unpadded. BYTES elements are each a 4-byte
little-endian length followed by that many bytes. ONNX Runtime string tensors hold UTF-8 text,
so BYTES elements must decode as UTF-8 to reach a model.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from math import prod

import numpy as np

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

_NUMPY_KIND_TO_WIRE: dict[np.dtype, str] = {dtype.newbyteorder("="): wire for wire, dtype in _FIXED_WIRE_TO_NUMPY.items()}

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

_LENGTH_PREFIX = struct.Struct("<I")


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


def wire_from_numpy(dtype: np.dtype) -> str:
    """The wire type of a numpy array produced by ORT (object and str arrays are BYTES)."""
    if dtype.kind in ("O", "U", "S"):
        return "BYTES"
    return _NUMPY_KIND_TO_WIRE[dtype.newbyteorder("=")]


def element_size(wire: str) -> int:
    return _FIXED_WIRE_TO_NUMPY[wire].itemsize


def element_count(shape: Sequence[int]) -> int:
    return prod(shape)


def decode_raw(raw: bytes | memoryview, wire: str, shape: Sequence[int], tensor_name: str, model_name: str) -> np.ndarray:
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


def deserialize_bytes(raw: bytes | memoryview, shape: Sequence[int], tensor_name: str, model_name: str) -> np.ndarray:
    """Decode length-prefixed BYTES elements into text ONNX Runtime takes: a fixed-width unicode
    array when every element has the same length and is ASCII without NUL (the usual case,
    decoded without a Python object per element: about 1.3x the wire size for 2-byte strings),
    else an object array of ``str``. Stops as soon as the elements do not match ``shape``.
    """
    expected_count = element_count(shape)
    view = memoryview(raw).cast("B") if isinstance(raw, memoryview) else memoryview(raw)
    uniform = _uniform_ascii(view, expected_count)
    if uniform is not None:
        return uniform.reshape(shape)
    elements: list[str] = []
    offset = 0
    end = len(view)
    while offset < end:
        if len(elements) == expected_count:  # count the rest without decoding it, then refuse
            raise _count_mismatch(expected_count + _count_elements(view, offset), tensor_name, model_name, expected_count)
        if offset + 4 > end:
            raise ServerError.invalid_arg(
                f"input '{tensor_name}' for model '{model_name}': BYTES element {len(elements)} has a truncated 4-byte length prefix"
            )
        (length,) = _LENGTH_PREFIX.unpack_from(view, offset)
        offset += 4
        if offset + length > end:
            raise ServerError.invalid_arg(
                f"input '{tensor_name}' for model '{model_name}': BYTES element {len(elements)} "
                f"declares {length} bytes but only {end - offset} remain"
            )
        elements.append(_utf8(view[offset : offset + length], tensor_name, model_name))
        offset += length
    if len(elements) != expected_count:
        raise _count_mismatch(len(elements), tensor_name, model_name, expected_count)
    array = np.empty(expected_count, dtype=object)
    array[:] = elements
    return array.reshape(shape)


def _uniform_ascii(view: memoryview, count: int) -> np.ndarray | None:
    """``count`` elements of one length L, all ASCII without NUL, as a "<U{L}" array (None when the
    body is not like that). Reads the length prefixes and characters as strided views: no copy
    until the characters are widened to UCS-4."""
    if count == 0 or len(view) < 4:
        return None
    length = _LENGTH_PREFIX.unpack_from(view, 0)[0]
    stride = 4 + length
    if len(view) != count * stride:
        return None
    lengths = np.ndarray((count,), dtype="<u4", buffer=view, offset=0, strides=(stride,))
    if not (lengths == length).all():
        return None
    if length == 0:
        return np.zeros(count, dtype="<U1")  # every element is the empty string
    chars = np.ndarray((count, length), dtype=np.uint8, buffer=view, offset=4, strides=(stride, 1))
    if chars.min() == 0 or chars.max() >= 0x80:
        return None  # NUL would be dropped by a unicode array; non-ASCII needs UTF-8 decoding
    return chars.astype("<u4").view(f"<U{length}").reshape(count)


def _count_elements(view: memoryview, offset: int) -> int:
    """How many length-prefixed elements start at ``offset`` (a malformed tail counts as one)."""
    count = 0
    while offset < len(view):
        offset += 4 + (_LENGTH_PREFIX.unpack_from(view, offset)[0] if offset + 4 <= len(view) else 0)
        count += 1
    return count


def _count_mismatch(got: int, tensor_name: str, model_name: str, expected_count: int) -> ServerError:
    return ServerError.invalid_arg(
        f"unexpected number of string elements {got} for inference input '{tensor_name}' for model '{model_name}', "
        f"expecting {expected_count}"
    )


def _utf8(chunk: memoryview, tensor_name: str, model_name: str) -> str:
    try:
        return str(chunk, "utf-8")
    except UnicodeDecodeError as exc:
        raise ServerError.invalid_arg(
            f"input '{tensor_name}' for model '{model_name}' holds a BYTES element that is not "
            f"valid UTF-8 ({exc.reason} at byte {exc.start}); ONNX Runtime string tensors hold UTF-8 text"
        ) from None


def serialize_bytes(array: np.ndarray) -> bytes:
    """Encode an array of str/bytes elements as length-prefixed BYTES (row-major)."""
    parts: list[bytes] = []
    for element in array.ravel(order="C"):
        # bytes as they are; str or any other object as its UTF-8 text (tritonclient does the same)
        raw_types = bytes | bytearray | memoryview | np.bytes_
        data = bytes(element) if isinstance(element, raw_types) else str(element).encode("utf-8")
        parts.append(_LENGTH_PREFIX.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def encode_raw(array: np.ndarray) -> bytes:
    """Raw wire bytes for an output array (little-endian, row-major)."""
    if array.dtype.kind in ("O", "U", "S"):
        return serialize_bytes(array)
    if array.dtype.byteorder == ">":
        array = array.astype(array.dtype.newbyteorder("<"))
    return array.tobytes(order="C")
