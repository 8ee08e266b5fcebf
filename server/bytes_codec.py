"""BYTES tensors on the wire: each element a 4-byte little-endian length, then that many bytes.

ONNX Runtime string tensors hold UTF-8 text. Decoding and encoding take a vectorised path when
every element has one length and is ASCII without NUL (the common case: ids, tokens, labels) and
fall back to one Python object per element otherwise.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from math import prod

import numpy as np

from server.errors import ServerError

_LENGTH_PREFIX = struct.Struct("<I")


def deserialize_bytes(raw: bytes | bytearray | memoryview, shape: Sequence[int], tensor_name: str, model_name: str) -> np.ndarray:
    """Decode length-prefixed BYTES elements into text ONNX Runtime takes: a fixed-width unicode
    array when every element has the same length and is ASCII without NUL (the usual case,
    decoded without a Python object per element: about 1.3x the wire size for 2-byte strings),
    else an object array of ``str``. Stops as soon as the elements do not match ``shape``.
    """
    expected_count = prod(shape)
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
    flat = array.ravel(order="C")
    uniform = _uniform_ascii_bytes(flat)
    if uniform is not None:
        return uniform
    parts: list[bytes] = []
    for element in flat:
        # bytes as they are; str or any other object as its UTF-8 text (tritonclient does the same)
        raw_types = bytes | bytearray | memoryview | np.bytes_
        data = bytes(element) if isinstance(element, raw_types) else str(element).encode("utf-8")
        parts.append(_LENGTH_PREFIX.pack(len(data)))
        parts.append(data)
    return b"".join(parts)


def _uniform_ascii_bytes(flat: np.ndarray) -> bytes | None:
    """The encoding of str elements that all have one length and are ASCII, built with numpy
    (None when they are not like that): ONNX Runtime hands string outputs back as an object array
    of str, and one Python bytes object per element would cost ~10x the payload."""
    if flat.size == 0 or flat.dtype.kind not in ("U", "O"):
        return None
    if flat.dtype.kind == "O":
        first = flat[0]
        if type(first) is not str or not all(type(element) is str and len(element) == len(first) for element in flat):
            return None
        text = flat.astype(f"<U{max(len(first), 1)}")
        length = len(first)
    else:
        text = flat
        lengths = np.char.str_len(text)
        length = int(lengths[0])
        if not (lengths == length).all():
            return None
    if length == 0:
        return _LENGTH_PREFIX.pack(0) * flat.size
    codes = text.view(np.uint32).reshape(flat.size, -1)[:, :length]
    # A code point 0 would have been dropped from a unicode array's end: only then the object
    # elements' own lengths (checked above) and the codes could disagree, so refuse NUL too.
    if codes.min() == 0 or codes.max() >= 0x80:
        return None
    out = np.empty((flat.size, 4 + length), dtype=np.uint8)
    out[:, :4] = np.frombuffer(_LENGTH_PREFIX.pack(length), dtype=np.uint8)
    out[:, 4:] = codes
    return out.tobytes()
