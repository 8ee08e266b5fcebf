"""The shape rules Triton's core applies to every input, output, batch input and batch output.

Pure; runs on the completed config, before the graph comparison in validation.py. Messages are
the core's (ValidateModelIOConfig in Triton 2.41), ending in " for <model>" as Triton's do.
"""

from __future__ import annotations

from math import prod

from server.errors import ServerError
from server.proto import model_config_pb2 as mc

_ELEMENT_COUNT_KINDS = frozenset(
    {
        mc.BatchInput.BATCH_ELEMENT_COUNT,
        mc.BatchInput.BATCH_ACCUMULATED_ELEMENT_COUNT,
        mc.BatchInput.BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO,
        mc.BatchInput.BATCH_MAX_ELEMENT_COUNT_AS_SHAPE,
        mc.BatchInput.BATCH_ITEM_SHAPE,
        mc.BatchInput.BATCH_ITEM_SHAPE_FLATTEN,
    }
)


def validate_io_config(config: mc.ModelConfig) -> None:
    """Raise INVALID_ARG with Triton's message for a malformed input/output/batch-I/O entry."""
    try:
        for entry in config.input:
            _check_io_shape(entry, config.max_batch_size, "model input ")
        for output in config.output:
            _check_io_shape(output, config.max_batch_size, "model output ")
        _check_batch_io(config)
    except ServerError as error:
        raise ServerError.invalid_arg(f"{error.message} for {config.name}") from None


def _check_io_shape(entry: mc.ModelInput | mc.ModelOutput, max_batch_size: int, prefix: str) -> None:
    if not entry.name:
        raise ServerError.invalid_arg(prefix + "must specify 'name'")
    if entry.data_type == mc.TYPE_INVALID:
        raise ServerError.invalid_arg("model output must specify 'data_type'")  # Triton says "output" for both
    if not entry.dims:
        raise ServerError.invalid_arg(prefix + "must specify 'dims'")
    has_reshape = entry.HasField("reshape")
    if has_reshape and not entry.reshape.shape and max_batch_size == 0:
        raise ServerError.invalid_arg(prefix + "cannot have empty reshape for non-batching model as scalar tensors are not supported")
    if any(d < 1 and d != -1 for d in entry.dims):
        raise ServerError.invalid_arg(prefix + "dimension must be integer >= 1, or -1 to indicate a variable-size dimension")
    if has_reshape:
        _check_reshape(tuple(entry.dims), tuple(entry.reshape.shape), prefix)


def _check_reshape(dims: tuple[int, ...], reshape: tuple[int, ...], prefix: str) -> None:
    if any(d < 1 and d != -1 for d in reshape):
        raise ServerError.invalid_arg(prefix + "reshape dimensions must be integer >= 1, or -1 to indicate a variable-size dimension")
    dims_size, reshape_size = _element_count(dims), _element_count(reshape)
    # An empty reshape (a scalar) has element count 0 here and matches dims of one element.
    if dims_size != reshape_size and (reshape_size != 0 or dims_size != 1):
        raise ServerError.invalid_arg(prefix + "has different size for dims and reshape")
    if dims_size == -1:
        # Between variable-size dims, each run of fixed dims must hold the same element count.
        dims_runs, reshape_runs = _fixed_runs(dims), _fixed_runs(reshape)
        if len(dims_runs) != len(reshape_runs):
            raise ServerError.invalid_arg(prefix + "has different number of variable-size dimensions for dims and reshape")
        if dims_runs != reshape_runs:
            raise ServerError.invalid_arg(prefix + "has different size for dims and reshape")


def _element_count(dims: tuple[int, ...]) -> int:
    """Triton's GetElementCount: -1 when any dim is variable, 0 for no dims."""
    if any(d == -1 for d in dims):
        return -1
    return prod(dims) if dims else 0


def _fixed_runs(dims: tuple[int, ...]) -> list[int]:
    runs, current = [], 1
    for d in dims:
        if d == -1:
            runs.append(current)
            current = 1
        else:
            current *= d
    runs.append(current)
    return runs


def _check_batch_io(config: mc.ModelConfig) -> None:
    inputs = {entry.name for entry in config.input}
    outputs = {entry.name for entry in config.output}
    for batch_input in config.batch_input:
        kind = mc.BatchInput.Kind.Name(batch_input.kind)
        if batch_input.kind not in _ELEMENT_COUNT_KINDS:
            raise ServerError.invalid_arg(f"unknown batch input kind '{kind}'")
        if len(batch_input.source_input) != 1:
            raise ServerError.invalid_arg(f"batch input kind '{kind}' expects 1 source input, got {len(batch_input.source_input)}")
        if batch_input.data_type not in (mc.TYPE_INT32, mc.TYPE_FP32):
            raise ServerError.invalid_arg("batch input data type must be TYPE_INT32 or TYPE_FP32")
        _check_sources(batch_input.source_input, inputs)
    for batch_output in config.batch_output:
        kind = mc.BatchOutput.Kind.Name(batch_output.kind)
        if batch_output.kind != mc.BatchOutput.BATCH_SCATTER_WITH_INPUT_SHAPE:
            raise ServerError.invalid_arg(f"unknown batch output kind '{kind}'")
        if len(batch_output.source_input) != 1:
            raise ServerError.invalid_arg(f"batch output kind '{kind}' expects 1 source input, got {len(batch_output.source_input)}")
        _check_sources(batch_output.source_input, inputs)
        targets: set[str] = set()
        for target in batch_output.target_name:
            if target not in outputs:
                raise ServerError.invalid_arg(f"unknown target output name '{target}'")
            if target in targets:
                raise ServerError.invalid_arg(f"target output name '{target}' can only be specified once")
            targets.add(target)


def _check_sources(sources: object, inputs: set[str]) -> None:
    for source in sources:  # type: ignore[attr-defined]
        if source not in inputs:
            raise ServerError.invalid_arg(f"unknown source input name '{source}'")
