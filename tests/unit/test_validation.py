"""validate_config: a completed config against the graph, refused with the tensor and both values named."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from server.errors import ErrorCode, ServerError
from server.proto import model_config_pb2 as mc
from server.repository.signature import GraphSignature, GraphTensor
from server.repository.validation import validate_config

GRAPH = GraphSignature(
    inputs=(GraphTensor("INPUT0", "FP32", (-1, 16)), GraphTensor("INPUT1", "INT32", (-1, -1))),
    outputs=(GraphTensor("OUTPUT0", "FP32", (-1, 16)),),
)
FIXED_LEADING = GraphSignature(inputs=(GraphTensor("state", "FP32", (2, 128)),), outputs=(GraphTensor("out", "FP32", (2, 128)),))

VALID = """
name: "m"
max_batch_size: 8
input [
  { name: "INPUT0", data_type: TYPE_FP32, dims: [ 16 ] },
  { name: "INPUT1", data_type: TYPE_INT32, dims: [ -1 ] }
]
output [ { name: "OUTPUT0", data_type: TYPE_FP32, dims: [ 16 ] } ]
"""


def config(text: str = VALID) -> mc.ModelConfig:
    return text_format.Parse(text, mc.ModelConfig())


def refusal(cfg: mc.ModelConfig, graph: GraphSignature = GRAPH) -> str:
    with pytest.raises(ServerError) as caught:
        validate_config(cfg, graph)
    assert caught.value.code is ErrorCode.INVALID_ARG
    return caught.value.message


def test_valid_config_passes() -> None:
    validate_config(config(), GRAPH)


def test_config_may_fix_a_dynamic_dim() -> None:
    cfg = config()
    cfg.input[1].dims[0] = 7
    validate_config(cfg, GRAPH)


def test_config_may_not_loosen_a_fixed_dim() -> None:
    cfg = config()
    cfg.input[0].dims[0] = -1
    assert refusal(cfg) == (
        "model 'm': input 'INPUT0' has dims [-1] in the config but the ONNX graph has [16] (the batch dim is implied by max_batch_size)"
    )


def test_wrong_data_type_names_tensor_and_both_types() -> None:
    cfg = config()
    cfg.input[0].data_type = mc.TYPE_INT32
    assert refusal(cfg) == "model 'm': input 'INPUT0' has data_type TYPE_INT32 in the config but the ONNX graph has FP32"


def test_wrong_output_dims_show_both() -> None:
    cfg = config()
    cfg.output[0].dims[:] = [4, 4]
    assert refusal(cfg) == (
        "model 'm': output 'OUTPUT0' has dims [4,4] in the config but the ONNX graph has [16] (the batch dim is implied by max_batch_size)"
    )


def test_dims_compared_without_batch_note_when_not_batching() -> None:
    cfg = config(
        'name: "m" input [ { name: "state" data_type: TYPE_FP32 dims: [ 2, 64 ] } ] '
        'output [ { name: "out" data_type: TYPE_FP32 dims: [ 2, 128 ] } ]'
    )
    assert refusal(cfg, FIXED_LEADING) == "model 'm': input 'state' has dims [2,64] in the config but the ONNX graph has [2,128]"


def test_reshape_is_what_is_compared_with_the_graph() -> None:
    graph = GraphSignature(inputs=(GraphTensor("x", "FP32", (-1, 2, 8)),), outputs=(GraphTensor("y", "FP32", (-1, 16)),))
    cfg = config(
        'name: "m" max_batch_size: 4 '
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 16 ] reshape { shape: [ 2, 8 ] } } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 16 ] } ]'
    )
    validate_config(cfg, graph)
    cfg.input[0].reshape.shape[:] = [4, 4]
    assert refusal(cfg, graph).startswith("model 'm': input 'x' has reshape [4,4] in the config but the ONNX graph has [2,8]")


def test_config_input_not_in_graph_lists_graph_names() -> None:
    cfg = config()
    cfg.input[1].name = "INPUT9"
    assert refusal(cfg) == "model 'm': config input 'INPUT9' is not an input of the ONNX graph (graph inputs: ['INPUT0', 'INPUT1'])"


def test_config_output_not_in_graph_lists_graph_names() -> None:
    cfg = config()
    cfg.output[0].name = "probs"
    assert refusal(cfg) == "model 'm': config output 'probs' is not an output of the ONNX graph (graph outputs: ['OUTPUT0'])"


def test_graph_input_missing_from_config() -> None:
    cfg = config()
    del cfg.input[1]
    assert refusal(cfg) == "model 'm': ONNX graph input(s) ['INPUT1'] are missing from the config inputs"


def test_graph_output_may_be_left_out() -> None:
    graph = GraphSignature(inputs=GRAPH.inputs, outputs=(*GRAPH.outputs, GraphTensor("debug", "FP32", (-1, 3))))
    validate_config(config(), graph)


def test_batching_on_a_fixed_leading_dim() -> None:
    cfg = config(
        'name: "m" max_batch_size: 8 input [ { name: "state" data_type: TYPE_FP32 dims: [ 128 ] } ] '
        'output [ { name: "out" data_type: TYPE_FP32 dims: [ 128 ] } ]'
    )
    assert refusal(cfg, FIXED_LEADING) == (
        "model 'm': max_batch_size > 0 needs a dynamic first dim on every tensor, but input 'state' has shape [2,128] in the ONNX graph"
    )


def test_decoupled_is_refused() -> None:
    cfg = config()
    cfg.model_transaction_policy.decoupled = True
    assert refusal(cfg) == "model 'm': decoupled transaction policy is not supported for ONNX models"


def test_negative_max_batch_size() -> None:
    cfg = config()
    cfg.max_batch_size = -1
    assert refusal(cfg) == "model 'm': max_batch_size must be >= 0, got -1"


@pytest.mark.parametrize("field", ["input", "output"])
def test_config_without_inputs_or_outputs(field: str) -> None:
    cfg = config()
    cfg.ClearField(field)
    assert refusal(cfg) == "model 'm': the config must list at least one input and one output"


def test_tensor_without_dims() -> None:
    cfg = config()
    cfg.input[0].ClearField("dims")
    assert refusal(cfg) == "model 'm': input 'INPUT0' must specify dims"


def test_string_tensor_matches_bytes_graph_type() -> None:
    graph = GraphSignature(inputs=(GraphTensor("text", "BYTES", (-1, 1)),), outputs=(GraphTensor("y", "FP32", (-1, 2)),))
    cfg = config(
        'name: "m" max_batch_size: 2 input [ { name: "text" data_type: TYPE_STRING dims: [ 1 ] } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 2 ] } ]'
    )
    validate_config(cfg, graph)


def test_graph_type_without_wire_equivalent_is_a_type_mismatch() -> None:
    graph = GraphSignature(inputs=(GraphTensor("x", "seq(tensor(float))", (-1, 4)),), outputs=(GraphTensor("y", "FP32", (-1, 4)),))
    cfg = config(
        'name: "m" max_batch_size: 2 input [ { name: "x" data_type: TYPE_FP32 dims: [ 4 ] } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 4 ] } ]'
    )
    assert refusal(cfg, graph) == "model 'm': input 'x' has data_type TYPE_FP32 in the config but the ONNX graph has seq(tensor(float))"
