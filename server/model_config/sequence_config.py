"""``sequence_batching`` in a config: Triton's defaults, its rules for control inputs and implicit
state, and the settings the sequence batcher runs with.

Pure. The control-tensor rules and messages are Triton 2.41's core (GetBooleanSequenceControlProperties,
GetTypedSequenceControlProperties, the sequence part of ValidateModelConfig, and the initial-state
checks of the sequence batcher); the checks against the ONNX graph are in sequence_validation.py.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.datatypes import config_to_wire
from server.errors import ServerError
from server.proto import model_config_pb2 as mc

Control = mc.ModelSequenceBatching.Control
# Triton's SEQUENCE_IDLE_DEFAULT_MICROSECONDS.
DEFAULT_IDLE_MICROSECONDS = 1_000_000
BOOLEAN_KINDS = (Control.CONTROL_SEQUENCE_START, Control.CONTROL_SEQUENCE_END, Control.CONTROL_SEQUENCE_READY)
CORRID_TYPES = (mc.TYPE_UINT64, mc.TYPE_INT64, mc.TYPE_UINT32, mc.TYPE_INT32, mc.TYPE_STRING)


@dataclass(frozen=True, slots=True)
class ControlSpec:
    """One control input the batcher feeds: which signal, under which tensor name and type."""

    name: str
    kind: int  # Control.Kind
    datatype: str  # wire datatype
    # The values for false and true (START, END, READY); unused for CORRID.
    false_value: float | int | bool = 0
    true_value: float | int | bool = 1


@dataclass(frozen=True, slots=True)
class StateSpec:
    """An implicit state: fed as ``input_name``, read back from ``output_name``."""

    input_name: str
    output_name: str
    datatype: str  # wire datatype
    # Per-sequence dims (no batch dim); -1 is variable and starts as 1.
    dims: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class SequenceSettings:
    strategy: str  # "direct" or "oldest"
    max_batch_size: int
    # Sequences one instance holds at once: max_batch_size (at least 1), or oldest's max_candidate_sequences.
    slots_per_instance: int
    idle_ns: int
    controls: tuple[ControlSpec, ...]
    states: tuple[StateSpec, ...]
    max_queue_delay_ns: int = 0
    # direct only: the share of slots that must be ready before a delayed batch runs early.
    minimum_slot_utilization: float = 0.0
    # oldest only.
    preferred_batch_sizes: tuple[int, ...] = ()
    preserve_ordering: bool = False

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0


def kind_name(kind: int) -> str:
    return Control.Kind.Name(kind)


def complete_sequence_defaults(config: mc.ModelConfig) -> None:
    """Triton's NormalizeModelConfig for sequence batching, in place: a 1 s idle limit, and the
    oldest strategy's preferred size [max_batch_size]."""
    if not config.HasField("sequence_batching"):
        return
    batching = config.sequence_batching
    if batching.max_sequence_idle_microseconds == 0:
        batching.max_sequence_idle_microseconds = DEFAULT_IDLE_MICROSECONDS
    if batching.HasField("oldest") and not batching.oldest.preferred_batch_size and config.max_batch_size > 0:
        batching.oldest.preferred_batch_size.append(config.max_batch_size)


def boolean_control(config: mc.ModelConfig, kind: int) -> ControlSpec | None:
    """The tensor that carries START, END or READY, if the config names one. Raises INVALID_ARG
    with Triton's message for a malformed control_input list."""
    name, model = "", config.name
    found: ControlSpec | None = None
    for control_input, control in _controls_of(config, kind):
        if found is not None:
            raise ServerError.invalid_arg(f"sequence batching specifies multiple {kind_name(kind)} tensors for {model}")
        name = control_input.name
        found = _boolean_spec(name, control, kind, model)
    return found


def typed_control(config: mc.ModelConfig, kind: int) -> ControlSpec | None:
    """The tensor that carries CORRID, if any. Raises INVALID_ARG with Triton's messages."""
    model = config.name
    found: ControlSpec | None = None
    for control_input, control in _controls_of(config, kind):
        if found is not None:
            raise ServerError.invalid_arg(f"sequence batching specifies multiple {kind_name(kind)} tensors for {model}")
        if control.int32_false_true or control.fp32_false_true or control.bool_false_true:
            raise ServerError.invalid_arg(
                "sequence batching must not specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' "
                f"for {kind_name(kind)} for {model}"
            )
        found = ControlSpec(control_input.name, kind, config_to_wire(mc.DataType.Name(control.data_type)))
    return found


def _controls_of(config: mc.ModelConfig, kind: int) -> list[tuple[mc.ModelSequenceBatching.ControlInput, Control]]:
    """Every (control input, control) of ``kind``, after Triton's name checks on the whole list."""
    seen: set[str] = set()
    matches = []
    for control_input in config.sequence_batching.control_input:
        if not control_input.name:
            raise ServerError.invalid_arg(f"sequence batching control tensor must have a name for {config.name}")
        if control_input.name in seen:
            raise ServerError.invalid_arg(
                f"sequence batching control tensor '{control_input.name}' is specified for multiple control kinds for {config.name}"
            )
        seen.add(control_input.name)
        matches += [(control_input, control) for control in control_input.control if control.kind == kind]
    return matches


def _boolean_spec(name: str, control: Control, kind: int, model: str) -> ControlSpec:
    forms: list[tuple[list[float] | list[int] | list[bool], str, str]] = [
        (list(control.int32_false_true), "int32", "INT32"),
        (list(control.fp32_false_true), "fp32", "FP32"),
        (list(control.bool_false_true), "bool", "BOOL"),
    ]
    given = [form for form in forms if len(form[0])]
    suffix = f"for {kind_name(kind)} for {model}"
    if not given:
        raise ServerError.invalid_arg(
            f"sequence batching must specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' {suffix}"
        )
    if len(given) > 1:
        raise ServerError.invalid_arg(
            f"sequence batching specifies more than one from 'int32_false_true', 'fp32_false_true' and 'bool_false_true' {suffix}"
        )
    values, label, datatype = given[0]
    if len(values) != 2:
        raise ServerError.invalid_arg(f"sequence batching control '{label}_false_true' must have exactly 2 entries {suffix}")
    return ControlSpec(name, kind, datatype, values[0], values[1])


def sequence_controls(config: mc.ModelConfig) -> tuple[ControlSpec, ...]:
    """START, END, READY, CORRID (those the config names), validated as Triton's core does."""
    controls = [spec for kind in BOOLEAN_KINDS if (spec := boolean_control(config, kind)) is not None]
    corrid = typed_control(config, Control.CONTROL_SEQUENCE_CORRID)
    if corrid is not None:
        datatype = mc.DataType.Value("TYPE_STRING" if corrid.datatype == "BYTES" else f"TYPE_{corrid.datatype}")
        if datatype not in CORRID_TYPES:
            raise ServerError.invalid_arg(
                f"unexpected data type for control {kind_name(Control.CONTROL_SEQUENCE_CORRID)} for {config.name}. "
                "Allowed data types are TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING"
            )
        controls.append(corrid)
    return tuple(controls)


def sequence_states(config: mc.ModelConfig) -> tuple[StateSpec, ...]:
    return tuple(
        StateSpec(state.input_name, state.output_name, config_to_wire(mc.DataType.Name(state.data_type)), tuple(state.dims))
        for state in config.sequence_batching.state
    )


def sequence_tensor_names(config: mc.ModelConfig) -> tuple[frozenset[str], frozenset[str]]:
    """(graph inputs, graph outputs) the sequence batcher feeds and reads itself: control inputs,
    state inputs, state outputs. Auto-complete leaves them out of the client-facing tensors."""
    if not config.HasField("sequence_batching"):
        return frozenset(), frozenset()
    batching = config.sequence_batching
    inputs = {control_input.name for control_input in batching.control_input} | {state.input_name for state in batching.state}
    return frozenset(inputs), frozenset(state.output_name for state in batching.state)


def sequence_input_count(config: mc.ModelConfig) -> int:
    """Graph inputs the batcher adds to a request's: one per control and one per state (the ORT
    backend's expected input count)."""
    if not config.HasField("sequence_batching"):
        return 0
    return len(sequence_controls(config)) + len(config.sequence_batching.state)


def sequence_settings(config: mc.ModelConfig) -> SequenceSettings:
    """The batcher's settings from a completed, validated config."""
    batching = config.sequence_batching
    slots = max(1, config.max_batch_size)
    oldest = batching.HasField("oldest")
    if oldest and batching.oldest.max_candidate_sequences > 0:
        slots = batching.oldest.max_candidate_sequences
    delay_us = batching.oldest.max_queue_delay_microseconds if oldest else batching.direct.max_queue_delay_microseconds
    return SequenceSettings(
        strategy="oldest" if oldest else "direct",
        max_batch_size=config.max_batch_size,
        slots_per_instance=slots,
        idle_ns=batching.max_sequence_idle_microseconds * 1000,
        controls=sequence_controls(config),
        states=sequence_states(config),
        max_queue_delay_ns=delay_us * 1000,
        minimum_slot_utilization=0.0 if oldest else batching.direct.minimum_slot_utilization,
        preferred_batch_sizes=tuple(sorted(set(batching.oldest.preferred_batch_size))) if oldest else (),
        preserve_ordering=oldest and batching.oldest.preserve_ordering,
    )
