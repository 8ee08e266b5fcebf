"""validate_config: a completed config against the graph, refused with the tensor and both values named."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from server.errors import ErrorCode, ServerError
from server.model_config.signature import GraphSignature, GraphTensor
from server.model_config.validation import validate_config
from server.proto import model_config_pb2 as mc

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


def test_input_dims_may_not_loosen_a_fixed_dim() -> None:
    cfg = config()
    cfg.input[0].dims[0] = -1
    assert refusal(cfg) == (
        "model 'm', tensor 'INPUT0': the model expects 2 dimensions (shape [-1,16]) but the model configuration specifies "
        "2 dimensions (an initial batch dimension because max_batch_size > 0 followed by the explicit tensor shape, "
        "making complete shape [-1,-1])"
    )


def test_wrong_data_type_names_tensor_and_both_types() -> None:
    cfg = config()
    cfg.input[0].data_type = mc.TYPE_INT32
    assert (
        refusal(cfg) == "unable to load model 'm', configuration expects datatype TYPE_INT32 for input 'INPUT0', model provides TYPE_FP32"
    )


def test_wrong_output_data_type() -> None:
    cfg = config()
    cfg.output[0].data_type = mc.TYPE_INT8
    assert (
        refusal(cfg) == "unable to load model 'm', configuration expects datatype TYPE_INT8 for output 'OUTPUT0', model provides TYPE_FP32"
    )


def test_wrong_output_dims_show_both() -> None:
    cfg = config()
    cfg.output[0].dims[:] = [4, 4]
    assert refusal(cfg) == (
        "model 'm', tensor 'OUTPUT0': the model expects 2 dimensions (shape [-1,16]) but the model configuration specifies "
        "3 dimensions (an initial batch dimension because max_batch_size > 0 followed by the explicit tensor shape, "
        "making complete shape [-1,4,4])"
    )


def test_output_dims_must_match_exactly() -> None:
    # Triton compares outputs exactly: a config may not fix a dim the graph leaves dynamic.
    graph = GraphSignature(inputs=GRAPH.inputs, outputs=(GraphTensor("OUTPUT0", "FP32", (-1, -1)),))
    cfg = config()
    assert refusal(cfg, graph).startswith("model 'm', tensor 'OUTPUT0': the model expects 2 dimensions (shape [-1,-1])")
    cfg.output[0].dims[:] = [-1]
    validate_config(cfg, graph)


def test_dims_compared_without_batch_note_when_not_batching() -> None:
    cfg = config(
        'name: "m" input [ { name: "state" data_type: TYPE_FP32 dims: [ 2, 64 ] } ] '
        'output [ { name: "out" data_type: TYPE_FP32 dims: [ 2, 128 ] } ]'
    )
    assert refusal(cfg, FIXED_LEADING) == (
        "model 'm', tensor 'state': the model expects 2 dimensions (shape [2,128]) but the model configuration specifies "
        "2 dimensions (shape [2,64])"
    )


def test_reshape_is_what_is_compared_with_the_graph() -> None:
    graph = GraphSignature(inputs=(GraphTensor("x", "FP32", (-1, 2, 8)),), outputs=(GraphTensor("y", "FP32", (-1, 16)),))
    cfg = config(
        'name: "m" max_batch_size: 4 '
        'input [ { name: "x" data_type: TYPE_FP32 dims: [ 16 ] reshape { shape: [ 2, 8 ] } } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 16 ] } ]'
    )
    validate_config(cfg, graph)
    cfg.input[0].reshape.shape[:] = [4, 4]
    assert refusal(cfg, graph).startswith("model 'm', tensor 'x': the model expects 3 dimensions (shape [-1,2,8])")


def test_config_input_not_in_graph_lists_graph_names() -> None:
    cfg = config()
    cfg.input[1].name = "INPUT9"
    assert refusal(cfg) == "unexpected inference input 'INPUT9', allowed inputs are: INPUT0, INPUT1"


def test_config_output_not_in_graph_lists_graph_names() -> None:
    cfg = config()
    cfg.output[0].name = "probs"
    assert refusal(cfg) == "unexpected inference output 'probs', allowed outputs are: OUTPUT0"


def test_graph_input_missing_from_config() -> None:
    cfg = config()
    del cfg.input[1]
    assert refusal(cfg) == "unable to load model 'm', configuration expects 1 inputs, model provides 2"


def test_too_many_config_inputs() -> None:
    cfg = config()
    cfg.input.add(name="EXTRA", data_type=mc.TYPE_FP32, dims=[1])
    assert refusal(cfg) == "unable to load model 'm', configuration expects 3 inputs, model provides 2"


def test_graph_output_may_be_left_out() -> None:
    graph = GraphSignature(inputs=GRAPH.inputs, outputs=(*GRAPH.outputs, GraphTensor("debug", "FP32", (-1, 3))))
    validate_config(config(), graph)


def test_batching_on_a_fixed_leading_dim() -> None:
    cfg = config(
        'name: "m" max_batch_size: 8 input [ { name: "state" data_type: TYPE_FP32 dims: [ 128 ] } ] '
        'output [ { name: "out" data_type: TYPE_FP32 dims: [ 128 ] } ]'
    )
    assert refusal(cfg, FIXED_LEADING) == (
        "model 'm', tensor 'state': for the model to support batching the shape should have at least 1 dimension and the "
        "first dimension must be -1; but shape expected by the model is [2,128]"
    )


SCALAR = GraphSignature(
    inputs=(GraphTensor("x", "FP32", (-1,)), GraphTensor("scale", "FP32", ())), outputs=(GraphTensor("y", "FP32", (-1,)),)
)


def test_scalar_tensor_takes_dims_of_ones_without_batching() -> None:
    cfg = config(
        'name: "m" input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "scale" data_type: TYPE_FP32 dims: [ 1 ] } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ -1 ] } ]'
    )
    validate_config(cfg, SCALAR)
    cfg.input[1].dims[:] = [2]
    assert refusal(cfg, SCALAR) == (
        "unable to load model 'm', scalar tensor 'scale', should only provide 1 in the model configuration when the model "
        "doesn't support batching. Model configuration provided: [2]."
    )


def test_optional_input_is_refused_when_batching() -> None:
    cfg = config()
    cfg.input[1].optional = True
    assert refusal(cfg) == ("unable to load model 'm', configuration expects 1 inputs, model provides 2")
    graph = GraphSignature(inputs=GRAPH.inputs[:1], outputs=GRAPH.outputs)
    assert refusal(cfg, graph) == "unable to load model 'm', optional input 'INPUT1' is not supported for models that support batching"


RAGGED = GraphSignature(inputs=(GraphTensor("x", "FP32", (-1,)),), outputs=(GraphTensor("y", "FP32", (-1,)),))


def test_ragged_input_needs_a_rank_one_dynamic_graph_input() -> None:
    cfg = config(
        'name: "m" max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] allow_ragged_batch: true } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] reshape { shape: [ ] } } ]'
    )
    validate_config(cfg, RAGGED)
    graph = GraphSignature(inputs=(GraphTensor("x", "FP32", (-1, 4)),), outputs=RAGGED.outputs)
    assert refusal(cfg, graph) == (
        "unable to load model 'm', configuration expects model provides input with shape [-1]  for ragged input 'x', model provides [-1,4]"
    )


def test_batch_input_counts_as_a_graph_input() -> None:
    graph = GraphSignature(inputs=(*RAGGED.inputs, GraphTensor("n", "FP32", (-1,))), outputs=RAGGED.outputs)
    cfg = config(
        'name: "m" max_batch_size: 8 input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] allow_ragged_batch: true } ] '
        'batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "n" data_type: TYPE_FP32 source_input: "x" } ] '
        'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] reshape { shape: [ ] } } ]'
    )
    validate_config(cfg, graph)
    del cfg.batch_input[:]
    assert refusal(cfg, graph) == "unable to load model 'm', configuration expects 1 inputs, model provides 2"


def test_decoupled_is_refused() -> None:
    cfg = config()
    cfg.model_transaction_policy.decoupled = True
    assert refusal(cfg) == "model 'm': decoupled transaction policy is not supported for ONNX models"


def test_negative_max_batch_size() -> None:
    cfg = config()
    cfg.max_batch_size = -1
    assert refusal(cfg) == "model 'm': max_batch_size must be >= 0, got -1"


def test_config_without_outputs() -> None:
    cfg = config()
    cfg.ClearField("output")
    assert refusal(cfg) == "model 'm': the config must list at least one output"


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
    assert refusal(cfg, graph) == (
        "unable to load model 'm', configuration expects datatype TYPE_FP32 for input 'x', model provides TYPE_INVALID "
        "(ONNX type seq(tensor(float)), which has no Triton datatype)"
    )


def test_the_response_cache_is_refused_with_sequence_batching_in_tritons_words() -> None:
    cfg = config(VALID + "sequence_batching { }\nresponse_cache { enable: true }")
    assert refusal(cfg) == (
        "Response Cache does not currently support model m with sequence batching scheduler. Please disable the response cache."
    )
    validate_config(config(VALID + "response_cache { enable: true }"), GRAPH)
