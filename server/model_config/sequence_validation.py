"""Check ``sequence_batching`` before a version serves: the config's own rules (Triton's core) and
its control and state tensors against the ONNX graph (Triton's ONNX Runtime backend).

Pure; raises ServerError with Triton's code and message on the first problem. Checks Triton does
not make (a state's dims against the graph, a state input the graph lacks) come last, worded like
the backend's own.
"""

from __future__ import annotations

from server.datatypes import wire_to_config
from server.errors import ServerError
from server.model_config.sequence_config import ControlSpec, StateSpec, sequence_controls, sequence_states
from server.model_config.signature import GraphSignature, GraphTensor, format_dims
from server.proto import model_config_pb2 as mc

# ONNX Runtime's element type names, as the ORT backend prints them (OnnxDataTypeName).
_ONNX_NAMES = {"FP32": "FLOAT", "FP16": "FLOAT16", "FP64": "DOUBLE", "BYTES": "STRING", "BF16": "BFLOAT16"}


def validate_sequence_config(config: mc.ModelConfig) -> None:
    """Triton's core rules for sequence_batching (ValidateModelConfig and the sequence batcher's
    initial-state checks). Raises INVALID_ARG."""
    if not config.HasField("sequence_batching"):
        return
    name, batching = config.name, config.sequence_batching
    if config.response_cache.enable:
        raise ServerError.invalid_arg(
            f"Response Cache does not currently support model {name} with sequence batching scheduler. Please disable the response cache."
        )
    sequence_controls(config)
    if batching.HasField("oldest"):
        for size in batching.oldest.preferred_batch_size:
            if size <= 0:
                raise ServerError.invalid_arg(f"sequence batching preferred batch size must be positive for {name}")
            if size > config.max_batch_size:
                raise ServerError.invalid_arg(f"sequence batching preferred batch size must be <= max batch size for {name}")
    if batching.HasField("direct") and not 0.0 <= batching.direct.minimum_slot_utilization <= 1.0:
        raise ServerError.invalid_arg(f"sequence batching minimum slot utilization must be in range (0.0, 1.0] for {name}")
    seen: set[str] = set()
    for state in batching.state:
        _check_initial_state(state, seen)
    if config.model_warmup:  # ortserve's: warmup samples carry no sequence controls or state
        raise ServerError.invalid_arg(f"model '{name}': model_warmup is not supported by ortserve for models with sequence_batching")


def _check_initial_state(state: mc.ModelSequenceBatching.State, seen: set[str]) -> None:
    name = state.input_name
    if len(state.initial_state) > 1:
        raise ServerError.invalid_arg(
            f"initial_state field for state input '{name}' must contain exactly one or zero element. "
            f"Found '{len(state.initial_state)}' elements."
        )
    if not state.initial_state:
        return
    initial = state.initial_state[0]
    if initial.data_type != state.data_type:
        raise ServerError.invalid_arg(f"The data type used for 'initial_state' field of state '{name}' does not match the state data type.")
    if not initial.name:
        raise ServerError.invalid_arg(f"Field 'name' must be set when using initial_state for state input '{name}'.")
    if name in seen:
        raise ServerError.invalid_arg(f"State input name '{name}' specified more than once.")
    seen.add(name)
    if len(initial.dims) != len(state.dims):
        raise ServerError.invalid_arg(
            "Number of dimensions in 'initial_state' doesn't match the size of 'state' dimensions for state input "
            f"'{name}'. {len(initial.dims)} != {len(state.dims)}"
        )
    for initial_dim, state_dim in zip(initial.dims, state.dims):
        if initial_dim == -1:
            raise ServerError.invalid_arg(f"'initial_state' field for state input name '{name}' contains variable dimensions.")
        if state_dim != -1 and initial_dim != state_dim:
            raise ServerError.invalid_arg(
                f"'initial_state' dim for input name '{name}' doesn't match 'state' dim description. {initial_dim} != {state_dim}"
            )
    if initial.WhichOneof("state_data") is None:
        raise ServerError.invalid_arg(f"initial_state setting expects state'{name}' to have state_data set")


def validate_sequence_graph(config: mc.ModelConfig, graph: GraphSignature) -> None:
    """The ORT backend's checks of control tensors (present, dims [1], datatype) and of state
    outputs, then ortserve's checks of state inputs and dims. Raises ServerError."""
    if not config.HasField("sequence_batching"):
        return
    batching = config.max_batch_size > 0
    for control in sequence_controls(config):
        _check_control(config.name, control, graph, batching)
    for state in sequence_states(config):
        _check_state(config.name, state, graph, batching)


def _check_control(model: str, control: ControlSpec, graph: GraphSignature, batching: bool) -> None:
    tensor = graph.input(control.name)
    if tensor is None:
        # The backend's code for this one is INTERNAL.
        raise ServerError.internal(f"configuration specified sequence control '{control.name}', but model does not provide that input")
    dims = tensor.shape[1:] if batching else tensor.shape
    if dims != (1,):
        raise ServerError.invalid_arg(
            f"unable to load model '{model}', sequence control '{control.name}' in model has dims {format_dims(dims)} "
            "but dims [1] is expected"
        )
    if tensor.datatype != control.datatype:
        configured = wire_to_config(control.datatype)
        raise ServerError.invalid_arg(
            f"unable to load model '{model}', sequence control '{control.name}', the model expects data-type "
            f"{_ONNX_NAMES.get(tensor.datatype, tensor.datatype)} but the model configuration specifies data-type {configured}"
        )


def _check_state(model: str, state: StateSpec, graph: GraphSignature, batching: bool) -> None:
    output = graph.output(state.output_name)
    if output is None:
        allowed = ", ".join(sorted(t.name for t in graph.outputs))
        raise ServerError.invalid_arg(f"unexpected inference output '{state.output_name}', allowed outputs are: {allowed}")
    _check_state_type(model, "output", state, output)
    source = graph.input(state.input_name)
    if source is None:
        raise ServerError.invalid_arg(
            f"unable to load model '{model}', configuration specified state input '{state.input_name}', "
            "but model does not provide that input"
        )
    _check_state_type(model, "input", state, source)
    full = (-1, *state.dims) if batching else state.dims
    for kind, tensor in (("input", source), ("output", output)):
        if not _state_dims_match(tensor.shape, full):
            raise ServerError.invalid_arg(
                f"unable to load model '{model}', configuration expects dims {format_dims(full)} for {kind} state "
                f"'{tensor.name}', model provides {format_dims(tensor.shape)}"
            )


def _check_state_type(model: str, kind: str, state: StateSpec, tensor: GraphTensor) -> None:
    if tensor.datatype != state.datatype:
        raise ServerError.invalid_arg(
            f"unable to load model '{model}', configuration expects datatype {wire_to_config(state.datatype)} for {kind} state "
            f"'{tensor.name}', model provides TYPE_{tensor.datatype}"
        )


def _state_dims_match(graph_shape: tuple[int, ...], config_shape: tuple[int, ...]) -> bool:
    """A variable dim on either side matches; a model whose rank differs, or whose batching
    dim is not the first, does not."""
    if len(graph_shape) != len(config_shape):
        return False
    return all(g == c or g == -1 or c == -1 for g, c in zip(graph_shape, config_shape))
