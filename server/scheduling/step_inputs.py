"""Turn ensemble tensors into one step's request to its member, and its outputs back.

An ensemble tensor is an array in its producer's config shape, with the batch size it was made
at (0: by a model without batching). Feeding it to a member follows Triton's ensemble rules
(ReshapeTensorDims): a batch dim of 1 is added or removed when only one side batches; then the
member's own request checks apply, with Triton's messages, and the member's reshape and scalar
rules give the feed ONNX Runtime sees. Pure numpy, no copies where a view will do.
"""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import numpy as np

from server.datatypes import FIXED_SIZE_DATATYPES, numpy_dtype
from server.errors import ServerError
from server.model_config.ensemble_config import dims_agree
from server.model_config.signature import format_dims
from server.model_config.spec import ModelSpec, TensorSpec

_WIRE_BY_DTYPE = {numpy_dtype(wire): wire for wire in FIXED_SIZE_DATATYPES}


@dataclass(frozen=True, slots=True)
class EnsembleTensor:
    array: np.ndarray
    # Rows it was produced at; 0 when its producer does not batch.
    batch_size: int


@dataclass(frozen=True, slots=True)
class StepFeeds:
    feeds: dict[str, np.ndarray]
    rows: int
    shape_key: Hashable
    source_shapes: dict[str, tuple[int, ...]]


def wire_datatype(array: np.ndarray) -> str:
    return "BYTES" if array.dtype == object or array.dtype.kind in "SU" else _WIRE_BY_DTYPE.get(array.dtype, str(array.dtype))


def conform(dims: tuple[int, ...], batching: bool, tensor: EnsembleTensor) -> np.ndarray:
    """Triton's ReshapeTensorDims: add a batch dim of 1 for a batching consumer of an unbatched
    tensor that matches its dims; drop a batch dim of 1 for a non-batching consumer of a batched
    tensor that does not fit its dims as it is."""
    array = tensor.array
    if batching == (tensor.batch_size != 0):
        return array
    shape = tuple(array.shape)
    if batching:
        return array.reshape((1, *shape)) if dims_agree(dims, shape) else array
    if not dims_agree(dims, shape) and tensor.batch_size == 1:
        return array.reshape(shape[1:])
    return array


def step_feeds(spec: ModelSpec, inputs: dict[str, EnsembleTensor]) -> StepFeeds:
    """The member request of one step, checked as a client's would be. Raises ServerError with
    Triton's wording (datatype, shape, batch size), naming the member and its input."""
    for name in inputs:
        if name not in spec.inputs:  # the member was reloaded with other inputs
            raise ServerError.invalid_arg(f"unexpected inference input '{name}' for model '{spec.name}'")
    missing = [name for name, tensor in spec.inputs.items() if not tensor.optional and name not in inputs]
    if missing:
        raise ServerError.invalid_arg(f"model '{spec.name}' is missing required input(s) {missing}")
    arrays = {name: conform(spec.inputs[name].dims, spec.batching, tensor) for name, tensor in inputs.items()}
    rows = _rows(spec, arrays)
    feeds: dict[str, np.ndarray] = {}
    for name, array in arrays.items():
        tensor = spec.inputs[name]
        _check(spec, tensor, array)
        feeds[name] = _feed(spec, tensor, array)
    order = [name for name in spec.inputs if name in feeds]
    shape_key = tuple(
        (name, feeds[name].shape[1:] if spec.batching else feeds[name].shape) for name in order if not spec.inputs[name].ragged
    )
    sources = {name: tuple(arrays[name].shape) for name in spec.batch_input_sources if name in arrays}
    return StepFeeds({name: feeds[name] for name in order}, rows, shape_key, sources)


def _rows(spec: ModelSpec, arrays: dict[str, np.ndarray]) -> int:
    if not spec.batching:
        return 1
    sizes = {array.shape[0] if array.ndim else 0 for array in arrays.values()}
    if len(sizes) > 1:
        name = next(iter(arrays))
        raise ServerError.invalid_arg(f"input '{name}' batch size does not match other inputs for '{spec.name}'")
    rows = sizes.pop() if sizes else 0
    if rows > spec.max_batch_size:
        raise ServerError.invalid_arg(f"inference request batch-size must be <= {spec.max_batch_size} for '{spec.name}'")
    return rows


def _check(spec: ModelSpec, tensor: TensorSpec, array: np.ndarray) -> None:
    datatype = wire_datatype(array)
    if datatype != tensor.datatype:
        raise ServerError.invalid_arg(
            f"inference input '{tensor.name}' data-type is '{datatype}', but model '{spec.name}' expects '{tensor.datatype}'"
        )
    shape = tuple(array.shape[1:] if spec.batching else array.shape)
    if (len(shape) == len(tensor.dims) and all(d in (-1, s) for d, s in zip(tensor.dims, shape))) or (tensor.scalar and shape == ()):
        return
    raise ServerError.invalid_arg(
        f"unexpected shape for input '{tensor.name}' for model '{spec.name}'. Expected {format_dims(spec.wire_shape(tensor))}, "
        f"got {format_dims(tuple(array.shape))}. "
    )


def _feed(spec: ModelSpec, tensor: TensorSpec, array: np.ndarray) -> np.ndarray:
    if tensor.ragged:
        return array.reshape(-1)
    if tensor.reshape is not None:
        return array.reshape(((array.shape[0],) if spec.batching else ()) + tensor.reshape)
    return array


def step_outputs(spec: ModelSpec, outputs: dict[str, np.ndarray], rows: int) -> dict[str, EnsembleTensor]:
    """A member's outputs as ensemble tensors, in its config shape (its reshape undone)."""
    tensors = {}
    for name, array in outputs.items():
        tensor = spec.outputs[name]
        if tensor.reshape is not None:
            array = array.reshape(((rows,) if spec.batching else ()) + tensor.dims)
        tensors[name] = EnsembleTensor(array, rows if spec.batching else 0)
    return tensors
