"""sequence_batching in a config: Triton's defaults and refusals (its words), the checks against
the graph, and the settings the batcher runs with."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from server.errors import ErrorCode, ServerError
from server.model_config.autocomplete import complete_from_graph
from server.model_config.config_file import parse_config_text
from server.model_config.sequence_config import Control, complete_sequence_defaults, sequence_settings
from server.model_config.sequence_validation import validate_sequence_config, validate_sequence_graph
from server.model_config.signature import GraphSignature, GraphTensor
from server.model_config.validation import validate_config
from server.proto import model_config_pb2 as mc
from server.runtime.initial_state import read_initial_states

CONTROLS = """
  control_input [
    { name: "START", control [ { kind: CONTROL_SEQUENCE_START, fp32_false_true: [ 0, 1 ] } ] },
    { name: "READY", control [ { kind: CONTROL_SEQUENCE_READY, int32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID", control [ { kind: CONTROL_SEQUENCE_CORRID, data_type: TYPE_UINT64 } ] }
  ]
  state [ { input_name: "INPUT_STATE", output_name: "OUTPUT_STATE", data_type: TYPE_FP32, dims: [ 4 ] } ]
"""
IO = """
input [ { name: "INPUT", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [ { name: "OUTPUT", data_type: TYPE_FP32, dims: [ 4 ] } ]
"""
GRAPH = GraphSignature(
    inputs=(
        GraphTensor("INPUT", "FP32", (-1, 4)),
        GraphTensor("START", "FP32", (-1, 1)),
        GraphTensor("READY", "INT32", (-1, 1)),
        GraphTensor("CORRID", "UINT64", (-1, 1)),
        GraphTensor("INPUT_STATE", "FP32", (-1, 4)),
    ),
    outputs=(GraphTensor("OUTPUT", "FP32", (-1, 4)), GraphTensor("OUTPUT_STATE", "FP32", (-1, 4))),
)


def config(sequence: str = CONTROLS, head: str = "max_batch_size: 8", io: str = IO) -> mc.ModelConfig:
    parsed = parse_config_text(f'name: "acc"\n{head}\nsequence_batching {{ {sequence} }}\n{io}', "config.pbtxt")
    complete_sequence_defaults(parsed)
    return parsed


def refusal(check: object, *args: object) -> ServerError:
    with pytest.raises(ServerError) as caught:
        check(*args)  # type: ignore[operator]
    return caught.value


def test_defaults_are_tritons_one_second_idle_and_direct() -> None:
    settings = sequence_settings(config())
    assert settings.strategy == "direct"
    assert settings.idle_ns == 1_000_000_000
    assert settings.slots_per_instance == 8
    assert [(c.name, c.kind, c.datatype) for c in settings.controls] == [
        ("START", Control.CONTROL_SEQUENCE_START, "FP32"),
        ("READY", Control.CONTROL_SEQUENCE_READY, "INT32"),
        ("CORRID", Control.CONTROL_SEQUENCE_CORRID, "UINT64"),
    ]
    assert [(s.input_name, s.output_name, s.dims) for s in settings.states] == [("INPUT_STATE", "OUTPUT_STATE", (4,))]


def test_oldest_settings_take_candidates_preferred_sizes_and_delay() -> None:
    oldest = "oldest { max_candidate_sequences: 16, max_queue_delay_microseconds: 250 }" + CONTROLS
    settings = sequence_settings(config(oldest))
    assert (settings.strategy, settings.slots_per_instance, settings.max_queue_delay_ns) == ("oldest", 16, 250_000)
    assert settings.preferred_batch_sizes == (8,)  # Triton fills [max_batch_size]


def test_a_model_without_batching_holds_one_sequence_per_instance() -> None:
    assert sequence_settings(config(head="max_batch_size: 0")).slots_per_instance == 1


@pytest.mark.parametrize(
    ("sequence", "message"),
    [
        (
            'control_input [ { name: "", control [ { kind: CONTROL_SEQUENCE_START, fp32_false_true: [ 0, 1 ] } ] } ]',
            "sequence batching control tensor must have a name for acc",
        ),
        (
            'control_input [ { name: "S", control [ { kind: CONTROL_SEQUENCE_START } ] } ]',
            "sequence batching must specify either 'int32_false_true', 'fp32_false_true' or 'bool_false_true' "
            "for CONTROL_SEQUENCE_START for acc",
        ),
        (
            'control_input [ { name: "S", control [ { kind: CONTROL_SEQUENCE_END, fp32_false_true: [ 0 ] } ] } ]',
            "sequence batching control 'fp32_false_true' must have exactly 2 entries for CONTROL_SEQUENCE_END for acc",
        ),
        (
            'control_input [ { name: "S", control [ { kind: CONTROL_SEQUENCE_START, fp32_false_true: [ 0, 1 ] } ] },'
            ' { name: "T", control [ { kind: CONTROL_SEQUENCE_START, int32_false_true: [ 0, 1 ] } ] } ]',
            "sequence batching specifies multiple CONTROL_SEQUENCE_START tensors for acc",
        ),
        (
            'control_input [ { name: "C", control [ { kind: CONTROL_SEQUENCE_CORRID, data_type: TYPE_FP32 } ] } ]',
            "unexpected data type for control CONTROL_SEQUENCE_CORRID for acc. "
            "Allowed data types are TYPE_UINT64, TYPE_INT64, TYPE_UINT32, TYPE_INT32 and TYPE_STRING",
        ),
        (
            "oldest { preferred_batch_size: [ 16 ] }",
            "sequence batching preferred batch size must be <= max batch size for acc",
        ),
        (
            'state [ { input_name: "I", output_name: "O", data_type: TYPE_FP32, dims: [ 4 ],'
            ' initial_state [ { data_type: TYPE_INT32, dims: [ 4 ], zero_data: true, name: "z" } ] } ]',
            "The data type used for 'initial_state' field of state 'I' does not match the state data type.",
        ),
        (
            'state [ { input_name: "I", output_name: "O", data_type: TYPE_FP32, dims: [ 4 ],'
            ' initial_state [ { data_type: TYPE_FP32, dims: [ 3 ], zero_data: true, name: "z" } ] } ]',
            "'initial_state' dim for input name 'I' doesn't match 'state' dim description. 3 != 4",
        ),
        (
            'state [ { input_name: "I", output_name: "O", data_type: TYPE_FP32, dims: [ -1 ],'
            ' initial_state [ { data_type: TYPE_FP32, dims: [ -1 ], zero_data: true, name: "z" } ] } ]',
            "'initial_state' field for state input name 'I' contains variable dimensions.",
        ),
    ],
    ids=["no-name", "no-values", "one-value", "two-starts", "corrid-type", "preferred-size", "initial-type", "initial-dims", "variable"],
)
def test_config_refusals_are_tritons(sequence: str, message: str) -> None:
    error = refusal(validate_sequence_config, config(sequence))
    assert (error.code, error.message) == (ErrorCode.INVALID_ARG, message)


def test_the_graph_must_provide_each_control_input() -> None:
    graph = GraphSignature(tuple(t for t in GRAPH.inputs if t.name != "READY"), GRAPH.outputs)
    error = refusal(validate_sequence_graph, config(), graph)
    assert error.code is ErrorCode.INTERNAL  # the ORT backend's code for this one
    assert error.message == "configuration specified sequence control 'READY', but model does not provide that input"


def test_a_control_input_must_be_dims_1_of_its_datatype() -> None:
    wide = GraphSignature(tuple(GraphTensor("START", "FP32", (-1, 2)) if t.name == "START" else t for t in GRAPH.inputs), GRAPH.outputs)
    assert refusal(validate_sequence_graph, config(), wide).message == (
        "unable to load model 'acc', sequence control 'START' in model has dims [2] but dims [1] is expected"
    )
    typed = GraphSignature(tuple(GraphTensor("START", "INT32", (-1, 1)) if t.name == "START" else t for t in GRAPH.inputs), GRAPH.outputs)
    assert refusal(validate_sequence_graph, config(), typed).message == (
        "unable to load model 'acc', sequence control 'START', the model expects data-type INT32 "
        "but the model configuration specifies data-type TYPE_FP32"
    )


def test_a_state_whose_dims_do_not_match_the_graph_is_refused_naming_it() -> None:
    state = CONTROLS.replace("dims: [ 4 ] } ]", "dims: [ 8 ] } ]")
    error = refusal(validate_sequence_graph, config(state), GRAPH)
    assert (
        error.message
        == "unable to load model 'acc', configuration expects dims [-1,8] for input state 'INPUT_STATE', model provides [-1,4]"
    )


def test_a_state_output_the_graph_lacks_is_refused_as_triton_does() -> None:
    graph = GraphSignature(GRAPH.inputs, GRAPH.outputs[:1])
    assert (
        refusal(validate_sequence_graph, config(), graph).message
        == "unexpected inference output 'OUTPUT_STATE', allowed outputs are: OUTPUT"
    )


def test_the_graph_input_count_includes_controls_and_states() -> None:
    validate_config(config(), GRAPH)  # 1 input + 3 controls + 1 state
    too_few = GraphSignature(GRAPH.inputs[:-1], GRAPH.outputs)
    assert (
        refusal(validate_config, config(), too_few).message
        == "unable to load model 'acc', configuration expects 5 inputs, model provides 4"
    )


def test_auto_complete_leaves_control_and_state_tensors_to_the_batcher() -> None:
    completed = complete_from_graph(config(io=""), GRAPH)
    assert [t.name for t in completed.input] == ["INPUT"]
    assert [t.name for t in completed.output] == ["OUTPUT"]
    assert completed.WhichOneof("scheduling_choice") == "sequence_batching"


def test_initial_states_are_zeros_or_tritons_variable_dims_of_one(tmp_path: Path) -> None:
    states = CONTROLS.replace("dims: [ 4 ] } ]", "dims: [ 2, -1 ] } ]")
    initial = read_initial_states(config(states), tmp_path)
    assert initial["INPUT_STATE"].shape == (2, 1) and not initial["INPUT_STATE"].any()


def test_an_initial_state_file_is_read_row_major_from_initial_state(tmp_path: Path) -> None:
    model_dir = tmp_path
    (model_dir / "initial_state").mkdir()
    np.arange(4, dtype=np.float32).tofile(model_dir / "initial_state" / "start.bin")
    text = CONTROLS.replace(
        "dims: [ 4 ] } ]", 'dims: [ 4 ], initial_state [ { data_type: TYPE_FP32, dims: [ 4 ], data_file: "start.bin", name: "s" } ] } ]'
    )
    assert read_initial_states(config(text), model_dir)["INPUT_STATE"].tolist() == [0.0, 1.0, 2.0, 3.0]
    (model_dir / "initial_state" / "start.bin").write_bytes(b"\0" * 8)
    error = refusal(read_initial_states, config(text), model_dir)
    assert error.message == "initial_state setting expects 16 bytes, but the data provided from start.binonly has 8 bytes."
