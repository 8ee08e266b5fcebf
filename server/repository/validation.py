"""Check a completed config against the ONNX graph; refuse mismatches with both values named."""

from __future__ import annotations

from server.datatypes import SUPPORTED_DATATYPES, config_to_wire
from server.errors import ServerError
from server.proto import model_config_pb2 as mc
from server.repository.signature import GraphSignature, GraphTensor, format_dims


def validate_config(config: mc.ModelConfig, graph: GraphSignature) -> None:
    """Raise INVALID_ARG naming the tensor and both values on the first mismatch."""
    name = config.name
    if config.max_batch_size < 0:
        raise ServerError.invalid_arg(f"model '{name}': max_batch_size must be >= 0, got {config.max_batch_size}")
    if config.model_transaction_policy.decoupled:
        raise ServerError.invalid_arg(f"model '{name}': decoupled transaction policy is not supported for ONNX models")
    if not config.input or not config.output:
        raise ServerError.invalid_arg(f"model '{name}': the config must list at least one input and one output")
    batching = config.max_batch_size > 0
    for entry in config.input:
        _check_tensor(name, "input", entry, graph.input(entry.name), [t.name for t in graph.inputs], batching)
    for entry in config.output:
        _check_tensor(name, "output", entry, graph.output(entry.name), [t.name for t in graph.outputs], batching)
    configured = {entry.name for entry in config.input}
    missing = [t.name for t in graph.inputs if t.name not in configured]
    if missing:
        raise ServerError.invalid_arg(f"model '{name}': ONNX graph input(s) {missing} are missing from the config inputs")


def _check_tensor(
    model: str,
    kind: str,
    entry: mc.ModelInput | mc.ModelOutput,
    tensor: GraphTensor | None,
    graph_names: list[str],
    batching: bool,
) -> None:
    if tensor is None:
        raise ServerError.invalid_arg(
            f"model '{model}': config {kind} '{entry.name}' is not an {kind} of the ONNX graph (graph {kind}s: {graph_names})"
        )
    config_type = mc.DataType.Name(entry.data_type)
    wire = config_to_wire(config_type)
    if wire != tensor.datatype:
        raise ServerError.invalid_arg(
            f"model '{model}': {kind} '{entry.name}' has data_type {config_type} in the config but the ONNX graph has {tensor.datatype}"
        )
    if wire not in SUPPORTED_DATATYPES:
        raise ServerError.invalid_arg(
            f"model '{model}': {kind} '{entry.name}' has data_type {config_type}, which ortserve does not support"
        )
    if not entry.dims:
        raise ServerError.invalid_arg(f"model '{model}': {kind} '{entry.name}' must specify dims")
    if batching and (not tensor.shape or tensor.shape[0] != -1):
        raise ServerError.invalid_arg(
            f"model '{model}': max_batch_size > 0 needs a dynamic first dim on every tensor, but {kind} "
            f"'{entry.name}' has shape {format_dims(tensor.shape)} in the ONNX graph"
        )
    model_dims = tuple(entry.reshape.shape) if entry.HasField("reshape") else tuple(entry.dims)
    graph_dims = tensor.shape[1:] if batching else tensor.shape
    if not _dims_compatible(model_dims, graph_dims):
        shown = "reshape" if entry.HasField("reshape") else "dims"
        raise ServerError.invalid_arg(
            f"model '{model}': {kind} '{entry.name}' has {shown} {format_dims(model_dims)} in the config "
            f"but the ONNX graph has {format_dims(graph_dims)}" + (" (the batch dim is implied by max_batch_size)" if batching else "")
        )


def _dims_compatible(config_dims: tuple[int, ...], graph_dims: tuple[int, ...]) -> bool:
    """Config dims may fix a dynamic graph dim, but may not contradict or loosen a fixed one."""
    if len(config_dims) != len(graph_dims):
        return False
    return all(g == -1 or c == g for c, g in zip(config_dims, graph_dims))
