"""Triton's classification extension: top-k strings, value formatting, ties, labels, shapes."""

from __future__ import annotations

import numpy as np
import pytest

from server.errors import ServerError
from server.model_config.labels import read_labels
from server.service.classification import check_classifiable, top_classes


def test_batched_rows_rank_their_own_classes() -> None:
    scores = np.array([[0.1, 0.7, 0.2], [0.5, 0.25, 0.25]], np.float32)
    result = top_classes(scores, 2, batched=True)
    assert result.shape == (2, 2)
    assert result.tolist() == [["0.700000:1", "0.200000:2"], ["0.500000:0", "0.250000:1"]]


def test_labels_are_appended_when_the_index_has_one() -> None:
    scores = np.array([[1.0, 3.0, 2.0]], np.float32)
    assert top_classes(scores, 3, batched=True, labels=("cat", "dog")).tolist() == [["3.000000:1:dog", "2.000000:2", "1.000000:0:cat"]]


def test_without_batching_the_whole_tensor_is_ranked() -> None:
    scores = np.array([[1, 9], [5, 7]], np.int32)
    result = top_classes(scores, 3, batched=False)
    assert result.shape == (3,)
    assert result.tolist() == ["9:1", "7:3", "5:2"]


def test_count_is_capped_at_the_number_of_classes() -> None:
    assert top_classes(np.zeros((1, 2), np.float64), 10, batched=True).shape == (1, 2)


def test_ties_rank_the_lower_index_first_and_unsigned_values_sort_correctly() -> None:
    scores = np.array([[7, 255, 7, 0]], np.uint8)
    assert top_classes(scores, 4, batched=True).tolist() == [["255:1", "7:0", "7:2", "0:3"]]


def test_extra_dims_are_flattened_per_batch_entry() -> None:
    scores = np.arange(8, dtype=np.float32).reshape(2, 2, 2)
    assert top_classes(scores, 1, batched=True).tolist() == [["3.000000:3"], ["7.000000:3"]]


@pytest.mark.parametrize("datatype", ["FP16", "BOOL", "BYTES"])
def test_types_triton_cannot_rank_are_refused_with_its_message(datatype: str) -> None:
    with pytest.raises(ServerError, match=f"^class result not available for output due to unsupported type '{datatype}'$"):
        check_classifiable("y", datatype)


@pytest.mark.parametrize(("text", "labels"), [("", ()), ("a\nb\n", ("a", "b")), ("a\n\nc", ("a", "", "c"))])
def test_label_files_hold_one_label_per_line(text: str, labels: tuple[str, ...]) -> None:
    assert read_labels(text) == labels
