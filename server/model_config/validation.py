"""Check a completed config against the ONNX graph, as Triton's ONNX Runtime backend does.

The order of the checks and the messages are the backend's (ValidateInputs / ValidateOutputs in
Triton 2.41's onnxruntime_backend), so a config that Triton refuses is refused here with the same
text; ortserve's own extra checks come after Triton's and say what ortserve cannot serve.
"""

from __future__ import annotations

from server.datatypes import SUPPORTED_DATATYPES, WIRE_DATATYPES, config_to_wire
from server.errors import ServerError
from server.model_config.latency_target import latency_target_ms
from server.model_config.sequence_config import sequence_input_count
from server.model_config.signature import GraphSignature, GraphTensor, format_dims
from server.proto import model_config_pb2 as mc

# Tensor kinds as Triton's messages name them.
_INPUT, _OUTPUT = "input", "output"


def validate_config(config: mc.ModelConfig, graph: GraphSignature) -> None:
    """Raise INVALID_ARG with Triton's message on the first mismatch between config and graph."""
    name = config.name
    if config.max_batch_size < 0:
        raise ServerError.invalid_arg(f"model '{name}': max_batch_size must be >= 0, got {config.max_batch_size}")
    if config.model_transaction_policy.decoupled:
        raise ServerError.invalid_arg(f"model '{name}': decoupled transaction policy is not supported for ONNX models")
    if config.response_cache.enable and config.HasField("sequence_batching"):  # Triton's rule and words
        raise ServerError.invalid_arg(
            f"Response Cache does not currently support model {name} with sequence batching scheduler. Please disable the response cache."
        )
    # The sequence batcher feeds one more input per control and per implicit state (the ORT backend's count).
    expected = sum(1 for entry in config.input if not entry.optional) + len(config.batch_input) + sequence_input_count(config)
    if expected != len(graph.inputs):
        raise ServerError.invalid_arg(
            f"unable to load model '{name}', configuration expects {expected} inputs, model provides {len(graph.inputs)}"
        )
    for entry in config.input:
        _check_input(config, entry, graph)
    batch_outputs = {target for batch_output in config.batch_output for target in batch_output.target_name}
    for output in config.output:
        _check_output(config, output, graph, output.name in batch_outputs)
    if not config.output:
        raise ServerError.invalid_arg(f"model '{name}': the config must list at least one output")
    latency_target_ms(config)  # raises for a bad ortserve.target_latency_p99_ms


def _check_input(config: mc.ModelConfig, entry: mc.ModelInput, graph: GraphSignature) -> None:
    name = config.name
    if entry.optional and config.max_batch_size != 0:
        raise ServerError.invalid_arg(
            f"unable to load model '{name}', optional input '{entry.name}' is not supported for models that support batching"
        )
    tensor = graph.input(entry.name)
    if tensor is None:
        allowed = ", ".join(sorted(t.name for t in graph.inputs))
        raise ServerError.invalid_arg(f"unexpected inference input '{entry.name}', allowed inputs are: {allowed}")
    _check_datatype(name, _INPUT, entry, tensor)
    dims = _compared_dims(entry)
    if entry.allow_ragged_batch:
        if entry.optional:
            raise ServerError.invalid_arg(
                f"unable to load model '{name}', configuration expects model provides input with shape [-1] "
                f"for ragged input '{entry.name}', which is not supported for optional input"
            )
        if tensor.shape != (-1,):
            raise ServerError.invalid_arg(
                f"unable to load model '{name}', configuration expects model provides input with shape [-1]  "
                f"for ragged input '{entry.name}', model provides {format_dims(tensor.shape)}"
            )
        return
    _check_dims(config, entry.name, tensor, dims, compare_exact=False)


def _check_output(config: mc.ModelConfig, entry: mc.ModelOutput, graph: GraphSignature, is_batch_output: bool) -> None:
    tensor = graph.output(entry.name)
    if tensor is None:
        allowed = ", ".join(sorted(t.name for t in graph.outputs))
        raise ServerError.invalid_arg(f"unexpected inference output '{entry.name}', allowed outputs are: {allowed}")
    _check_datatype(config.name, _OUTPUT, entry, tensor)
    if not is_batch_output:  # a batch output's shape need not match the graph's (Triton's rule)
        _check_dims(config, entry.name, tensor, _compared_dims(entry), compare_exact=True)


def _check_datatype(model: str, kind: str, entry: mc.ModelInput | mc.ModelOutput, tensor: GraphTensor) -> None:
    config_type = mc.DataType.Name(entry.data_type)
    wire = config_to_wire(config_type)
    if wire != tensor.datatype:
        provided = f"TYPE_{tensor.datatype}"
        if tensor.datatype not in WIRE_DATATYPES:
            provided = f"TYPE_INVALID (ONNX type {tensor.datatype}, which has no Triton datatype)"
        raise ServerError.invalid_arg(
            f"unable to load model '{model}', configuration expects datatype {config_type} for {kind} "
            f"'{entry.name}', model provides {provided}"
        )
    if wire not in SUPPORTED_DATATYPES:
        raise ServerError.invalid_arg(
            f"unable to load model '{model}', {kind} '{entry.name}' has data_type {config_type}, which ortserve does not support"
        )


def _compared_dims(entry: mc.ModelInput | mc.ModelOutput) -> tuple[int, ...]:
    """What the graph is compared with: the reshape when the config has one, else the dims."""
    return tuple(entry.reshape.shape) if entry.HasField("reshape") else tuple(entry.dims)


def _check_dims(config: mc.ModelConfig, tensor_name: str, tensor: GraphTensor, dims: tuple[int, ...], compare_exact: bool) -> None:
    """Triton's CompareDimsSupported, plus its rule for scalars (rank-0 graph tensors)."""
    model, batching = config.name, config.max_batch_size > 0
    if not tensor.shape and not batching:
        if any(d != 1 for d in dims):
            raise ServerError.invalid_arg(
                f"unable to load model '{model}', scalar tensor '{tensor_name}', should only provide 1 in the model "
                f"configuration when the model doesn't support batching. Model configuration provided: {format_dims(dims)}."
            )
        return
    shape = tensor.shape
    prefix = f"model '{model}', tensor '{tensor_name}': "
    if batching and (not shape or shape[0] != -1):
        raise ServerError.invalid_arg(
            prefix + "for the model to support batching the shape should have at least 1 dimension and the first "
            f"dimension must be -1; but shape expected by the model is {format_dims(shape)}"
        )
    full = (-1, *dims) if batching else dims
    if _dims_match(shape, full, compare_exact):
        return
    if batching:
        raise ServerError.invalid_arg(
            prefix + f"the model expects {len(shape)} dimensions (shape {format_dims(shape)}) but the model configuration "
            f"specifies {len(full)} dimensions (an initial batch dimension because max_batch_size > 0 followed by the "
            f"explicit tensor shape, making complete shape {format_dims(full)})"
        )
    raise ServerError.invalid_arg(
        prefix + f"the model expects {len(shape)} dimensions (shape {format_dims(shape)}) but the model configuration "
        f"specifies {len(full)} dimensions (shape {format_dims(full)})"
    )


def _dims_match(graph_shape: tuple[int, ...], config_shape: tuple[int, ...], compare_exact: bool) -> bool:
    """Inputs: a dynamic graph dim takes any config dim. Outputs (exact): every dim must be equal."""
    if len(graph_shape) != len(config_shape):
        return False
    return all(g == c or (g == -1 and not compare_exact) for g, c in zip(graph_shape, config_shape))
