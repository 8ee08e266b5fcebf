"""Triton's classification extension: an output asked for with ``classification: N`` comes back as
the top N classes of each batch entry, as BYTES strings "value:index" or "value:index:label".

Pure and transport-free: both frontends parse the count (with their protocol's own checks) into
``RequestedOutput.class_count``; the service renders the strings from the computed output.
Values are printed the way Triton's server prints them (C++ ``std::to_string``: six decimals for
floating point, plain digits for integers), so clients that parse them keep working.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from server.errors import ServerError

# Triton ranks only numeric outputs; FP16, BOOL and BYTES are refused with its message.
CLASSIFIABLE_DATATYPES = frozenset({"UINT8", "UINT16", "UINT32", "UINT64", "INT8", "INT16", "INT32", "INT64", "FP32", "FP64"})


def check_classifiable(output_name: str, datatype: str) -> None:
    """Raise INVALID_ARG with Triton's message for an output it cannot rank."""
    if datatype not in CLASSIFIABLE_DATATYPES:
        raise ServerError.invalid_arg(f"class result not available for output due to unsupported type '{datatype}'")


def top_classes(array: np.ndarray, count: int, batched: bool, labels: Sequence[str] = ()) -> np.ndarray:
    """The top ``count`` classes of each batch entry (or of the whole tensor when not batched).

    ``array`` is the output as the client would see it (wire shape). Returns an object array of
    str, shape [batch, k] or [k] with k = min(count, elements per entry). Ties rank the lower index
    first. Never raises for a classifiable dtype.
    """
    rows = array.reshape(array.shape[0], -1) if batched and array.ndim > 0 else array.reshape(1, -1)
    width = rows.shape[1]
    kept = min(count, width)
    # Descending and stable (lower index first among equals) without negating unsigned values:
    # sort the reversed rows ascending, then read the result backwards.
    order = (width - 1 - np.argsort(rows[:, ::-1], axis=1, kind="stable"))[:, ::-1][:, :kept]
    values = np.take_along_axis(rows, order, axis=1)
    floating = rows.dtype.kind == "f"
    result = np.empty(order.shape, dtype=object)
    for r in range(order.shape[0]):
        for c in range(kept):
            index = int(order[r, c])
            value = values[r, c]
            text = f"{float(value):f}:{index}" if floating else f"{int(value)}:{index}"
            label = labels[index] if index < len(labels) else ""
            result[r, c] = f"{text}:{label}" if label else text
    return result if batched and array.ndim > 0 else result.reshape(kept)
