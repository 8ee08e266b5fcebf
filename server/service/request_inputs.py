"""Check a request against a model version's spec and turn its inputs into ORT feeds.

Messages follow Triton's wording (reference section 6), prefixed with the request id as
Triton's core does, so clients that match on them keep working.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass
from math import prod

import numpy as np

from server.client_strings import MAX_REQUEST_ID_CHARS, check_client_string
from server.datatypes import FIXED_SIZE_DATATYPES, SUPPORTED_DATATYPES, bf16_unsupported, decode_raw, element_size
from server.errors import ErrorCode, ServerError
from server.model_config.signature import format_dims
from server.model_config.spec import ModelSpec, TensorSpec
from server.service.classification import check_classifiable
from server.types import InferInput, InferRequest

_BATCH_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be "
    "prepended to each input shape. If you want to specify the full shape including the batch dim "
    "in your input dims config, try setting max_batch_size to zero. See the model configuration "
    "docs for more info on max_batch_size."
)


def check_request_strings(request: InferRequest) -> None:
    """Refuse (INVALID_ARG) an id or tensor/parameter name that is too long or unprintable, before
    any message echoes it. The model name is checked by the lookup."""
    if request.id:
        check_client_string("request id", request.id, MAX_REQUEST_ID_CHARS)
    for item in request.inputs:
        check_client_string("input name", item.name)
    for output in request.outputs:
        check_client_string("output name", output.name)
    for key in request.parameters:
        check_client_string("parameter name", key)


def request_prefix(request: InferRequest) -> str:
    return f"[request id: {request.id or '<id_unknown>'}] "


# A bound on remembered request signatures per model version (shapes vary with dynamic dims).
_MAX_REMEMBERED_SIGNATURES = 1024


@dataclass(frozen=True, slots=True)
class FeedPlan:
    """How to turn requests of one validated signature into feeds, and how they batch."""

    batch_size: int
    # (position in request.inputs, tensor spec), in the model's input order.
    order: tuple[tuple[int, TensorSpec], ...]
    # Each non-ragged feed's name and non-batch dims: requests batch together only when these match.
    shape_key: Hashable
    # The request shapes (batch dim included) of the inputs that batch inputs are computed from.
    source_shapes: dict[str, tuple[int, ...]]


def prepare_inputs(spec: ModelSpec, request: InferRequest) -> tuple[dict[str, np.ndarray], FeedPlan]:
    """``validate_inputs`` then ``decode_inputs``: the feeds and the plan."""
    plan = validate_inputs(spec, request)
    return decode_inputs(spec, request, plan), plan


def validate_inputs(spec: ModelSpec, request: InferRequest) -> FeedPlan:
    """The request's validated plan (batch size, batching key), one per request signature; no
    tensor data is read, so a request that cannot be served costs no decoding.

    Raises ServerError(INVALID_ARG/UNSUPPORTED) for anything the model cannot take.
    """
    signature = tuple((item.name, item.datatype, item.shape, not item.parameters) for item in request.inputs)
    plan: FeedPlan | None = spec.input_plans.get(signature)
    if plan is not None:
        return plan
    try:
        _check_known_inputs(spec, request)
        plan = _validate(spec, request)
    except _UnprefixedError as error:
        raise ServerError(error.code, error.message) from None
    except ServerError as error:
        raise ServerError(error.code, request_prefix(request) + error.message) from None
    if len(spec.input_plans) < _MAX_REMEMBERED_SIGNATURES and all(not item.parameters for item in request.inputs):
        spec.input_plans[signature] = plan
    return plan


def decode_inputs(spec: ModelSpec, request: InferRequest, plan: FeedPlan) -> dict[str, np.ndarray]:
    """ORT feeds (name → array in the graph's shape) of a validated request.

    Raises ServerError(INVALID_ARG) for data that does not fit its declared shape or type.
    """
    try:
        return {tensor.name: _decode(spec, tensor, request.inputs[index]) for index, tensor in plan.order}
    except _UnprefixedError as error:
        raise ServerError(error.code, error.message) from None
    except ServerError as error:
        raise ServerError(error.code, request_prefix(request) + error.message) from None


class _UnprefixedError(ServerError):
    """A refusal Triton words without the "[request id: ...]" prefix (its model lookups)."""


def _check_known_inputs(spec: ModelSpec, request: InferRequest) -> None:
    for item in request.inputs:
        if item.name not in spec.inputs:
            raise _UnprefixedError(ErrorCode.INVALID_ARG, f"unexpected inference input '{item.name}' for model '{spec.name}'")


def _validate(spec: ModelSpec, request: InferRequest) -> FeedPlan:
    for item in request.inputs:
        _check_claimed_shape(spec, item)
    _check_input_names(spec, request)
    batch_size = _batch_size(spec, request)
    positions = {item.name: index for index, item in enumerate(request.inputs)}
    for item in request.inputs:
        _check_input(spec, spec.inputs[item.name], item)
    # In the model's input order, so requests that list inputs differently still batch together.
    order = tuple((positions[name], tensor) for name, tensor in spec.inputs.items() if name in positions)
    # Ragged inputs may differ in shape within a batch (they are fed flattened and concatenated).
    shape_key = tuple((tensor.name, _feed_shape(spec, tensor, request.inputs[index])[1:]) for index, tensor in order if not tensor.ragged)
    source_shapes = {name: request.inputs[positions[name]].shape for name in spec.batch_input_sources if name in positions}
    return FeedPlan(batch_size, order, shape_key, source_shapes)


def _feed_shape(spec: ModelSpec, tensor: TensorSpec, item: InferInput) -> tuple[int, ...]:
    """The shape ONNX Runtime sees for this input (the config's reshape applied)."""
    if tensor.reshape is None:
        return item.shape
    return (item.shape[:1] if spec.batching else ()) + tensor.reshape


def requested_output_names(spec: ModelSpec, request: InferRequest) -> tuple[str, ...]:
    """The outputs to compute, in request order; all of them when none is named."""
    if not request.outputs:
        return tuple(spec.outputs)
    names = tuple(output.name for output in request.outputs)
    plain = not any(output.parameters or output.class_count for output in request.outputs)
    if plain and names in spec.output_plans:
        return names
    for output in request.outputs:
        if output.name not in spec.outputs:  # Triton words this without the request id
            raise ServerError.invalid_arg(f"unexpected inference output '{output.name}' for model '{spec.name}'")
        if output.class_count:
            check_classifiable(output.name, spec.outputs[output.name].datatype)
    if plain and len(spec.output_plans) < _MAX_REMEMBERED_SIGNATURES:
        spec.output_plans[names] = names
    return names


def _check_input_names(spec: ModelSpec, request: InferRequest) -> None:
    seen: set[str] = set()
    for item in request.inputs:
        if item.name in seen:
            raise ServerError.invalid_arg(f"input '{item.name}' is given more than once for model '{spec.name}'")
        seen.add(item.name)
    required = [name for name, tensor in spec.inputs.items() if not tensor.optional]
    missing = [name for name in required if name not in seen]
    if missing:
        if len(required) == len(spec.inputs):
            expected = f"expected {len(spec.inputs)} inputs"
        else:
            expected = f"expected number of inputs between {len(required)} and {len(spec.inputs)}"
        got = [item.name for item in request.inputs]
        raise ServerError.invalid_arg(
            f"{expected} but got {len(request.inputs)} inputs for model '{spec.name}'. "
            f"Got input(s) {got}, but missing required input(s) {missing}. "
            "Please provide all required input(s)."
        )


def _batch_size(spec: ModelSpec, request: InferRequest) -> int:
    if not spec.batching:
        return 1
    batch_size: int | None = None
    for item in request.inputs:
        if not item.shape:
            raise ServerError.invalid_arg(f"input '{item.name}' has no shape but model requires batch dimension for '{spec.name}'")
        if batch_size is None:
            batch_size = item.shape[0]
        elif item.shape[0] != batch_size:
            raise ServerError.invalid_arg(f"input '{item.name}' batch size does not match other inputs for '{spec.name}'")
    batch_size = batch_size or 0
    if batch_size > spec.max_batch_size:
        raise ServerError.invalid_arg(f"inference request batch-size must be <= {spec.max_batch_size} for '{spec.name}'")
    return batch_size


def _check_input(spec: ModelSpec, tensor: TensorSpec, item: InferInput) -> None:
    if item.datatype != tensor.datatype:
        if item.datatype == "BF16":
            raise bf16_unsupported(item.name)
        raise ServerError.invalid_arg(
            f"inference input '{item.name}' data-type is '{item.datatype}', but model '{spec.name}' expects '{tensor.datatype}'"
        )
    if tensor.datatype not in SUPPORTED_DATATYPES:
        raise bf16_unsupported(item.name)
    _check_shape(spec, tensor, item)


def _decode(spec: ModelSpec, tensor: TensorSpec, item: InferInput) -> np.ndarray:
    if item.array is not None:
        array = item.array
    elif item.raw is not None:
        array = decode_raw(item.raw, item.datatype, item.shape, item.name, spec.name)
    elif item.decode is not None:
        try:
            array = item.decode()
        except ServerError as error:  # the frontend's own wire form: its words, as Triton's frontends say them
            raise _UnprefixedError(error.code, error.message) from None
    else:
        raise ServerError.invalid_arg(f"input '{item.name}' for model '{spec.name}' has no data")
    if tensor.ragged:  # ONNX Runtime takes a ragged input as one flat [-1] tensor for the whole batch
        return array.reshape(-1)
    if tensor.reshape is not None:
        array = array.reshape(_feed_shape(spec, tensor, item))
    return array


# numpy's (and so ONNX Runtime's Python API's) limit on array rank.
MAX_RANK = 64
# No tensor can carry more than gRPC's 2 GiB message ceiling.
_MAX_TENSOR_BYTES = 2**31 - 1


def _check_claimed_shape(spec: ModelSpec, item: InferInput) -> None:
    """Refuse a shape no request could fill before anything is sized from it: too many dims, a
    negative dim, or more elements than any message carries (counted without overflow)."""
    if len(item.shape) > MAX_RANK:
        raise ServerError.invalid_arg(
            f"input '{item.name}' for model '{spec.name}' has {len(item.shape)} dimensions, more than the {MAX_RANK} supported"
        )
    if any(d < 0 for d in item.shape):
        raise ServerError.invalid_arg(
            f"All input dimensions should be specified for input '{item.name}' for model '{spec.name}', got {format_dims(item.shape)}"
        )
    # Zero dims are left out: numpy refuses even an empty [0, 2**62] array, and no batch needs one.
    if prod(d for d in item.shape if d) * (element_size(item.datatype) if item.datatype in FIXED_SIZE_DATATYPES else 1) > _MAX_TENSOR_BYTES:
        raise ServerError.invalid_arg(
            f"input '{item.name}' for model '{spec.name}' has shape {format_dims(item.shape)}: more data than a request can carry"
        )


def _check_shape(spec: ModelSpec, tensor: TensorSpec, item: InferInput) -> None:
    if any(s < 0 for s in item.shape):
        raise ServerError.invalid_arg(
            f"All input dimensions should be specified for input '{item.name}' for model '{spec.name}', got {format_dims(item.shape)}"
        )
    shape = item.shape[1:] if spec.batching else item.shape
    matches = len(shape) == len(tensor.dims) and all(d == -1 or d == s for d, s in zip(tensor.dims, shape))
    # A scalar may also come as the ONNX graph declares it: no dims besides the batch dim.
    if matches or (tensor.scalar and shape == ()):
        return
    expected = format_dims(spec.wire_shape(tensor))
    raise ServerError.invalid_arg(
        f"unexpected shape for input '{item.name}' for model '{spec.name}'. Expected {expected}, "
        # Triton ends the sentence with ". " whether or not the note follows.
        f"got {format_dims(item.shape)}. " + (_BATCH_NOTE if spec.batching else "")
    )
