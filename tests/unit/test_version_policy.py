"""Version policy: which version directories a model serves (Triton's latest / all / specific)."""

from __future__ import annotations

import pytest
from google.protobuf import text_format

from server.errors import ErrorCode, ServerError
from server.model_config.version_policy import describe, select_versions
from server.proto import model_config_pb2 as mc


def policy(text: str) -> mc.ModelVersionPolicy:
    return text_format.Parse(text, mc.ModelVersionPolicy())


@pytest.mark.parametrize(
    ("text", "available", "expected"),
    [
        ("", [1, 2, 3], [3]),
        ("latest { num_versions: 1 }", [1, 2, 3], [3]),
        ("latest { num_versions: 2 }", [1, 2, 3], [2, 3]),
        ("latest { num_versions: 5 }", [1, 2, 3], [1, 2, 3]),
        ("latest { num_versions: 2 }", [3, 10, 9], [9, 10]),
        ("all {}", [3, 1, 2], [1, 2, 3]),
        ("specific { versions: [ 1, 3 ] }", [1, 2, 3], [1, 3]),
        ("specific { versions: [ 3, 7 ] }", [1, 2, 3], [3]),
        ("specific { versions: [ 7 ] }", [1, 2, 3], []),
        ("latest { num_versions: 2 }", [], []),
        ("all {}", [], []),
    ],
    ids=[
        "default-is-latest-1",
        "latest-1",
        "latest-2",
        "latest-more-than-present",
        "latest-numeric-not-lexical",
        "all",
        "specific",
        "specific-only-existing",
        "specific-none-existing",
        "latest-no-versions",
        "all-no-versions",
    ],
)
def test_select_versions(text: str, available: list[int], expected: list[int]) -> None:
    assert select_versions(policy(text), available) == expected


def test_unsorted_duplicate_input_gives_sorted_unique() -> None:
    assert select_versions(policy("all {}"), [5, 2, 5, 1, 2]) == [1, 2, 5]
    assert select_versions(policy("latest { num_versions: 2 }"), iter([5, 2, 5, 1])) == [2, 5]


# latest {} is latest { num_versions: 0 } in proto3; Triton fails it too (no version to load).
@pytest.mark.parametrize("text", ["latest { num_versions: 0 }", "latest {}"], ids=["zero", "unset-n"])
def test_latest_zero_is_refused(text: str) -> None:
    with pytest.raises(ServerError) as caught:
        select_versions(policy(text), [1, 2])
    assert caught.value.code is ErrorCode.INVALID_ARG
    assert caught.value.message == "version_policy latest.num_versions must be at least 1"


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("", "latest 1"),
        ("latest { num_versions: 3 }", "latest 3"),
        ("all {}", "all"),
        ("specific { versions: [ 2, 4 ] }", "specific [2, 4]"),
    ],
    ids=["default", "latest", "all", "specific"],
)
def test_describe(text: str, expected: str) -> None:
    assert describe(policy(text)) == expected
