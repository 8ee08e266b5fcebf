"""The response cache's key: everything that decides a result changes it, nothing else does."""

from __future__ import annotations

import dataclasses
import struct
from collections.abc import Callable

import numpy as np
import pytest

from server.model_config.spec import ModelSpec, TensorSpec
from server.service.cache_key import DIGEST_BYTES, request_key
from server.service.request_inputs import FeedPlan, requested_output_names, validate_inputs
from server.types import InferInput, InferRequest, ParameterValue, RequestedOutput

SPEC = ModelSpec(
    name="m",
    max_batch_size=8,
    inputs={"a": TensorSpec("a", "FP32", (-1,), None), "b": TensorSpec("b", "INT32", (-1,), None)},
    outputs={"y": TensorSpec("y", "FP32", (-1,), None), "z": TensorSpec("z", "FP32", (-1,), None)},
)
TOKEN = b"version-token-1"


def fp32(values: list[float], name: str = "a") -> InferInput:
    return InferInput(name, "FP32", (1, len(values)), raw=struct.pack(f"<{len(values)}f", *values))


def int32(values: list[int], name: str = "b") -> InferInput:
    return InferInput(name, "INT32", (1, len(values)), raw=struct.pack(f"<{len(values)}i", *values))


def base(**changes: object) -> InferRequest:
    request = InferRequest("m", inputs=[fp32([1.0, 2.0]), int32([3, 4])])
    return dataclasses.replace(request, **changes)  # type: ignore[arg-type]


def key(request: InferRequest, token: bytes = TOKEN) -> bytes:
    return request_key(token, request, plan(request), requested_output_names(SPEC, request))


def plan(request: InferRequest) -> FeedPlan:
    """The plan validation would give, in the model's input order; built by hand so that requests
    no model would accept (another datatype, another shape) can be keyed too."""
    positions = {item.name: index for index, item in enumerate(request.inputs)}
    order = tuple((positions[name], TensorSpec(name, "FP32", (-1,), None)) for name in sorted(positions))
    return FeedPlan(1, order, (), {})


def test_the_hand_built_plan_orders_inputs_as_validation_does() -> None:
    request = base(inputs=[int32([3, 4]), fp32([1.0, 2.0])])
    assert [index for index, _ in plan(request).order] == [index for index, _ in validate_inputs(SPEC, request).order]


def with_parameters(parameters: dict[str, ParameterValue]) -> InferRequest:
    return base(parameters=parameters)


def test_a_key_is_128_bits_and_the_same_for_the_same_request() -> None:
    assert len(key(base())) == DIGEST_BYTES == 16
    assert key(base()) == key(base())


CHANGES: dict[str, Callable[[], InferRequest]] = {
    "data": lambda: base(inputs=[fp32([1.0, 2.5]), int32([3, 4])]),
    "datatype-same-bytes": lambda: base(inputs=[fp32([1.0, 2.0]), dataclasses.replace(int32([3, 4]), datatype="UINT32")]),
    "shape-same-bytes": lambda: base(inputs=[dataclasses.replace(fp32([1.0, 2.0]), shape=(2, 1)), int32([3, 4])]),
    "input-name": lambda: base(inputs=[fp32([1.0, 2.0]), int32([3, 4], name="c")]),
    "bytes-moved-between-inputs": lambda: base(inputs=[fp32([1.0]), InferInput("b", "INT32", (1, 3), raw=struct.pack("<f2i", 2.0, 3, 4))]),
    "one-output": lambda: base(outputs=[RequestedOutput("y")]),
    "outputs-reordered": lambda: base(outputs=[RequestedOutput("z"), RequestedOutput("y")]),
    "classification": lambda: base(outputs=[RequestedOutput("y", class_count=2), RequestedOutput("z")]),
    "custom-parameter": lambda: with_parameters({"temperature": 1}),
    "input-parameter": lambda: base(inputs=[dataclasses.replace(fp32([1.0, 2.0]), parameters={"scale": 2}), int32([3, 4])]),
}


@pytest.mark.parametrize("change", list(CHANGES.values()), ids=list(CHANGES))
def test_anything_that_can_change_the_result_changes_the_key(change: Callable[[], InferRequest]) -> None:
    assert key(change()) != key(base())


def test_the_version_token_seeds_the_key() -> None:
    assert key(base(), b"version-token-2") != key(base())


def test_a_parameter_value_of_another_type_is_another_parameter() -> None:
    keys = {key(with_parameters({"p": value})) for value in (1, 1.0, True, "1")}
    assert len(keys) == 4


@pytest.mark.parametrize(
    "parameters",
    [{"priority": 3}, {"timeout": 1000}, {"sequence_id": 7}, {"triton_enable_empty_final_response": True}, {"binary_data_output": True}],
    ids=["priority", "timeout", "sequence-id", "triton", "binary-data-output"],
)
def test_parameters_that_only_place_or_render_a_request_leave_the_key(parameters: dict[str, ParameterValue]) -> None:
    assert key(with_parameters(parameters)) == key(base())


def test_naming_every_output_in_the_model_order_is_the_same_as_naming_none() -> None:
    assert key(base(outputs=[RequestedOutput("y"), RequestedOutput("z")])) == key(base())


def test_the_order_inputs_are_listed_in_does_not_matter() -> None:
    assert key(base(inputs=[int32([3, 4]), fp32([1.0, 2.0])])) == key(base())


def test_typed_contents_and_raw_bytes_of_one_tensor_share_a_key_and_are_decoded_once() -> None:
    calls: list[int] = []

    def decode() -> np.ndarray:
        calls.append(1)
        return np.array([[1.0, 2.0]], np.float32)

    typed = base(inputs=[InferInput("a", "FP32", (1, 2), decode=decode), int32([3, 4])])
    assert key(typed) == key(base())
    assert calls == [1]
    assert typed.inputs[0].decode is None and typed.inputs[0].array is not None


def test_bytes_as_text_and_as_their_wire_form_share_a_key() -> None:
    spec = dataclasses.replace(SPEC, inputs={"s": TensorSpec("s", "BYTES", (-1,), None)})
    raw = struct.pack("<I", 2) + b"hi" + struct.pack("<I", 3) + b"you"
    as_raw = InferRequest("m", inputs=[InferInput("s", "BYTES", (1, 2), raw=raw)])
    as_text = InferRequest("m", inputs=[InferInput("s", "BYTES", (1, 2), array=np.array([["hi", "you"]], dtype=object))])
    keys = [request_key(TOKEN, r, validate_inputs(spec, r), requested_output_names(spec, r)) for r in (as_raw, as_text)]
    assert keys[0] == keys[1]


def test_shared_memory_placement_is_not_part_of_an_output() -> None:
    placed = base(outputs=[RequestedOutput("y", {"shared_memory_region": "r", "shared_memory_byte_size": 8}), RequestedOutput("z")])
    assert key(placed) == key(base(outputs=[RequestedOutput("y"), RequestedOutput("z")]))
