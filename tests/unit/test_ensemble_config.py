"""Ensemble configs: Triton's refusals (its words) with and without the members' configs, the
plan, the dependency graph, and how tensors cross between batching and non-batching steps."""

from __future__ import annotations

import numpy as np
import pytest

from server.errors import ServerError
from server.lifecycle.dependencies import DependencyGraph, circular_dependency_message
from server.model_config.config_file import parse_config_text
from server.model_config.ensemble_config import ensemble_members, ensemble_plan, validate_ensemble_config, validate_ensemble_members
from server.model_config.spec import spec_from_config
from server.proto import model_config_pb2 as mc
from server.scheduling.step_inputs import EnsembleTensor, conform, step_feeds, step_outputs

PRE = parse_config_text(
    """name: "pre" max_batch_size: 4
    input [ { name: "image", data_type: TYPE_UINT8, dims: [ 2, 3 ] } ]
    output [ { name: "x", data_type: TYPE_FP32, dims: [ 3, 2 ] } ]""",
    "pre",
)
CLS = parse_config_text(
    """name: "cls" max_batch_size: 8
    input [ { name: "x", data_type: TYPE_FP32, dims: [ 3, -1 ] } ]
    output [ { name: "probs", data_type: TYPE_FP32, dims: [ 2 ] } ]""",
    "cls",
)
STEPS = """
  step [
    { model_name: "pre", model_version: -1, input_map { key: "image" value: "IMAGE" }, output_map { key: "x" value: "t" } },
    { model_name: "cls", model_version: 1, input_map { key: "x" value: "t" }, output_map { key: "probs" value: "PROBS" } }
  ]
"""

UNUSED_INPUT = """input [ { name: "UNUSED", data_type: TYPE_UINT8, dims: [ 1 ] } ]
    output [ { name: "PROBS", data_type: TYPE_FP32, dims: [ 2 ] } ]"""


def ensemble(steps: str = STEPS, head: str = "max_batch_size: 4", io: str = "") -> mc.ModelConfig:
    io = (
        io
        or """input [ { name: "IMAGE", data_type: TYPE_UINT8, dims: [ 2, 3 ] } ]
    output [ { name: "PROBS", data_type: TYPE_FP32, dims: [ 2 ] } ]"""
    )
    return parse_config_text(f'name: "e" platform: "ensemble" {head}\n{io}\nensemble_scheduling {{ {steps} }}', "e")


def message(check: object, *args: object) -> str:
    with pytest.raises(ServerError) as caught:
        check(*args)  # type: ignore[operator]
    return caught.value.message


def test_a_valid_ensemble_passes_and_plans_its_steps() -> None:
    config = ensemble()
    validate_ensemble_config(config)
    validate_ensemble_members(config, {"pre": PRE, "cls": CLS})
    plan = ensemble_plan(config)
    assert [(s.model_name, s.version_str, s.inputs, s.outputs) for s in plan.steps] == [
        ("pre", "", (("image", "IMAGE"),), (("x", "t"),)),
        ("cls", "1", (("x", "t"),), (("probs", "PROBS"),)),
    ]
    assert plan.consumers == {"IMAGE": (0,), "t": (1,)}
    assert ensemble_members(config) == {"pre": {-1}, "cls": {1}}


@pytest.mark.parametrize(
    ("config", "expected"),
    [
        (ensemble(head="max_batch_size: 4 instance_group [ { count: 1 } ]"), "instance group should not be specified for ensemble 'e'"),
        (ensemble(steps=""), "must specify 'step' for ensemble 'e'"),
        (
            ensemble(steps='step [ { model_name: "pre", input_map { key: "image" value: "IMAGE" } } ]'),
            "must specify 'output_map' in step 0 of ensemble 'e'",
        ),
        (
            ensemble(steps=STEPS.replace('value: "t" } },\n    { model_name: "cls"', 'value: "PROBS" } },\n    { model_name: "cls"')),
            "ensemble tensor 'PROBS' can appear in an output map only once for ensemble 'e' step 1",
        ),
        (
            ensemble(steps=STEPS.replace('input_map { key: "x" value: "t" }', 'input_map { key: "x" value: "u" }')),
            "output 'PROBS' for ensemble 'e' is not written: at least one of its depending tensors, 'u', is not connected",
        ),
        (
            ensemble(
                steps="""step [
                  { model_name: "a", input_map { key: "i" value: "IMAGE" }, output_map { key: "o" value: "p" } },
                  { model_name: "b", input_map [ { key: "i" value: "p" }, { key: "j" value: "q" } ], output_map { key: "o" value: "q" } },
                  { model_name: "c", input_map { key: "i" value: "q" }, output_map { key: "o" value: "PROBS" } } ]"""
            ),
            "output 'PROBS' for ensemble 'e' is not written: at least one of its depending tensors, 'q', is not connected",
        ),
        (
            ensemble(io=UNUSED_INPUT),
            "ensemble input 'UNUSED' for ensemble e' is not used",
        ),
    ],
    ids=["instance-group", "no-step", "no-output-map", "produced-twice", "unconnected", "cycle", "unused-input"],
)
def test_config_refusals_are_tritons(config: mc.ModelConfig, expected: str) -> None:
    assert message(validate_ensemble_config, config) == expected


def test_a_member_input_left_unmapped_names_model_and_input() -> None:
    two_inputs = mc.ModelConfig()
    two_inputs.CopyFrom(PRE)
    two_inputs.input.add(name="mask", data_type=mc.TYPE_UINT8, dims=[1])
    assert message(validate_ensemble_members, ensemble(), {"pre": two_inputs, "cls": CLS}) == (
        "in ensemble e, input mask in model pre is not mapped to any ensemble tensors"
    )


def test_a_mapping_to_an_input_the_member_lacks_is_refused() -> None:
    steps = STEPS.replace('key: "image" value: "IMAGE"', 'key: "picture" value: "IMAGE"')
    assert message(validate_ensemble_members, ensemble(steps), {"pre": PRE, "cls": CLS}) == (
        "in ensemble e, ensemble tensor IMAGE is mapping to non-existing input picture in model pre"
    )


def test_inconsistent_datatypes_and_shapes_are_refused_naming_both_models() -> None:
    fp16 = mc.ModelConfig()
    fp16.CopyFrom(CLS)
    fp16.input[0].data_type = mc.TYPE_FP16
    assert message(validate_ensemble_members, ensemble(), {"pre": PRE, "cls": fp16}) == (
        "in ensemble e, ensemble tensor t: inconsistent data type: TYPE_FP32 is inferred from model pre "
        "while TYPE_FP16 is inferred from model cls"
    )
    narrow = mc.ModelConfig()
    narrow.CopyFrom(CLS)
    narrow.input[0].dims[:] = [4, -1]
    assert message(validate_ensemble_members, ensemble(), {"pre": PRE, "cls": narrow}) == (
        "in ensemble e, ensemble tensor t: inconsistent shape: [-1,3,2] is inferred from model pre "
        "while [-1,4,-1] is inferred from model cls"
    )


def test_the_ensemble_batch_size_may_not_exceed_a_members() -> None:
    assert message(validate_ensemble_members, ensemble(head="max_batch_size: 6"), {"pre": PRE, "cls": CLS}) == (
        "ensemble e allows maximum batch size 6, but it contains model pre which only allows maximum batch size to be 4"
    )


# ---- the dependency graph --------------------------------------------------------------------


def test_dependents_and_cycles() -> None:
    graph = DependencyGraph()
    graph.set_members("pipeline", {"pre", "cls"})
    graph.set_members("outer", {"pipeline"})
    assert graph.dependents("pre") == ["pipeline"]
    assert graph.all_dependents("pre") == ["pipeline", "outer"]
    assert graph.cycle_through("outer") is None
    graph.set_members("pipeline", {"pre", "outer"})
    cycle = graph.cycle_through("outer")
    assert cycle == ["outer", "pipeline", "outer"]
    assert circular_dependency_message(cycle) == "circular dependency between ensembles: outer -> ... -> pipeline -> outer"
    graph.forget("pipeline")
    assert graph.dependents("pre") == [] and graph.cycle_through("outer") is None


# ---- tensors between steps -------------------------------------------------------------------


def test_a_batched_tensor_feeds_a_non_batching_member_without_its_batch_dim_of_one() -> None:
    tensor = EnsembleTensor(np.zeros((1, 3, 2), np.float32), batch_size=1)
    assert conform((3, 2), batching=False, tensor=tensor).shape == (3, 2)
    unbatched = EnsembleTensor(np.zeros((3, 2), np.float32), batch_size=0)
    assert conform((3, 2), batching=True, tensor=unbatched).shape == (1, 3, 2)
    assert conform((3, 2), batching=True, tensor=tensor) is tensor.array  # no copy when both batch


def test_step_feeds_check_a_members_shape_with_tritons_message() -> None:
    spec = spec_from_config(CLS)
    good = step_feeds(spec, {"x": EnsembleTensor(np.zeros((2, 3, 5), np.float32), 2)})
    assert good.rows == 2 and good.shape_key == (("x", (3, 5)),)
    with pytest.raises(ServerError) as caught:
        step_feeds(spec, {"x": EnsembleTensor(np.zeros((2, 4, 5), np.float32), 2)})
    assert caught.value.message == "unexpected shape for input 'x' for model 'cls'. Expected [-1,3,-1], got [2,4,5]. "
    with pytest.raises(ServerError) as caught:
        step_feeds(spec, {"x": EnsembleTensor(np.zeros((2, 3, 5), np.float64), 2)})
    assert caught.value.message == "inference input 'x' data-type is 'FP64', but model 'cls' expects 'FP32'"


def test_step_outputs_carry_the_members_batch_size() -> None:
    produced = step_outputs(spec_from_config(CLS), {"probs": np.zeros((3, 2), np.float32)}, rows=3)
    assert produced["probs"].batch_size == 3
