"""Requests and responses as small descriptors, their tensors in an arena.

A request's (or response's) tensors go into ONE block of the sender's arena, each at an aligned
start; the descriptor names the block and each tensor's place in it, and carries every other
field of the value as it is (the fields are read from the dataclasses, so a field added to
``InferRequest`` or ``InferOutput`` travels without a change here, if it pickles).

The receiver's arrays view the block without copying, and all of them hang off one ``owner``
array: when the last of them is gone, ``weakref.finalize`` tells the sender the block is free.
That holds however long the core keeps an array (a job that was cancelled while ONNX Runtime
ran it, say), so a block is never reused under a reader.

Tensor data in a descriptor, by form:
- ``("raw", start, nbytes)``: wire bytes (InferInput.raw);
- ``("array", start, dtype, shape)``: an ndarray of fixed-size items;
- ``("value", obj)``: pickled with the descriptor: object arrays (BYTES as Python objects), and
  any tensor when the arena has no room (the one copy through the socket);
- ``("error", wire_error)``: an input whose frontend-side decoding failed; the core raises it
  when it decodes that input, in the order it would have in one process;
- ``None``: no data (an input in shared memory, which the core refuses as such).
"""

from __future__ import annotations

import functools
import math
import weakref
from collections.abc import Callable
from dataclasses import fields
from typing import Any

import numpy as np

from server.errors import ServerError
from server.remote.arena import ALIGN, Arena, RingAllocator
from server.remote.wire_errors import error_from_wire, error_to_wire
from server.types import InferInput, InferOutput, InferRequest, InferResponse

_DATA_FIELDS = ("raw", "array", "decode")
_REQUEST_FIELDS = tuple(f.name for f in fields(InferRequest) if f.name != "inputs")
_INPUT_FIELDS = tuple(f.name for f in fields(InferInput) if f.name not in _DATA_FIELDS)
# A response's trace stays in the engine, which finishes it when the response leaves for the frontend.
_RESPONSE_FIELDS = tuple(f.name for f in fields(InferResponse) if f.name not in ("outputs", "trace"))
_OUTPUT_FIELDS = tuple(f.name for f in fields(InferOutput) if f.name != "array")

Descriptor = tuple[Any, ...]
# (block offset, block size) in the sender's arena, or None when nothing went there.
Block = tuple[int, int] | None


class ArenaWriter:
    """The sending side of an arena: allocates blocks and fills them."""

    def __init__(self, arena: Arena) -> None:
        self.arena = arena
        self.allocator = RingAllocator(arena.size)

    def free(self, offset: int) -> None:
        self.allocator.free(offset)


def _aligned(size: int) -> int:
    return -(-size // ALIGN) * ALIGN


def _place(payloads: list[np.ndarray | None], writer: ArenaWriter) -> tuple[Block, list[int]]:
    """One block for every payload that fits (or none at all); each one's start in it."""
    starts, total = [], 0
    for payload in payloads:
        starts.append(total)
        total += _aligned(payload.nbytes) if payload is not None else 0
    offset = writer.allocator.allocate(total) if total else None
    if offset is None:
        return None, starts
    region = writer.arena.region(offset, total)
    for payload, start in zip(payloads, starts):
        if payload is not None:
            region[start : start + payload.nbytes] = payload.reshape(-1).view(np.uint8)
    return (offset, total), starts


def _fixed_bytes(array: np.ndarray) -> np.ndarray | None:
    """The array's bytes as uint8, or None for an object array (pickled instead)."""
    if array.dtype.hasobject:
        return None
    return np.ascontiguousarray(array).reshape(-1).view(np.uint8)


# ---- requests (frontend → engine) -----------------------------------------------------------


def _input_payload(item: InferInput) -> tuple[np.ndarray | None, Any]:
    """(bytes to place in the block, or None; the form if placed / the data if not)."""
    if item.raw is not None:
        return np.frombuffer(item.raw, dtype=np.uint8), "raw"
    array = item.array
    if array is None and item.decode is not None:
        try:
            array = item.decode()
        except ServerError as error:
            return None, ("error", error_to_wire(error))
    if array is None:
        return None, None
    data = _fixed_bytes(array)
    return (data, ("array", array.dtype.str, array.shape)) if data is not None else (None, ("value", array))


def pack_request(request: InferRequest, writer: ArenaWriter) -> tuple[Descriptor, Block]:
    """Frontend side: the request as a descriptor, its tensors in one block of ``writer``'s
    arena (free it when the engine releases it). Inputs decoded here (typed gRPC contents,
    JSON data) are decoded before the engine admits the request."""
    forms = [_input_payload(item) for item in request.inputs]
    block, starts = _place([payload for payload, _ in forms], writer)
    inputs = []
    for item, (payload, form), start in zip(request.inputs, forms, starts):
        if payload is None:
            data = form
        elif block is None:  # no room: the one copy through the socket
            data = ("value", bytes(payload) if form == "raw" else payload.view(np.dtype(form[1])).reshape(form[2]))
        elif form == "raw":
            data = ("raw", start, payload.nbytes)
        else:
            data = ("array", start, form[1], form[2])
        inputs.append((tuple(getattr(item, name) for name in _INPUT_FIELDS), data))
    return (tuple(getattr(request, name) for name in _REQUEST_FIELDS), inputs, block), block


def _raise(error: ServerError) -> np.ndarray:
    raise error


def unpack_request(descriptor: Descriptor, arena: Arena, released: Callable[[int], None]) -> InferRequest:
    """Engine side: the request, its tensors viewing ``arena``; ``released(offset)`` is called
    (on whichever thread drops the last view) once nothing refers to its block any more."""
    plain, inputs, block = descriptor
    owner = _owner(arena, block, released)
    items = []
    for values, data in inputs:
        item = InferInput(**dict(zip(_INPUT_FIELDS, values)))
        if data is not None:
            form = data[0]
            if form == "raw":
                assert owner is not None
                item.raw = memoryview(owner[data[1] : data[1] + data[2]])  # type: ignore[arg-type]  # ndarray exports a buffer
            elif form == "array":
                item.array = _array_view(owner, data[1], data[2], data[3])
            elif form == "value":
                item.raw, item.array = (data[1], None) if isinstance(data[1], bytes) else (None, data[1])
            else:
                item.decode = functools.partial(_raise, error_from_wire(data[1]))
        items.append(item)
    return InferRequest(inputs=items, **dict(zip(_REQUEST_FIELDS, plain)))


def _owner(arena: Arena, block: Block, released: Callable[[int], None]) -> np.ndarray | None:
    if block is None:
        return None
    offset, size = block
    owner = np.frombuffer(arena.mapping, dtype=np.uint8, count=size, offset=offset)
    weakref.finalize(owner, released, offset)
    return owner


def _array_view(owner: np.ndarray | None, start: int, dtype: str, shape: tuple[int, ...]) -> np.ndarray:
    assert owner is not None
    kind = np.dtype(dtype)
    return owner[start : start + math.prod(shape) * kind.itemsize].view(kind).reshape(shape)


# ---- responses (engine → frontend) ----------------------------------------------------------


def pack_response(response: InferResponse, writer: ArenaWriter) -> tuple[Descriptor, Block]:
    """Engine side: the response as a descriptor, its outputs in one block of ``writer``'s arena."""
    payloads = [_fixed_bytes(output.array) for output in response.outputs]
    block, starts = _place(payloads, writer)
    outputs = []
    for output, payload, start in zip(response.outputs, payloads, starts):
        values = tuple(getattr(output, name) for name in _OUTPUT_FIELDS)
        array = output.array
        placed = payload is not None and block is not None
        outputs.append((values, ("array", start, array.dtype.str, array.shape) if placed else ("value", array)))
    return (tuple(getattr(response, name) for name in _RESPONSE_FIELDS), outputs, block), block


def unpack_response(descriptor: Descriptor, arena: Arena, released: Callable[[int], None]) -> InferResponse:
    """Frontend side: the response, its arrays viewing ``arena`` until they are all gone."""
    plain, outputs, block = descriptor
    owner = _owner(arena, block, released)
    items = []
    for values, data in outputs:
        array = _array_view(owner, data[1], data[2], data[3]) if data[0] == "array" else data[1]
        items.append(InferOutput(array=array, **dict(zip(_OUTPUT_FIELDS, values))))
    return InferResponse(outputs=items, **dict(zip(_RESPONSE_FIELDS, plain)))
