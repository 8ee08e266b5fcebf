"""One request's use of system shared memory: inputs read from regions, outputs written into them.

Inputs and outputs name a region with Triton's parameters ``shared_memory_region``,
``shared_memory_byte_size`` and ``shared_memory_offset``. At submission each input in shared
memory gets a read-only view of its bytes as its raw data (no copy: numpy decodes it in place,
ONNX Runtime reads the mapping), and each output in shared memory a writable view; both are
checked against the region first. The parameters are then removed, so the rest of the core sees
an ordinary raw input. When the response is built, outputs in shared memory are written into
their views and reach the frontends without data.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from server.bytes_codec import serialize_bytes
from server.client_strings import shown
from server.errors import ServerError
from server.service.shared_memory import SharedMemoryRegistry
from server.types import InferOutput, InferRequest, InferResponse, ParameterValue

REGION, BYTE_SIZE, OFFSET = "shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"
SHARED_MEMORY_KEYS = (REGION, BYTE_SIZE, OFFSET)


@dataclass(frozen=True, slots=True)
class SharedMemoryRef:
    region: str
    offset: int
    byte_size: int


def shared_memory_ref(tensor: str, parameters: dict[str, ParameterValue]) -> SharedMemoryRef | None:
    """The region a tensor's parameters name (None when they name none). Raises INVALID_ARG in
    the words of Triton's gRPC frontend for parameters of the wrong type or given alone."""
    region = parameters.get(REGION)
    if region is None:
        for key in (OFFSET, BYTE_SIZE):
            if key in parameters:
                raise ServerError.invalid_arg(f"'{key}' can not be specified without '{REGION}' parameter for tensor '{tensor}'")
        return None
    if not isinstance(region, str):
        raise ServerError.invalid_arg(f"invalid value type for '{REGION}' parameter for tensor '{tensor}', expected string_param.")
    offset = parameters.get(OFFSET, 0)
    if isinstance(offset, bool) or not isinstance(offset, int):
        raise ServerError.invalid_arg(f"invalid value type for '{OFFSET}' parameter for tensor '{tensor}', expected int64_param.")
    if BYTE_SIZE not in parameters:
        raise ServerError.invalid_arg(f"'{BYTE_SIZE}' must be specified along with '{REGION}' parameter for tensor '{tensor}'")
    byte_size = parameters[BYTE_SIZE]
    if isinstance(byte_size, bool) or not isinstance(byte_size, int):
        raise ServerError.invalid_arg(f"invalid value type for '{BYTE_SIZE}' parameter for tensor '{tensor}', expected int64_param.")
    return SharedMemoryRef(region, offset, byte_size)


def _without_placement(parameters: dict[str, ParameterValue]) -> dict[str, ParameterValue]:
    return {key: value for key, value in parameters.items() if key not in SHARED_MEMORY_KEYS}


class SharedMemoryOutputs:
    """Where a request's outputs in shared memory go: output name → (writable view, its reference)."""

    __slots__ = ("destinations",)

    def __init__(self, destinations: dict[str, tuple[memoryview, SharedMemoryRef]]) -> None:
        self.destinations = destinations

    def write(self, response: InferResponse) -> None:
        """Copy each output bound for shared memory into its region; they stay in the response
        with their datatype and shape but no data.

        Raises INTERNAL (Triton's words) when a region is smaller than its output.
        """
        for index, output in enumerate(response.outputs):
            destination = self.destinations.get(output.name)
            if destination is not None:
                response.outputs[index] = _write(output, *destination)


def _write(output: InferOutput, view: memoryview, ref: SharedMemoryRef) -> InferOutput:
    array = output.array
    text = array.dtype.kind in "OUS"
    data = serialize_bytes(array) if text else None
    size = len(data) if data is not None else array.nbytes
    if size > ref.byte_size:
        raise ServerError.internal(
            f"shared memory size specified with the request for output '{output.name}' ({ref.byte_size} bytes) "
            f"should be at least {size} bytes to hold the results"
        )
    if data is not None:
        view[:size] = data
    else:  # one copy, straight from the output into the region, little-endian as on the wire
        target = np.ndarray(array.shape, dtype=array.dtype.newbyteorder("<"), buffer=view[:size])
        np.copyto(target, array)
    return InferOutput(output.name, output.datatype, output.shape, np.empty(0, dtype=array.dtype), in_shared_memory=True)


def attach_shared_memory(registry: SharedMemoryRegistry, request: InferRequest) -> SharedMemoryOutputs | None:
    """Resolve the request's tensors in shared memory (see the module docstring); returns where
    its outputs go (None when none goes to shared memory).

    Raises ServerError: UNSUPPORTED when the extension is off, NOT_FOUND for an unknown region,
    INVALID_ARG for bad parameters or an offset or size outside the region.
    """
    if not any(item.parameters for item in request.inputs) and not any(output.parameters for output in request.outputs):
        return None
    for item in request.inputs:
        ref = shared_memory_ref(item.name, item.parameters) if item.parameters else None
        if ref is None:
            continue
        if item.raw is not None or item.decode is not None or item.array is not None:
            raise ServerError.invalid_arg(
                f"unexpected 'content' provided when using shared memory for input tensor '{item.name}' "
                f"for model {shown(request.model_name)}"
            )
        item.raw = registry.view(ref.region, ref.offset, ref.byte_size).toreadonly()
        item.parameters = _without_placement(item.parameters)
    destinations: dict[str, tuple[memoryview, SharedMemoryRef]] = {}
    for output in request.outputs:
        ref = shared_memory_ref(output.name, output.parameters) if output.parameters else None
        if ref is None:
            continue
        if output.class_count:
            raise ServerError.invalid_arg("output can't set both 'shared_memory_region' and 'classification'")
        destinations[output.name] = (registry.view(ref.region, ref.offset, ref.byte_size), ref)
        output.parameters = _without_placement(output.parameters)
    return SharedMemoryOutputs(destinations) if destinations else None
