"""Auto-complete: Triton's core fields, the ORT backend's graph rules, instance groups, batching defaults."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from server.errors import ErrorCode, ServerError
from server.model_config.autocomplete import (
    complete_batching_defaults,
    complete_core_fields,
    complete_from_graph,
    complete_instance_groups,
)
from server.model_config.signature import GraphSignature, GraphTensor
from server.model_config.validation import validate_config
from server.proto import model_config_pb2 as mc

KIND_CPU = mc.ModelInstanceGroup.KIND_CPU
KIND_GPU = mc.ModelInstanceGroup.KIND_GPU

BATCHABLE = GraphSignature(
    inputs=(GraphTensor("INPUT0", "FP32", (-1, 16)), GraphTensor("TOKENS", "INT64", (-1, -1))),
    outputs=(GraphTensor("OUTPUT0", "FP32", (-1, 16)),),
)
# A recurrent state tensor with a fixed leading dim: the graph cannot be batched by Triton.
FIXED_LEADING = GraphSignature(
    inputs=(GraphTensor("x", "FP32", (-1, 8)), GraphTensor("state", "FP32", (2, -1, 128))),
    outputs=(GraphTensor("y", "FP32", (-1, 8)), GraphTensor("state_out", "FP32", (2, -1, 128))),
)


def config(text: str = "", name: str = "m") -> mc.ModelConfig:
    parsed = text_format.Parse(text, mc.ModelConfig())
    parsed.name = parsed.name or name
    return parsed


def dims(entry: mc.ModelInput | mc.ModelOutput) -> list[int]:
    return list(entry.dims)


# --- core fields -------------------------------------------------------------------------------


def test_core_fields_filled_on_empty_config() -> None:
    completed = complete_core_fields(mc.ModelConfig(), "resnet")
    assert completed.name == "resnet"
    assert completed.platform == "onnxruntime_onnx"
    assert completed.backend == "onnxruntime"
    assert completed.default_model_filename == "model.onnx"
    assert completed.version_policy.WhichOneof("policy_choice") == "latest"
    assert completed.version_policy.latest.num_versions == 1


@pytest.mark.parametrize(
    "text",
    ['platform: "onnxruntime_onnx"', 'backend: "onnxruntime"', 'platform: "onnxruntime_onnx" backend: "onnxruntime"'],
    ids=["platform-only", "backend-only", "both"],
)
def test_core_fields_set_platform_and_backend_from_each_other(text: str) -> None:
    completed = complete_core_fields(config(text), "m")
    assert (completed.platform, completed.backend) == ("onnxruntime_onnx", "onnxruntime")


def test_core_fields_keep_what_the_config_sets() -> None:
    given = config('default_model_filename: "net.onnx" version_policy { all {} }')
    completed = complete_core_fields(given, "m")
    assert completed.default_model_filename == "net.onnx"
    assert completed.version_policy.WhichOneof("policy_choice") == "all"


def test_core_fields_do_not_modify_the_input() -> None:
    given = mc.ModelConfig()
    complete_core_fields(given, "m")
    assert given == mc.ModelConfig()


def test_core_fields_name_mismatch() -> None:
    with pytest.raises(ServerError) as caught:
        complete_core_fields(config('name: "other"'), "m")
    assert caught.value.code is ErrorCode.INVALID_ARG
    assert caught.value.message == "model config name 'other' does not match the model directory name 'm'"


@pytest.mark.parametrize(
    "text",
    ['platform: "tensorrt_plan"', 'backend: "python"', 'platform: "ensemble"', 'platform: "onnxruntime_onnx" backend: "tensorrt"'],
    ids=["tensorrt", "python", "ensemble", "mixed"],
)
def test_core_fields_refuse_another_kinds_platform(text: str) -> None:
    with pytest.raises(ServerError, match=r"this kind of model is platform 'onnxruntime_onnx', backend 'onnxruntime'$"):
        complete_core_fields(config(text), "m")


def test_core_fields_fill_in_the_kind_they_are_given() -> None:
    completed = complete_core_fields(config('platform: "ensemble"'), "m", platform="ensemble", backend="", default_filename="")
    assert (completed.platform, completed.backend, completed.default_model_filename) == ("ensemble", "", "")


# --- from the graph ---------------------------------------------------------------------------


def test_batchable_graph_gets_default_batch_size_and_dynamic_batching() -> None:
    completed = complete_from_graph(config(), BATCHABLE)
    assert completed.max_batch_size == 4
    assert completed.HasField("dynamic_batching")
    assert [(t.name, mc.DataType.Name(t.data_type), dims(t)) for t in completed.input] == [
        ("INPUT0", "TYPE_FP32", [16]),
        ("TOKENS", "TYPE_INT64", [-1]),
    ]
    assert [(t.name, dims(t)) for t in completed.output] == [("OUTPUT0", [16])]
    assert not completed.input[0].HasField("reshape")


def test_custom_default_max_batch_size() -> None:
    assert complete_from_graph(config(), BATCHABLE, default_max_batch_size=16).max_batch_size == 16


def test_default_max_batch_size_one_adds_no_dynamic_batching() -> None:
    completed = complete_from_graph(config(), BATCHABLE, default_max_batch_size=1)
    assert completed.max_batch_size == 1
    assert completed.WhichOneof("scheduling_choice") is None


def test_config_batch_size_is_kept() -> None:
    completed = complete_from_graph(config("max_batch_size: 32"), BATCHABLE)
    assert completed.max_batch_size == 32
    assert completed.HasField("dynamic_batching")


def test_sequence_batching_is_not_replaced_by_dynamic_batching() -> None:
    completed = complete_from_graph(config("max_batch_size: 8 sequence_batching {}"), BATCHABLE)
    assert completed.WhichOneof("scheduling_choice") == "sequence_batching"


def test_fixed_leading_dim_means_no_batching_and_whole_dims() -> None:
    completed = complete_from_graph(config(), FIXED_LEADING)
    assert completed.max_batch_size == 0
    assert completed.WhichOneof("scheduling_choice") is None
    assert [(t.name, dims(t)) for t in completed.input] == [("x", [-1, 8]), ("state", [2, -1, 128])]
    assert [(t.name, dims(t)) for t in completed.output] == [("y", [-1, 8]), ("state_out", [2, -1, 128])]


def test_non_batchable_graph_with_max_batch_size_fails() -> None:
    with pytest.raises(ServerError) as caught:
        complete_from_graph(config("max_batch_size: 8"), FIXED_LEADING)
    assert caught.value.code is ErrorCode.INVALID_ARG
    assert caught.value.message == (
        "autofill failed for model 'm': model does not support batching while non-zero max_batch_size is specified"
    )


def test_scalar_input_gets_dims_one_and_no_reshape_without_batching() -> None:
    # Triton's ORT backend: dims [1]; an empty reshape only when batching (its core refuses one
    # without batching). The scalar is still fed as a scalar (server/repository/spec.py).
    graph = GraphSignature(inputs=(GraphTensor("scale", "FP32", ()),), outputs=(GraphTensor("y", "FP32", (3,)),))
    completed = complete_from_graph(config(), graph)
    assert completed.max_batch_size == 0
    scalar = completed.input[0]
    assert dims(scalar) == [1]
    assert not scalar.HasField("reshape")
    assert dims(completed.output[0]) == [3]
    assert not completed.output[0].HasField("reshape")


def test_rank1_batched_tensor_gets_dims_one_and_empty_reshape() -> None:
    graph = GraphSignature(inputs=(GraphTensor("ids", "INT64", (-1,)),), outputs=(GraphTensor("score", "FP32", (-1,)),))
    completed = complete_from_graph(config(), graph)
    assert completed.max_batch_size == 4
    for entry in (completed.input[0], completed.output[0]):
        assert dims(entry) == [1]
        assert entry.HasField("reshape")
        assert list(entry.reshape.shape) == []


def test_partial_config_fills_only_missing_outputs() -> None:
    given = config('max_batch_size: 2 input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 16 ] } ]')
    completed = complete_from_graph(given, BATCHABLE)
    assert completed.max_batch_size == 2
    # INPUT0 is kept as given and not duplicated; TOKENS (missing from the config) is added.
    assert [t.name for t in completed.input] == ["INPUT0", "TOKENS"]
    assert [(t.name, dims(t)) for t in completed.output] == [("OUTPUT0", [16])]


def test_complete_config_is_untouched() -> None:
    # Deliberately wrong dims: auto-complete must not "fix" a config that lists inputs and outputs.
    given = config(
        'input [ { name: "INPUT0" data_type: TYPE_FP32 dims: [ 3 ] } ] output [ { name: "OUTPUT0" data_type: TYPE_FP32 dims: [ 3 ] } ]'
    )
    completed = complete_from_graph(given, BATCHABLE)
    assert completed == given
    assert completed.max_batch_size == 0
    assert completed.WhichOneof("scheduling_choice") is None


def test_from_graph_does_not_modify_the_input() -> None:
    given = config()
    complete_from_graph(given, BATCHABLE)
    assert given == config()


@pytest.mark.parametrize("ort_type", ["tensor(float8e4m3fn)", "seq(tensor(float))", "map(string,tensor(float))"])
def test_unknown_onnx_type_is_refused(ort_type: str) -> None:
    graph = GraphSignature(inputs=(GraphTensor("x", ort_type, (-1, 4)),), outputs=(GraphTensor("y", "FP32", (-1, 4)),))
    with pytest.raises(ServerError) as caught:
        complete_from_graph(config(), graph)
    assert caught.value.code is ErrorCode.INVALID_ARG
    assert caught.value.message == f"tensor 'x' has ONNX type '{ort_type}', which has no Triton datatype"


def test_bytes_graph_tensor_becomes_type_string() -> None:
    graph = GraphSignature(inputs=(GraphTensor("text", "BYTES", (-1, 1)),), outputs=(GraphTensor("y", "FP32", (-1, 2)),))
    assert complete_from_graph(config(), graph).input[0].data_type == mc.TYPE_STRING


def test_bf16_graph_tensor_completes_then_validation_refuses() -> None:
    graph = GraphSignature(inputs=(GraphTensor("x", "BF16", (-1, 4)),), outputs=(GraphTensor("y", "FP32", (-1, 4)),))
    completed = complete_from_graph(config(), graph)
    assert completed.input[0].data_type == mc.TYPE_BF16
    with pytest.raises(
        ServerError, match=r"^unable to load model 'm', input 'x' has data_type TYPE_BF16, which ortserve does not support$"
    ):
        validate_config(completed, graph)


def test_completed_config_validates() -> None:
    completed = complete_from_graph(complete_core_fields(mc.ModelConfig(), "m"), FIXED_LEADING)
    validate_config(completed, FIXED_LEADING)


# --- instance groups ---------------------------------------------------------------------------


def test_default_instance_group_is_one_cpu_instance() -> None:
    completed = config(name="resnet")
    complete_instance_groups(completed, gpu_count=0)
    assert [(g.name, g.kind, g.count, list(g.gpus)) for g in completed.instance_group] == [("resnet", KIND_CPU, 1, [])]


def test_kind_auto_resolves_to_gpu_with_all_gpus() -> None:
    completed = config()
    complete_instance_groups(completed, gpu_count=2)
    assert [(g.kind, g.count, list(g.gpus)) for g in completed.instance_group] == [(KIND_GPU, 1, [0, 1])]


def test_instance_groups_keep_given_values_and_name_the_rest() -> None:
    completed = config(
        'instance_group [ { kind: KIND_AUTO count: 3 }, { name: "fast" kind: KIND_GPU gpus: [ 1 ] }, { kind: KIND_CPU count: 0 } ]'
    )
    complete_instance_groups(completed, gpu_count=0)
    assert [(g.name, g.kind, g.count, list(g.gpus)) for g in completed.instance_group] == [
        ("m_0", KIND_CPU, 3, []),
        ("fast", KIND_GPU, 1, [1]),
        ("m_2", KIND_CPU, 1, []),
    ]


# --- batching defaults -------------------------------------------------------------------------


def test_preferred_batch_size_defaults_to_max_batch_size() -> None:
    completed = config("max_batch_size: 8 dynamic_batching {}")
    complete_batching_defaults(completed)
    assert list(completed.dynamic_batching.preferred_batch_size) == [8]


def test_preferred_batch_size_given_is_kept() -> None:
    completed = config("max_batch_size: 8 dynamic_batching { preferred_batch_size: [ 2, 4 ] }")
    complete_batching_defaults(completed)
    assert list(completed.dynamic_batching.preferred_batch_size) == [2, 4]


@pytest.mark.parametrize("text", ["max_batch_size: 8", "max_batch_size: 0 dynamic_batching {}"], ids=["no-dynamic", "no-batching"])
def test_preferred_batch_size_not_added(text: str) -> None:
    completed = config(text)
    complete_batching_defaults(completed)
    assert list(completed.dynamic_batching.preferred_batch_size) == []
