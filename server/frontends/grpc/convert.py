"""Protobuf ⇄ transport-free types for the gRPC frontend. No validation beyond the wire format."""

from __future__ import annotations

import functools
from collections.abc import Sequence
from math import prod
from typing import Any

import numpy as np

from server.datatypes import WIRE_DATATYPES, encode_raw, numpy_dtype
from server.errors import ServerError
from server.proto import grpc_service_pb2 as pb
from server.types import (
    Duration,
    InferInput,
    InferRequest,
    InferResponse,
    ModelIndexEntry,
    ModelMetadata,
    ModelStatistics,
    ParameterValue,
    RequestedOutput,
    ServerMetadata,
    SharedMemoryRegion,
    TensorMetadata,
)

# gRPC messages are capped at 2^31-1 bytes (Triton's limit too).
MAX_MESSAGE_BYTES = 2**31 - 1

# An input parameter naming a shared-memory region: such an input has no raw_input_contents entry.
_SHARED_MEMORY_REGION = "shared_memory_region"

# Which InferTensorContents field carries each datatype (FP16/BF16 have none: raw only).
_CONTENTS_FIELD = {
    "BOOL": "bool_contents",
    "INT8": "int_contents",
    "INT16": "int_contents",
    "INT32": "int_contents",
    "INT64": "int64_contents",
    "UINT8": "uint_contents",
    "UINT16": "uint_contents",
    "UINT32": "uint_contents",
    "UINT64": "uint64_contents",
    "FP32": "fp32_contents",
    "FP64": "fp64_contents",
    "BYTES": "bytes_contents",
}

# Each contents field's own element type: its values always fit it, so reading them cannot overflow.
_FIELD_DTYPE = {
    "bool_contents": np.dtype(np.bool_),
    "int_contents": np.dtype(np.int32),
    "int64_contents": np.dtype(np.int64),
    "uint_contents": np.dtype(np.uint32),
    "uint64_contents": np.dtype(np.uint64),
    "fp32_contents": np.dtype(np.float32),
    "fp64_contents": np.dtype(np.float64),
}


def parameters_from_pb(parameters: object) -> dict[str, ParameterValue]:
    """A protobuf map<string, InferParameter> as plain Python values."""
    result: dict[str, ParameterValue] = {}
    for key, value in parameters.items():  # type: ignore[attr-defined]
        kind = value.WhichOneof("parameter_choice")
        result[key] = getattr(value, kind) if kind else ""
    return result


def request_from_pb(message: pb.ModelInferRequest, deadline: float | None) -> InferRequest:
    """Raises INVALID_ARG when raw and typed contents are mixed or counts do not match.

    Raw entries belong, in order, to the inputs that are not in shared memory: tritonclient's
    ``set_shared_memory`` sends no entry for such an input (Triton maps them the same way); the
    core reads its data from the region its parameters name.

    This runs for every request, so it touches each protobuf field once (upb builds a Python
    object per access) and builds nothing it does not return.
    """
    model_name = message.model_name
    tensors = message.inputs
    inputs: list[InferInput] = []
    in_shared_memory = False
    for tensor in tensors:
        params = tensor.parameters
        if params:
            in_shared_memory = in_shared_memory or _SHARED_MEMORY_REGION in params
            inputs.append(InferInput(tensor.name, tensor.datatype, tuple(tensor.shape), None, None, parameters_from_pb(params)))
        else:
            inputs.append(InferInput(tensor.name, tensor.datatype, tuple(tensor.shape)))
    raw = message.raw_input_contents
    if raw:
        if len(raw) != len(inputs) or in_shared_memory:
            _attach_raw_by_position(message, inputs, list(raw))
        else:
            for item, data in zip(inputs, raw):
                item.raw = data
    size = sum(len(item.raw) for item in inputs if item.raw is not None)
    for item, tensor in zip(inputs, tensors):
        if tensor.HasField("contents"):
            if _SHARED_MEMORY_REGION in item.parameters:
                raise ServerError.invalid_arg(
                    f"unexpected 'content' provided when using shared memory for input tensor '{item.name}' for model '{model_name}'"
                )
            if item.raw is not None:
                raise ServerError.invalid_arg(
                    f"contents field must not be specified when using raw_input_contents for '{item.name}' for model '{model_name}'"
                )
            # Decoded by the core once the request is validated and admitted.
            item.decode = functools.partial(_array_from_contents, tensor, model_name)
            size += _contents_size(tensor)
    outputs = [_requested_output(o) if o.parameters else RequestedOutput(o.name) for o in message.outputs]
    params = message.parameters
    return InferRequest(
        model_name, message.model_version, message.id, inputs, outputs, parameters_from_pb(params) if params else {}, deadline, size
    )


def _contents_size(tensor: pb.ModelInferRequest.InferInputTensor) -> int:
    """Typed contents' size for the in-flight budget, at 8 bytes an element (their widest wire form)."""
    field = _CONTENTS_FIELD.get(tensor.datatype)
    return 8 * len(getattr(tensor.contents, field)) if field else 0


def _requested_output(tensor: pb.ModelInferRequest.InferRequestedOutputTensor) -> RequestedOutput:
    """An output with parameters; ``classification`` must be a positive int64_param (Triton's rule)."""
    parameters = parameters_from_pb(tensor.parameters)
    if "classification" not in tensor.parameters:
        return RequestedOutput(tensor.name, parameters)
    if tensor.parameters["classification"].WhichOneof("parameter_choice") != "int64_param":
        raise ServerError.invalid_arg("invalid value type for 'classification' parameter, expected int64_param")
    count = parameters.pop("classification")
    if not isinstance(count, int) or count <= 0:
        raise ServerError.invalid_arg("invalid value for 'classification' parameter, expected >= 0")
    if _SHARED_MEMORY_REGION in parameters:
        raise ServerError.invalid_arg("output can't set both 'shared_memory_region' and 'classification'")
    return RequestedOutput(tensor.name, parameters, class_count=count)


def _attach_raw_by_position(message: pb.ModelInferRequest, inputs: list[InferInput], raw: list[bytes]) -> None:
    """Give raw entries to the inputs not in shared memory, in order; INVALID_ARG if counts differ."""
    with_raw = [item for item in inputs if _SHARED_MEMORY_REGION not in item.parameters]
    if len(raw) != len(with_raw):
        raise ServerError.invalid_arg(
            f"expected {len(with_raw)} raw_input_contents entries (one per input) but got {len(raw)} for model '{message.model_name}'"
        )
    for item, data in zip(with_raw, raw):
        item.raw = data


def _array_from_contents(tensor: pb.ModelInferRequest.InferInputTensor, model_name: str) -> np.ndarray:
    field = _CONTENTS_FIELD.get(tensor.datatype)
    if field is None:
        known = tensor.datatype in WIRE_DATATYPES
        reason = "has no typed contents field; send it in raw_input_contents" if known else "is not a known datatype"
        raise ServerError.invalid_arg(f"input '{tensor.name}' for model '{model_name}': datatype '{tensor.datatype}' {reason}")
    values = getattr(tensor.contents, field)
    expected = prod(tensor.shape)  # Python ints: a claimed [2**32, 2**32] must not wrap to 0
    if len(values) != expected:
        raise ServerError.invalid_arg(
            f"unexpected number of elements {len(values)} in contents of input '{tensor.name}' for model "
            f"'{model_name}', expecting {expected} for shape {list(tensor.shape)}"
        )
    if tensor.datatype == "BYTES":
        return _utf8_array(values, tensor.name, model_name).reshape(tuple(tensor.shape))
    array = np.array(values, dtype=_FIELD_DTYPE[field])
    dtype = numpy_dtype(tensor.datatype)
    if not _fits(array, dtype):  # e.g. 300 in int_contents of an INT8 input: the client's error, not ours
        raise ServerError.invalid_arg(
            f"input '{tensor.name}' for model '{model_name}': a value in {field} is out of range for datatype '{tensor.datatype}'"
        )
    return array.astype(dtype, copy=False).reshape(tuple(tensor.shape))


def _fits(values: np.ndarray, dtype: np.dtype) -> bool:
    """Whether every integer in ``values`` fits ``dtype``. Checked here, not left to the conversion:
    protobuf 7's repeated fields convert themselves to numpy, and then a cast wraps 300 to 44."""
    if values.size == 0 or dtype.kind not in "iu" or values.dtype == dtype:
        return True
    bounds = np.iinfo(dtype)
    return int(values.min()) >= bounds.min and int(values.max()) <= bounds.max


def _utf8_array(values: Sequence[bytes], name: str, model_name: str) -> np.ndarray:
    array = np.empty(len(values), dtype=object)
    try:
        array[:] = [bytes(v).decode("utf-8") for v in values]
    except UnicodeDecodeError:
        raise ServerError.invalid_arg(
            f"input '{name}' for model '{model_name}' holds a BYTES element that is not valid UTF-8; "
            "ONNX Runtime string tensors hold UTF-8 text"
        ) from None
    return array


def response_to_pb(response: InferResponse) -> pb.ModelInferResponse:
    """Outputs always go in raw_output_contents, one entry per output in order (what clients read).

    Raises INVALID_ARG when the response would exceed gRPC's 2 GiB message limit.
    """
    # An output written into shared memory still has its entry, empty (Triton's layout).
    raw = [b"" if output.in_shared_memory else encode_raw(output.array) for output in response.outputs]
    size = sum(len(r) for r in raw)
    if size > MAX_MESSAGE_BYTES:
        raise ServerError.invalid_arg(f"Response has byte size {size} which exceeds gRPC's byte size limit {MAX_MESSAGE_BYTES}.")
    return pb.ModelInferResponse(
        model_name=response.model_name,
        model_version=response.model_version,
        id=response.id,
        outputs=[pb.ModelInferResponse.InferOutputTensor(name=o.name, datatype=o.datatype, shape=o.shape) for o in response.outputs],
        raw_output_contents=raw,
    )


def shared_memory_status_to_pb(regions: list[SharedMemoryRegion]) -> pb.SystemSharedMemoryStatusResponse:
    response = pb.SystemSharedMemoryStatusResponse()
    for region in regions:
        status = response.regions[region.name]
        status.name, status.key, status.offset, status.byte_size = region.name, region.key, region.offset, region.byte_size
    return response


def server_metadata_to_pb(metadata: ServerMetadata) -> pb.ServerMetadataResponse:
    return pb.ServerMetadataResponse(name=metadata.name, version=metadata.version, extensions=metadata.extensions)


def model_metadata_to_pb(metadata: ModelMetadata) -> pb.ModelMetadataResponse:
    def tensors(items: tuple[TensorMetadata, ...]) -> list[pb.ModelMetadataResponse.TensorMetadata]:
        return [pb.ModelMetadataResponse.TensorMetadata(name=t.name, datatype=t.datatype, shape=t.shape) for t in items]

    return pb.ModelMetadataResponse(
        name=metadata.name,
        versions=metadata.versions,
        platform=metadata.platform,
        inputs=tensors(metadata.inputs),
        outputs=tensors(metadata.outputs),
    )


def index_to_pb(entries: list[ModelIndexEntry]) -> pb.RepositoryIndexResponse:
    return pb.RepositoryIndexResponse(
        models=[
            pb.RepositoryIndexResponse.ModelIndex(name=e.name, version=e.version, state=e.state.value, reason=e.reason) for e in entries
        ]
    )


def _duration(stat: Duration) -> pb.StatisticDuration:
    return pb.StatisticDuration(count=stat.count, ns=stat.ns)


def statistics_to_pb(versions: list[ModelStatistics]) -> pb.ModelStatisticsResponse:
    return pb.ModelStatisticsResponse(model_stats=[_version_statistics(s) for s in versions])


def _version_statistics(stats: ModelStatistics) -> pb.ModelStatistics:
    return pb.ModelStatistics(
        name=stats.name,
        version=stats.version,
        last_inference=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        inference_stats=pb.InferStatistics(
            success=_duration(stats.success),
            fail=_duration(stats.fail),
            queue=_duration(stats.queue),
            compute_input=_duration(stats.compute_input),
            compute_infer=_duration(stats.compute_infer),
            compute_output=_duration(stats.compute_output),
            cache_hit=_duration(stats.cache_hit),
            cache_miss=_duration(stats.cache_miss),
        ),
        batch_stats=[
            pb.InferBatchStatistics(
                batch_size=batch.batch_size,
                compute_input=_duration(batch.compute_input),
                compute_infer=_duration(batch.compute_infer),
                compute_output=_duration(batch.compute_output),
            )
            for batch in stats.batch_stats
        ],
    )


def load_parameters_from_pb(parameters: Any) -> dict[str, str | bytes]:
    """RepositoryModelLoad parameters as plain values, after gRPC's own type checks (Triton's
    words); which keys mean what is the core's business (service/load_request.py)."""
    values: dict[str, str | bytes] = {}
    for key, value in parameters.items():
        kind = value.WhichOneof("parameter_choice")
        if key == "config":
            if kind != "string_param":
                raise ServerError.invalid_arg("invalid value type for load parameter 'config', expected string_param.")
            values[key] = value.string_param
        elif key.startswith("file:"):
            if kind != "bytes_param":
                raise ServerError.invalid_arg(f"invalid value type for load parameter '{key}', expected bytes_param.")
            values[key] = value.bytes_param
        else:  # the core refuses it by name
            values[key] = ""
    return values
