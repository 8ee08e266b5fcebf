"""validate_io_config: Triton's core shape rules for inputs, outputs, batch inputs and outputs."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from server.errors import ServerError
from server.model_config.io_validation import validate_io_config
from server.proto import model_config_pb2 as mc

BASE = (
    'name: "m" max_batch_size: 4 input [ { name: "x" data_type: TYPE_FP32 dims: [ -1 ] } ] '
    'output [ { name: "y" data_type: TYPE_FP32 dims: [ 1 ] } ]'
)


def config(extra: str = "", base: str = BASE) -> mc.ModelConfig:
    return text_format.Parse(base + " " + extra, mc.ModelConfig())


def refusal(cfg: mc.ModelConfig) -> str:
    with pytest.raises(ServerError) as caught:
        validate_io_config(cfg)
    return caught.value.message


def test_a_plain_config_passes() -> None:
    validate_io_config(config())


def test_dims_are_required() -> None:
    cfg = config()
    cfg.input[0].ClearField("dims")
    assert refusal(cfg) == "model input must specify 'dims' for m"


def test_a_zero_dim_is_refused() -> None:
    cfg = config()
    cfg.output[0].dims[:] = [0]
    assert refusal(cfg) == "model output dimension must be integer >= 1, or -1 to indicate a variable-size dimension for m"


def test_an_empty_reshape_needs_batching() -> None:
    cfg = config()
    cfg.max_batch_size = 0
    cfg.output[0].reshape.SetInParent()
    assert refusal(cfg) == "model output cannot have empty reshape for non-batching model as scalar tensors are not supported for m"
    cfg.max_batch_size = 4
    validate_io_config(cfg)


@pytest.mark.parametrize(
    ("dims", "reshape", "expected"),
    [
        ([16], [2, 8], None),
        ([2, -1, 6], [2, -1, 3, 2], None),
        ([16], [4, 5], "model input has different size for dims and reshape for m"),
        ([-1, 4], [-1, 2, -1], "model input has different number of variable-size dimensions for dims and reshape for m"),
        ([-1, 4], [-1, 2], "model input has different size for dims and reshape for m"),
        ([4], [0, 4], "model input reshape dimensions must be integer >= 1, or -1 to indicate a variable-size dimension for m"),
    ],
)
def test_reshape_must_keep_the_element_count(dims: list[int], reshape: list[int], expected: str | None) -> None:
    cfg = config()
    cfg.input[0].dims[:] = dims
    cfg.input[0].reshape.shape[:] = reshape
    if expected is None:
        validate_io_config(cfg)
    else:
        assert refusal(cfg) == expected


def test_batch_inputs_are_checked() -> None:
    good = 'batch_input [ { kind: BATCH_ELEMENT_COUNT target_name: "n" data_type: TYPE_INT32 source_input: "x" } ]'
    validate_io_config(config(good))
    assert refusal(config(good.replace('"x"', '"nope"'))) == "unknown source input name 'nope' for m"
    assert refusal(config(good.replace("TYPE_INT32", "TYPE_INT64"))) == "batch input data type must be TYPE_INT32 or TYPE_FP32 for m"
    two_sources = good.replace('source_input: "x"', 'source_input: [ "x", "x" ]')
    assert refusal(config(two_sources)) == "batch input kind 'BATCH_ELEMENT_COUNT' expects 1 source input, got 2 for m"


def test_batch_outputs_are_checked() -> None:
    good = 'batch_output [ { target_name: "y" kind: BATCH_SCATTER_WITH_INPUT_SHAPE source_input: "x" } ]'
    validate_io_config(config(good))
    assert refusal(config(good.replace('target_name: "y"', 'target_name: "z"'))) == "unknown target output name 'z' for m"
    twice = good.replace('target_name: "y"', 'target_name: [ "y", "y" ]')
    assert refusal(config(twice)) == "target output name 'y' can only be specified once for m"
