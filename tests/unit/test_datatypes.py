"""Wire datatypes: numpy mapping, raw little-endian encoding (zero-copy decode), BYTES length prefixes."""

from __future__ import annotations

import struct

import numpy as np
import pytest

from server.datatypes import (
    SUPPORTED_DATATYPES,
    WIRE_DATATYPES,
    bf16_unsupported,
    config_to_wire,
    decode_raw,
    deserialize_bytes,
    encode_raw,
    numpy_dtype,
    serialize_bytes,
    wire_from_ort_type,
    wire_to_config,
)
from server.errors import ErrorCode, ServerError
from server.proto import model_config_pb2 as mc

# wire type → (struct format, numpy type, size, sample values covering the type's range)
FIXED: dict[str, tuple[str, type, int, list[object]]] = {
    "BOOL": ("?", np.bool_, 1, [True, False, False, True, True, False]),
    "UINT8": ("B", np.uint8, 1, [0, 1, 127, 128, 254, 255]),
    "UINT16": ("H", np.uint16, 2, [0, 1, 0x0102, 0x8000, 0xFFFE, 0xFFFF]),
    "UINT32": ("I", np.uint32, 4, [0, 1, 0x01020304, 2**31, 2**32 - 2, 2**32 - 1]),
    "UINT64": ("Q", np.uint64, 8, [0, 1, 0x0102030405060708, 2**63, 2**64 - 2, 2**64 - 1]),
    "INT8": ("b", np.int8, 1, [-128, -1, 0, 1, 100, 127]),
    "INT16": ("h", np.int16, 2, [-32768, -1, 0, 1, 0x0102, 32767]),
    "INT32": ("i", np.int32, 4, [-(2**31), -1, 0, 1, 0x01020304, 2**31 - 1]),
    "INT64": ("q", np.int64, 8, [-(2**63), -1, 0, 1, 0x0102030405060708, 2**63 - 1]),
    "FP16": ("e", np.float16, 2, [-65504.0, -1.5, 0.0, 0.333251953125, 1.0, 65504.0]),
    "FP32": ("f", np.float32, 4, [-(2.0**127), -1.5, 0.0, 2.0**-149, 3.140000104904175, float("inf")]),
    "FP64": ("d", np.float64, 8, [-1.7e308, -1.5, 0.0, 5e-324, 3.14, float("-inf")]),
}
SHAPE = (2, 3)


def expect_invalid(call: object, *args: object) -> str:
    with pytest.raises(ServerError) as caught:
        call(*args)  # type: ignore[operator]
    assert caught.value.code is ErrorCode.INVALID_ARG
    return caught.value.message


def encode_elements(elements: list[bytes]) -> bytes:
    return b"".join(struct.pack("<I", len(e)) + e for e in elements)


# --- fixed-size types --------------------------------------------------------------------------


@pytest.mark.parametrize("wire", FIXED)
def test_decode_fixed_type_little_endian(wire: str) -> None:
    fmt, np_type, _, values = FIXED[wire]
    raw = struct.pack("<" + fmt * len(values), *values)
    array = decode_raw(raw, wire, SHAPE, "x", "m")
    assert array.dtype == np.dtype(np_type)
    assert array.shape == SHAPE
    assert array.ravel().tolist() == values


@pytest.mark.parametrize("wire", FIXED)
def test_decode_is_zero_copy_and_read_only(wire: str) -> None:
    fmt, _, _, values = FIXED[wire]
    raw = struct.pack("<" + fmt * len(values), *values)
    array = decode_raw(raw, wire, SHAPE, "x", "m")
    assert np.shares_memory(array, np.frombuffer(raw, dtype=np.uint8))
    assert not array.flags.writeable


@pytest.mark.parametrize("wire", FIXED)
def test_encode_fixed_type_round_trip(wire: str) -> None:
    fmt, np_type, _, values = FIXED[wire]
    array = np.array(values, dtype=np_type).reshape(SHAPE)
    raw = encode_raw(array)
    assert raw == struct.pack("<" + fmt * len(values), *values)
    assert np.array_equal(decode_raw(raw, wire, SHAPE, "x", "m"), array)


def test_decode_from_memoryview_slice_is_zero_copy() -> None:
    buffer = b"\xff" * 4 + struct.pack("<3i", 1, -2, 3)
    array = decode_raw(memoryview(buffer)[4:], "INT32", [3], "x", "m")
    assert array.tolist() == [1, -2, 3]
    assert np.shares_memory(array, np.frombuffer(buffer, dtype=np.uint8))


def test_encode_big_endian_array_as_little_endian() -> None:
    array = np.array([1, 0x0102], dtype=">u2")
    assert encode_raw(array) == b"\x01\x00\x02\x01"


def test_encode_non_contiguous_array_row_major() -> None:
    fortran = np.asfortranarray(np.arange(6, dtype=np.int16).reshape(2, 3))
    strided = np.arange(12, dtype=np.int16)[::2]
    assert encode_raw(fortran) == struct.pack("<6h", 0, 1, 2, 3, 4, 5)
    assert encode_raw(strided) == struct.pack("<6h", 0, 2, 4, 6, 8, 10)


@pytest.mark.parametrize(
    ("wire", "shape", "size", "expected"),
    [("FP32", [2, 2], 12, 16), ("FP32", [2, 2], 20, 16), ("INT64", [3], 0, 24), ("UINT8", [0], 1, 0), ("FP16", [1, 4], 4, 8)],
    ids=["short", "long", "empty-data", "empty-shape", "fp16"],
)
def test_byte_size_mismatch_message(wire: str, shape: list[int], size: int, expected: int) -> None:
    message = expect_invalid(decode_raw, b"\x00" * size, wire, shape, "x", "m")
    assert message == f"input byte size mismatch for input 'x' for model 'm'. Expected {expected}, got {size}"


def test_decode_zero_elements() -> None:
    array = decode_raw(b"", "FP32", [0, 4], "x", "m")
    assert array.shape == (0, 4)
    assert array.dtype == np.float32


# --- BYTES -------------------------------------------------------------------------------------

TEXTS = ["", "plain", "é", "日本", "🙂", "a\x00b"]


def test_bytes_round_trip_non_ascii_and_empty() -> None:
    array = np.array(TEXTS, dtype=object).reshape(2, 3)
    raw = encode_raw(array)
    decoded = decode_raw(raw, "BYTES", (2, 3), "x", "m")
    assert decoded.dtype == np.dtype(object)
    assert decoded.shape == (2, 3)
    assert decoded.ravel().tolist() == TEXTS
    assert all(type(element) is str for element in decoded.ravel())


def test_serialize_bytes_wire_format() -> None:
    # 4-byte little-endian length, then the UTF-8 bytes; no terminator.
    assert (
        serialize_bytes(np.array(["é", "", "ab"], dtype=object))
        == b"\x02\x00\x00\x00\xc3\xa9" + b"\x00\x00\x00\x00" + b"\x02\x00\x00\x00ab"
    )


@pytest.mark.parametrize(
    "array",
    [
        np.array(["日本", "x"], dtype=object),
        np.array(["日本".encode(), b"x"], dtype=object),
        np.array(["日本", b"x"], dtype=object),
        np.array(["日本", "x"]),
        np.array(["日本".encode(), b"x"]),
    ],
    ids=["object-str", "object-bytes", "object-mixed", "unicode-dtype", "bytes-dtype"],
)
def test_serialize_bytes_of_str_and_bytes_elements(array: np.ndarray) -> None:
    assert serialize_bytes(array) == encode_elements(["日本".encode(), b"x"])


def test_serialize_bytes_row_major() -> None:
    array = np.array([["a", "b"], ["c", "d"]], dtype=object).T
    assert serialize_bytes(array) == encode_elements([b"a", b"c", b"b", b"d"])


@pytest.mark.parametrize("shape", [(0,), (2, 0), (0, 3)], ids=["0", "2x0", "0x3"])
def test_bytes_zero_elements(shape: tuple[int, ...]) -> None:
    decoded = deserialize_bytes(b"", shape, "x", "m")
    assert decoded.shape == shape
    assert decoded.dtype == np.dtype(object)
    assert serialize_bytes(decoded) == b""


@pytest.mark.parametrize(
    ("count", "shape", "expected"),
    [(1, [2], 2), (3, [2], 2), (1, [0], 0), (0, [1, 1], 1)],
    ids=["too-few", "too-many", "into-empty", "none"],
)
def test_bytes_wrong_element_count(count: int, shape: list[int], expected: int) -> None:
    raw = encode_elements([b"ab"] * count)
    message = expect_invalid(deserialize_bytes, raw, shape, "x", "m")
    assert message == f"unexpected number of string elements {count} for inference input 'x' for model 'm', expecting {expected}"


def test_bytes_truncated_length_prefix() -> None:
    raw = encode_elements([b"ok"]) + b"\x01\x00"
    message = expect_invalid(decode_raw, raw, "BYTES", [2], "x", "m")
    assert message == "input 'x' for model 'm': BYTES element 1 has a truncated 4-byte length prefix"


def test_bytes_length_past_end() -> None:
    raw = struct.pack("<I", 5) + b"abc"
    message = expect_invalid(decode_raw, raw, "BYTES", [1], "x", "m")
    assert message == "input 'x' for model 'm': BYTES element 0 declares 5 bytes but only 3 remain"


@pytest.mark.parametrize(
    "bad", [b"\xc3\x28", b"\xff", b"\xed\xa0\x80", b"\xe6\x97"], ids=["bad-continuation", "ff", "surrogate", "truncated-char"]
)
def test_bytes_invalid_utf8_refused(bad: bytes) -> None:
    message = expect_invalid(decode_raw, encode_elements([b"fine", bad]), "BYTES", [2], "x", "m")
    assert message.startswith("input 'x' for model 'm' holds a BYTES element that is not valid UTF-8 (")
    assert message.endswith("); ONNX Runtime string tensors hold UTF-8 text")


# --- type mappings -----------------------------------------------------------------------------


@pytest.mark.parametrize("wire", FIXED)
def test_numpy_dtype_and_back(wire: str) -> None:
    _, np_type, size, _ = FIXED[wire]
    assert numpy_dtype(wire) == np.dtype(np_type)
    assert numpy_dtype(wire).itemsize == size


def test_bytes_numpy_dtype_is_object() -> None:
    assert numpy_dtype("BYTES") == np.dtype(object)


CONFIG_NAMES = [name for name in mc.DataType.keys() if name != "TYPE_INVALID"]  # noqa: SIM118 (an enum wrapper, not a dict)


@pytest.mark.parametrize("config_name", CONFIG_NAMES)
def test_config_wire_round_trip(config_name: str) -> None:
    wire = config_to_wire(config_name)
    assert wire in WIRE_DATATYPES
    assert wire_to_config(wire) == config_name


def test_string_is_bytes_on_the_wire() -> None:
    assert config_to_wire("TYPE_STRING") == "BYTES"
    assert wire_to_config("BYTES") == "TYPE_STRING"
    assert {config_to_wire(name) for name in CONFIG_NAMES} == WIRE_DATATYPES


def test_bf16_is_a_wire_type_but_not_supported() -> None:
    assert "BF16" in WIRE_DATATYPES
    assert WIRE_DATATYPES - {"BF16"} == SUPPORTED_DATATYPES
    error = bf16_unsupported("x")
    assert error.code is ErrorCode.UNSUPPORTED
    assert error.message.startswith("tensor 'x' has datatype BF16, which ortserve does not support")


@pytest.mark.parametrize(
    ("ort_type", "wire"),
    [
        ("tensor(bool)", "BOOL"),
        ("tensor(uint8)", "UINT8"),
        ("tensor(uint16)", "UINT16"),
        ("tensor(uint32)", "UINT32"),
        ("tensor(uint64)", "UINT64"),
        ("tensor(int8)", "INT8"),
        ("tensor(int16)", "INT16"),
        ("tensor(int32)", "INT32"),
        ("tensor(int64)", "INT64"),
        ("tensor(float16)", "FP16"),
        ("tensor(float)", "FP32"),
        ("tensor(double)", "FP64"),
        ("tensor(string)", "BYTES"),
        ("tensor(bfloat16)", "BF16"),
        ("tensor(float8e4m3fn)", None),
        ("tensor(complex64)", None),
        ("seq(tensor(float))", None),
    ],
)
def test_wire_from_ort_type(ort_type: str, wire: str | None) -> None:
    assert wire_from_ort_type(ort_type) == wire


# --- BYTES decoding without a Python object per element ---------------------------------------


def test_uniform_ascii_strings_decode_to_a_compact_unicode_array() -> None:
    raw = encode_elements([b"ab"] * 100_000)
    array = deserialize_bytes(raw, (100_000,), "x", "m")
    assert array.dtype == np.dtype("<U2")
    assert array.nbytes <= 4 * len(raw)  # the hardening target: BYTES decode <= 4x the wire size
    assert array[0] == "ab" and array[-1] == "ab"


@pytest.mark.parametrize(
    "elements",
    [[b"ab", b"cd"], ["日本".encode(), "中文".encode()], [b"a\x00", b"bc"], [b"", b""], [b"a", b"bc"]],
    ids=["ascii", "non-ascii", "embedded-nul", "empty", "mixed-lengths"],
)
def test_every_bytes_layout_decodes_to_the_same_text(elements: list[bytes]) -> None:
    array = deserialize_bytes(encode_elements(elements), (2,), "x", "m")
    assert [str(v) for v in array.tolist()] == [e.decode("utf-8") for e in elements]


@pytest.mark.parametrize(
    "elements",
    [["ab", "cd"], ["日本", "中文"], ["a\x00", "bc"], ["", ""], ["a", "bc"], [b"ab", b"cd"], ["ab", b"cd"]],
    ids=["ascii", "non-ascii", "embedded-nul", "empty", "mixed-lengths", "bytes", "str-and-bytes"],
)
def test_encoding_takes_the_fast_path_only_where_it_gives_the_same_bytes(elements: list) -> None:
    as_objects = np.empty(len(elements), dtype=object)
    as_objects[:] = elements
    expected = b"".join(
        struct.pack("<I", len(e if isinstance(e, bytes) else e.encode())) + (e if isinstance(e, bytes) else e.encode()) for e in elements
    )
    assert serialize_bytes(as_objects) == expected
    if all(isinstance(e, str) and "\x00" not in e for e in elements):
        assert serialize_bytes(np.array(elements, dtype=str)) == expected
