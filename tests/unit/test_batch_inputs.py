"""Triton's batch inputs, kind by kind, from the shapes of the requests in a batch."""

from __future__ import annotations

import numpy as np
import pytest

from server.model_config.batch_inputs import BatchInputSpec, batch_input_array
from server.proto import model_config_pb2 as mc
from server.scheduling.execution import merge_feeds

K = mc.BatchInput
# Three requests: a ragged source of 3, 1 and 2 elements, each with batch dim 1.
SHAPES = [(1, 3), (1, 1), (1, 2)]


def spec(kind: int, dtype: type = np.int32) -> BatchInputSpec:
    return BatchInputSpec(kind, ("target",), "x", np.dtype(dtype))


@pytest.mark.parametrize(
    ("kind", "expected"),
    [
        (K.BATCH_ELEMENT_COUNT, [3, 1, 2]),
        (K.BATCH_ACCUMULATED_ELEMENT_COUNT, [3, 4, 6]),
        (K.BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO, [0, 3, 4, 6]),
        (K.BATCH_MAX_ELEMENT_COUNT_AS_SHAPE, [0, 0, 0]),
        (K.BATCH_ITEM_SHAPE, [[3], [1], [2]]),
        (K.BATCH_ITEM_SHAPE_FLATTEN, [3, 1, 2]),
    ],
)
def test_each_kind(kind: int, expected: list) -> None:
    array = batch_input_array(spec(kind), SHAPES)
    assert array.dtype == np.int32
    assert array.tolist() == expected


def test_fp32_batch_inputs() -> None:
    assert batch_input_array(spec(K.BATCH_ELEMENT_COUNT, np.float32), SHAPES).dtype == np.float32


def test_item_shape_repeats_per_batch_item_and_counts_whole_requests() -> None:
    shapes = [(2, 4, 5), (1, 3, 5)]
    assert batch_input_array(spec(K.BATCH_ITEM_SHAPE), shapes).tolist() == [[4, 5], [4, 5], [3, 5]]
    assert batch_input_array(spec(K.BATCH_ELEMENT_COUNT), shapes).tolist() == [40, 15]


def test_merge_feeds_concatenates_flat_ragged_inputs_and_adds_batch_inputs() -> None:
    class Job:
        def __init__(self, values: list[float]) -> None:
            self.feeds = {"x": np.array(values, np.float32)}
            self.source_shapes = {"x": (1, len(values))}

    jobs = [Job([1, 2, 3]), Job([4]), Job([5, 6])]
    feeds = merge_feeds(jobs, (BatchInputSpec(K.BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO, ("offsets",), "x", np.dtype(np.int32)),))  # type: ignore[arg-type]
    assert feeds["x"].tolist() == [1, 2, 3, 4, 5, 6]
    assert feeds["offsets"].tolist() == [0, 3, 4, 6]
