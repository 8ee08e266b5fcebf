"""KServe v2 JSON ``data`` ⇄ numpy arrays, for every datatype ortserve carries.

``data`` may be flat or nested (row-major either way); only the element count has to match the
shape, as Triton accepts. Elements must have the datatype's JSON kind: numbers for numeric types
(integers only, within range, for integer types), true/false for BOOL, strings for BYTES. numpy
would silently truncate 1.5 to 1 or parse "1.5" as a float; we refuse both. One leniency stays, as
checking it would cost a Python-level pass over every element: true/false among integers read as 1/0.
"""

from __future__ import annotations

from math import prod
from typing import Any

import numpy as np

from server.datatypes import WIRE_DATATYPES, bf16_unsupported, numpy_dtype
from server.errors import ServerError

# The numpy kinds (of the array numpy infers from the JSON) each datatype accepts.
_INTEGER_KINDS = frozenset("iu")
_NUMBER_KINDS = frozenset("iuf")


def array_from_data(data: Any, datatype: str, shape: tuple[int, ...], name: str, model: str) -> np.ndarray:
    """The input's array, reshaped to ``shape``. Raises ServerError(INVALID_ARG) for a bad ``data``."""
    if datatype not in WIRE_DATATYPES:
        raise ServerError.invalid_arg(f"input '{name}' for model '{model}': datatype '{datatype}' is not a known datatype")
    if datatype == "BF16":
        raise bf16_unsupported(name)
    if _nesting(data) > MAX_NESTING:
        raise _bad_data(name, model, datatype, f"its lists are nested more than {MAX_NESTING} deep")
    array = _bytes_array(data, name, model) if datatype == "BYTES" else _numeric_array(data, datatype, name, model)
    expected = prod(shape)
    if array.size != expected:
        raise ServerError.invalid_arg(
            f"unexpected number of elements {array.size} in 'data' of input '{name}' for model '{model}', "
            f"expecting {expected} for shape {list(shape)}"
        )
    return array.reshape(shape)


# numpy builds arrays from nested lists up to 32 levels deep (object arrays); deeper is refused here.
MAX_NESTING = 32


def _nesting(data: Any) -> int:
    """How deep the first elements nest (flat data is 1, a scalar 0): cheap, and enough to refuse
    data nested past what numpy can build before it tries."""
    depth = 0
    while isinstance(data, list):
        depth += 1
        if not data:
            break
        data = data[0]
    return depth


def _numeric_array(data: Any, datatype: str, name: str, model: str) -> np.ndarray:
    try:
        inferred = np.asarray(data)
    except ValueError:
        raise _bad_data(name, model, datatype, "its nested lists are ragged") from None
    if inferred.size == 0:
        return inferred.astype(numpy_dtype(datatype))
    target = numpy_dtype(datatype)
    kind = inferred.dtype.kind
    if datatype == "BOOL":
        if kind != "b":
            raise _bad_data(name, model, datatype, "expected true or false elements")
    elif target.kind in _INTEGER_KINDS:
        if kind not in _INTEGER_KINDS:
            return _python_ints(data, target, datatype, name, model)
        info = np.iinfo(target)
        if inferred.min() < info.min or inferred.max() > info.max:
            raise _out_of_range(name, model, datatype, target)
    elif kind not in _NUMBER_KINDS:
        raise _bad_data(name, model, datatype, "expected number elements")
    return inferred.astype(target, copy=False)


def _python_ints(data: Any, target: np.dtype, datatype: str, name: str, model: str) -> np.ndarray:
    """The slow path for integers numpy did not infer as such: UINT64 values above 2^63 next to
    small ones (numpy infers float64 and would round them), or elements that are not integers."""
    elements = np.asarray(data, dtype=object)
    if not all(type(element) is int for element in elements.flat):
        raise _bad_data(name, model, datatype, "expected integer elements")
    try:
        return np.array(elements.tolist(), dtype=target)
    except OverflowError:
        raise _out_of_range(name, model, datatype, target) from None


def _out_of_range(name: str, model: str, datatype: str, target: np.dtype) -> ServerError:
    info = np.iinfo(target)
    return _bad_data(name, model, datatype, f"an element is outside [{info.min}, {info.max}]")


def _bytes_array(data: Any, name: str, model: str) -> np.ndarray:
    try:
        array = np.asarray(data if isinstance(data, list) else [data], dtype=object)
    except ValueError:
        raise _bad_data(name, model, "BYTES", "its nested lists are ragged") from None
    # A ragged list or a non-string element shows up here as a non-str object.
    if not all(type(element) is str for element in array.flat):
        raise _bad_data(name, model, "BYTES", "expected string elements in regular nested lists")
    return array


def _bad_data(name: str, model: str, datatype: str, reason: str) -> ServerError:
    return ServerError.invalid_arg(f"unable to parse 'data' of input '{name}' for model '{model}' as {datatype}: {reason}")


def data_from_array(array: np.ndarray, name: str) -> np.ndarray | list[Any]:
    """Flat, row-major ``data`` for an output: numeric arrays as they are (orjson renders them), BYTES as str.

    Raises ServerError(INVALID_ARG) for BYTES elements that are not UTF-8 text (JSON strings are text).
    """
    flat = np.ascontiguousarray(array).reshape(-1)
    if flat.dtype == np.float16:
        # orjson writes FP16 through FP32's shortest text (0.1 → 0.099975586); as FP64 the text is exact.
        return flat.astype(np.float64)
    if flat.dtype.kind not in ("O", "U", "S"):
        return flat.astype(flat.dtype.newbyteorder("="), copy=False)
    try:
        return [element if isinstance(element, str) else bytes(element).decode("utf-8") for element in flat]
    except UnicodeDecodeError:
        raise ServerError.invalid_arg(
            f"output '{name}' holds BYTES that are not valid UTF-8 and cannot be sent as JSON; request it with binary_data"
        ) from None
