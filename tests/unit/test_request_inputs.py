"""Request checks against a model spec, with Triton's messages, and the reserved request parameters."""

from __future__ import annotations

import struct

import numpy as np
import pytest
from google.protobuf import text_format

from server.errors import ErrorCode, ServerError
from server.model_config.signature import GraphSignature, GraphTensor
from server.model_config.spec import ModelSpec, TensorSpec, spec_from_config
from server.proto import model_config_pb2 as mc
from server.scheduling.job import Correlation
from server.service.request_inputs import prepare_inputs, requested_output_names
from server.service.request_parameters import SchedulingParameters, scheduling_parameters
from server.types import InferInput, InferRequest, ParameterValue, RequestedOutput

NO_ID = "[request id: <id_unknown>] "
BATCH_NOTE = (
    "NOTE: Setting a non-zero max_batch_size in the model config requires a batch dimension to be prepended to each "
    "input shape. If you want to specify the full shape including the batch dim in your input dims config, try setting "
    "max_batch_size to zero. See the model configuration docs for more info on max_batch_size."
)


def build_feeds(model: ModelSpec, req: InferRequest) -> tuple[dict[str, np.ndarray], int]:
    feeds, plan = prepare_inputs(model, req)
    return feeds, plan.batch_size


def tensor(name: str, datatype: str, dims: tuple[int, ...], reshape: tuple[int, ...] | None = None, optional: bool = False) -> TensorSpec:
    return TensorSpec(name=name, datatype=datatype, dims=dims, reshape=reshape, optional=optional)


def spec(max_batch_size: int, *inputs: TensorSpec, outputs: tuple[TensorSpec, ...] = ()) -> ModelSpec:
    outputs = outputs or (tensor("y", "FP32", (4,)),)
    return ModelSpec(name="m", max_batch_size=max_batch_size, inputs={t.name: t for t in inputs}, outputs={t.name: t for t in outputs})


# A batching model (max_batch_size 8) with two inputs, and a non-batching one.
BATCHED = spec(8, tensor("a", "FP32", (4,)), tensor("b", "INT32", (-1,)))
PLAIN = spec(0, tensor("a", "FP32", (2, 4)))


def fp32(name: str, shape: tuple[int, ...]) -> InferInput:
    count = int(np.prod(shape))
    return InferInput(name=name, datatype="FP32", shape=shape, raw=struct.pack(f"<{count}f", *range(count)))


def int32(name: str, shape: tuple[int, ...]) -> InferInput:
    count = int(np.prod(shape))
    return InferInput(name=name, datatype="INT32", shape=shape, raw=struct.pack(f"<{count}i", *range(count)))


def request(*inputs: InferInput, request_id: str = "", outputs: tuple[RequestedOutput, ...] = ()) -> InferRequest:
    return InferRequest(model_name="m", id=request_id, inputs=list(inputs), outputs=list(outputs))


def refusal(model: ModelSpec, req: InferRequest, code: ErrorCode = ErrorCode.INVALID_ARG) -> str:
    with pytest.raises(ServerError) as caught:
        build_feeds(model, req)
    assert caught.value.code is code
    return caught.value.message


# --- the spec from a completed config ----------------------------------------------------------


def test_spec_from_config() -> None:
    config = text_format.Parse(
        'name: "m" max_batch_size: 4 '
        'input [ { name: "ids" data_type: TYPE_INT64 dims: [ 1 ] reshape {} }, '
        '        { name: "text" data_type: TYPE_STRING dims: [ -1 ] optional: true } ] '
        'output [ { name: "y" data_type: TYPE_FP16 dims: [ 2, 3 ] } ]',
        mc.ModelConfig(),
    )
    model = spec_from_config(config)
    assert model.batching
    assert model.inputs == {
        "ids": TensorSpec(name="ids", datatype="INT64", dims=(1,), reshape=(), scalar=True),
        "text": TensorSpec(name="text", datatype="BYTES", dims=(-1,), reshape=None, optional=True),
    }
    assert model.outputs == {"y": TensorSpec(name="y", datatype="FP16", dims=(2, 3), reshape=None)}
    # Metadata shows the config dims (not the reshape), with the batch dim when batching.
    assert model.wire_shape(model.inputs["ids"]) == (-1, 1)
    assert PLAIN.wire_shape(PLAIN.inputs["a"]) == (2, 4)


# --- accepted requests -------------------------------------------------------------------------


def test_feeds_decoded_with_batch_size() -> None:
    feeds, batch_size = build_feeds(BATCHED, request(fp32("a", (3, 4)), int32("b", (3, 5))))
    assert batch_size == 3
    assert feeds["a"].dtype == np.float32
    assert feeds["a"].shape == (3, 4)
    assert feeds["a"][2].tolist() == [8.0, 9.0, 10.0, 11.0]
    assert feeds["b"].shape == (3, 5)


def test_non_batching_model_has_batch_size_one() -> None:
    feeds, batch_size = build_feeds(PLAIN, request(fp32("a", (2, 4))))
    assert batch_size == 1
    assert feeds["a"].shape == (2, 4)


def test_array_input_is_used_as_given() -> None:
    array = np.ones((2, 4), dtype=np.float32)
    feeds, _ = build_feeds(PLAIN, request(InferInput(name="a", datatype="FP32", shape=(2, 4), array=array)))
    assert feeds["a"] is array


def test_reshape_applied_to_batched_feed() -> None:
    model = spec(8, tensor("ids", "INT32", (1,), reshape=()), tensor("img", "FP32", (12,), reshape=(3, 4)))
    feeds, batch_size = build_feeds(model, request(int32("ids", (5, 1)), fp32("img", (5, 12))))
    assert batch_size == 5
    assert feeds["ids"].shape == (5,)
    assert feeds["ids"].tolist() == [0, 1, 2, 3, 4]
    assert feeds["img"].shape == (5, 3, 4)


def test_reshape_applied_to_scalar_feed() -> None:
    model = spec(0, tensor("scale", "FP32", (1,), reshape=()))
    feeds, _ = build_feeds(model, request(fp32("scale", (1,))))
    assert feeds["scale"].shape == ()


SCALAR_GRAPH = GraphSignature(
    inputs=(GraphTensor("x", "FP32", (-1,)), GraphTensor("sr", "INT64", ())), outputs=(GraphTensor("y", "FP32", ()),)
)
SCALAR_CONFIG = (
    'name: "vad" input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] }, { name: "sr" data_type: TYPE_INT64 dims: [ 1 ] } ] '
    'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]'
)


def test_a_graph_scalar_described_as_dims_one_is_fed_as_a_scalar() -> None:
    model = spec_from_config(text_format.Parse(SCALAR_CONFIG, mc.ModelConfig()), SCALAR_GRAPH)
    assert model.inputs["sr"].scalar and model.inputs["sr"].reshape == ()
    assert model.outputs["y"].scalar and not model.inputs["x"].scalar
    assert model.wire_shape(model.inputs["sr"]) == (1,)


@pytest.mark.parametrize("shape", [(1,), ()], ids=["config-dims", "graph-rank-0"])
def test_a_scalar_input_is_accepted_as_config_dims_or_as_rank_0(shape: tuple[int, ...]) -> None:
    model = spec_from_config(text_format.Parse(SCALAR_CONFIG, mc.ModelConfig()), SCALAR_GRAPH)
    sr = InferInput(name="sr", datatype="INT64", shape=shape, raw=struct.pack("<q", 16000))
    feeds, _ = build_feeds(model, request(fp32("x", (3,)), sr))
    assert feeds["sr"].shape == () and int(feeds["sr"]) == 16000


def test_a_scalar_input_of_the_wrong_rank_is_refused_with_tritons_message() -> None:
    model = spec_from_config(text_format.Parse(SCALAR_CONFIG, mc.ModelConfig()), SCALAR_GRAPH)
    sr = InferInput(name="sr", datatype="INT64", shape=(1, 1), raw=struct.pack("<q", 16000))
    assert refusal(model, request(fp32("x", (3,)), sr)) == (
        f"{NO_ID}unexpected shape for input 'sr' for model 'vad'. Expected [1], got [1,1]. "
    )


def test_optional_input_may_be_left_out() -> None:
    model = spec(0, tensor("a", "FP32", (2, 4)), tensor("mask", "INT32", (-1,), optional=True))
    feeds, _ = build_feeds(model, request(fp32("a", (2, 4))))
    assert list(feeds) == ["a"]


# --- Triton's messages -------------------------------------------------------------------------


def test_unexpected_input() -> None:
    message = refusal(BATCHED, request(fp32("a", (1, 4)), int32("b", (1, 1)), fp32("z", (1, 4))))
    assert message == "unexpected inference input 'z' for model 'm'"  # Triton: no request id here


def test_missing_required_input() -> None:
    model = spec(0, tensor("a", "FP32", (2, 4)), tensor("b", "FP32", (2, 4)))
    assert refusal(model, request(fp32("a", (2, 4)))) == NO_ID + (
        "expected 2 inputs but got 1 inputs for model 'm'. Got input(s) ['a'], but missing required input(s) ['b']. "
        "Please provide all required input(s)."
    )


def test_missing_required_input_with_optional_inputs() -> None:
    model = spec(0, tensor("a", "FP32", (2, 4)), tensor("b", "FP32", (2, 4)), tensor("c", "FP32", (2, 4), optional=True))
    assert refusal(model, request()) == NO_ID + (
        "expected number of inputs between 2 and 3 but got 0 inputs for model 'm'. Got input(s) [], "
        "but missing required input(s) ['a', 'b']. Please provide all required input(s)."
    )


def test_duplicate_input() -> None:
    assert refusal(PLAIN, request(fp32("a", (2, 4)), fp32("a", (2, 4)))) == NO_ID + "input 'a' is given more than once for model 'm'"


def test_wrong_datatype() -> None:
    assert refusal(PLAIN, request(int32("a", (2, 4)))) == NO_ID + "inference input 'a' data-type is 'INT32', but model 'm' expects 'FP32'"


def test_bf16_input_is_unsupported() -> None:
    item = InferInput(name="a", datatype="BF16", shape=(2, 4), raw=b"\x00" * 16)
    assert refusal(PLAIN, request(item), ErrorCode.UNSUPPORTED).startswith(NO_ID + "tensor 'a' has datatype BF16")


def test_wrong_shape_batching_has_note() -> None:
    message = refusal(BATCHED, request(fp32("a", (1, 5)), int32("b", (1, 2))))
    assert message == NO_ID + "unexpected shape for input 'a' for model 'm'. Expected [-1,4], got [1,5]. " + BATCH_NOTE


def test_wrong_shape_non_batching_has_no_note() -> None:
    assert refusal(PLAIN, request(fp32("a", (4, 2)))) == NO_ID + "unexpected shape for input 'a' for model 'm'. Expected [2,4], got [4,2]. "


@pytest.mark.parametrize("shape", [(2,), (2, 4, 1)], ids=["rank-low", "rank-high"])
def test_wrong_shape_variants(shape: tuple[int, ...]) -> None:
    item = InferInput(name="a", datatype="FP32", shape=shape, raw=b"")
    assert refusal(PLAIN, request(item)).startswith(NO_ID + "unexpected shape for input 'a' for model 'm'. Expected [2,4], got [")


@pytest.mark.parametrize("shape", [(2, -1), (-1, 4)], ids=["negative-dim", "negative-first"])
def test_unspecified_dims_get_tritons_message(shape: tuple[int, ...]) -> None:
    item = InferInput(name="a", datatype="FP32", shape=shape, raw=b"")
    expected = f"All input dimensions should be specified for input 'a' for model 'm', got [{shape[0]},{shape[1]}]"
    assert refusal(PLAIN, request(item)) == NO_ID + expected


def test_no_shape_on_batching_model() -> None:
    item = InferInput(name="a", datatype="FP32", shape=(), raw=b"\x00" * 4)
    message = refusal(BATCHED, request(item, int32("b", (1, 1))))
    assert message == NO_ID + "input 'a' has no shape but model requires batch dimension for 'm'"


def test_batch_size_mismatch() -> None:
    message = refusal(BATCHED, request(fp32("a", (2, 4)), int32("b", (3, 1))))
    assert message == NO_ID + "input 'b' batch size does not match other inputs for 'm'"


def test_batch_size_over_max() -> None:
    message = refusal(BATCHED, request(fp32("a", (9, 4)), int32("b", (9, 1))))
    assert message == NO_ID + "inference request batch-size must be <= 8 for 'm'"


def test_batch_size_at_max_is_accepted() -> None:
    assert build_feeds(BATCHED, request(fp32("a", (8, 4)), int32("b", (8, 1))))[1] == 8


def test_byte_size_mismatch_has_request_id() -> None:
    item = InferInput(name="a", datatype="FP32", shape=(2, 4), raw=b"\x00" * 12)
    message = refusal(PLAIN, request(item, request_id="abc"))
    assert message == "[request id: abc] input byte size mismatch for input 'a' for model 'm'. Expected 32, got 12"


def test_input_without_data() -> None:
    item = InferInput(name="a", datatype="FP32", shape=(2, 4))
    assert refusal(PLAIN, request(item)) == NO_ID + "input 'a' for model 'm' has no data"


def test_request_id_prefix() -> None:
    assert refusal(PLAIN, request(request_id="abc")).startswith("[request id: abc] expected 1 inputs but got 0 inputs")


# --- requested outputs -------------------------------------------------------------------------

TWO_OUTPUTS = spec(
    0, tensor("a", "FP32", (2, 4)), outputs=(tensor("y", "FP32", (4,)), tensor("z", "FP32", (4,)), tensor("flags", "BOOL", (4,)))
)


def test_no_requested_outputs_means_all() -> None:
    assert requested_output_names(TWO_OUTPUTS, request()) == ("y", "z", "flags")


def test_requested_outputs_in_request_order() -> None:
    assert requested_output_names(TWO_OUTPUTS, request(outputs=(RequestedOutput("z"), RequestedOutput("y")))) == ("z", "y")


@pytest.mark.parametrize(
    ("output", "code", "message"),
    [
        (RequestedOutput("w"), ErrorCode.INVALID_ARG, "unexpected inference output 'w' for model 'm'"),
        (
            RequestedOutput("flags", class_count=2),
            ErrorCode.INVALID_ARG,
            "class result not available for output due to unsupported type 'BOOL'",
        ),
    ],
    ids=["unexpected", "classification-of-bool"],
)
def test_requested_output_refused(output: RequestedOutput, code: ErrorCode, message: str) -> None:
    with pytest.raises(ServerError) as caught:
        requested_output_names(TWO_OUTPUTS, request(outputs=(output,), request_id="r1"))
    assert caught.value.code is code
    assert caught.value.message == message


def test_a_classification_output_is_computed_under_its_own_name() -> None:
    asked = request(outputs=(RequestedOutput("y", class_count=3),))
    assert requested_output_names(TWO_OUTPUTS, asked) == ("y",)


# --- request parameters ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("parameters", "expected"),
    [
        ({}, SchedulingParameters(priority=0, timeout_us=0)),
        ({"priority": 2}, SchedulingParameters(priority=2, timeout_us=0)),
        ({"timeout": 5000}, SchedulingParameters(priority=0, timeout_us=5000)),
        ({"priority": 1, "timeout": 2**63}, SchedulingParameters(priority=1, timeout_us=2**63)),
        ({"my_key": "v", "binary_data_output": True, "triton_enable_empty_final_response": False}, SchedulingParameters()),
        ({"sequence_id": 7, "sequence_start": True, "sequence_end": False}, SchedulingParameters(correlation=Correlation(7, start=True))),
        ({"sequence_id": "session-1"}, SchedulingParameters(correlation=Correlation("session-1"))),
        ({"sequence_id": -1, "sequence_end": True}, SchedulingParameters(correlation=Correlation(2**64 - 1, end=True))),
        ({"sequence_id": 0, "sequence_start": True}, SchedulingParameters()),
        ({"sequence_id": "", "sequence_start": True}, SchedulingParameters()),
    ],
    ids=[
        "none",
        "priority",
        "timeout",
        "both",
        "custom-and-allowed",
        "sequence-int",
        "sequence-string",
        "sequence-int64-as-unsigned",
        "zero-is-no-sequence",
        "empty-is-no-sequence",
    ],
)
def test_scheduling_parameters(parameters: dict[str, ParameterValue], expected: SchedulingParameters) -> None:
    assert scheduling_parameters(parameters) == expected


def test_a_string_sequence_id_over_128_characters_is_refused_as_triton_does() -> None:
    with pytest.raises(ServerError) as caught:
        scheduling_parameters({"sequence_id": "s" * 129})
    assert caught.value.code is ErrorCode.UNSUPPORTED
    assert caught.value.message == "string correlation ID cannot be longer than 128 characters"
    assert scheduling_parameters({"sequence_id": "s" * 128}).correlation == Correlation("s" * 128)


@pytest.mark.parametrize(
    ("parameters", "message"),
    [
        ({"priority": True}, "invalid value type for 'priority' parameter, expected int64 or uint64"),
        ({"priority": 1.5}, "invalid value type for 'priority' parameter, expected int64 or uint64"),
        ({"priority": "1"}, "invalid value type for 'priority' parameter, expected int64 or uint64"),
        ({"timeout": False}, "invalid value type for 'timeout' parameter, expected int64 or uint64"),
        ({"priority": -1}, "invalid value for 'priority' parameter, expected a value >= 0, got -1"),
        ({"timeout": -100}, "invalid value for 'timeout' parameter, expected a value >= 0, got -100"),
        (
            {"triton_max_tokens": 1},
            "parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified, got 'triton_max_tokens'",
        ),
        ({"triton_enable_empty_final_response": 1}, "invalid value type for 'triton_enable_empty_final_response' parameter, expected bool"),
        ({"sequence_start": 1}, "invalid value type for 'sequence_start' parameter, expected bool"),
        ({"sequence_id": 1.0}, "invalid value type for 'sequence_id' parameter, expected int64 or string"),
        ({"binary_data_output": "yes"}, "invalid value type for 'binary_data_output' parameter, expected bool"),
    ],
    ids=[
        "priority-bool",
        "priority-float",
        "priority-string",
        "timeout-bool",
        "priority-negative",
        "timeout-negative",
        "triton-reserved",
        "empty-final-not-bool",
        "sequence-start-not-bool",
        "sequence-id-float",
        "binary-data-output-not-bool",
    ],
)
def test_scheduling_parameters_refused(parameters: dict[str, ParameterValue], message: str) -> None:
    with pytest.raises(ServerError) as caught:
        scheduling_parameters(parameters)
    assert caught.value.code is ErrorCode.INVALID_ARG
    assert caught.value.message == message
