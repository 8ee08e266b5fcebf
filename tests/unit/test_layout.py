"""Repository layout: numeric version directories, several repositories, duplicate model names."""

from __future__ import annotations

from pathlib import Path

import pytest

from server.errors import ErrorCode, ServerError
from server.repository.layout import is_version_dir_name, list_versions, scan_repositories


def make_model(repository: Path, name: str, *entries: str, config: bool = False) -> Path:
    """``entries`` ending in "/" are directories, the rest files."""
    model_dir = repository / name
    model_dir.mkdir(parents=True)
    for entry in entries:
        path = model_dir / entry
        if entry.endswith("/"):
            path.mkdir()
        else:
            path.write_text("x")
    if config:
        (model_dir / "config.pbtxt").write_text('name: "' + name + '"')
    return model_dir


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("1", True),
        ("10", True),
        ("1234567890", True),
        ("0", False),
        ("01", False),
        ("abc", False),
        ("1a", False),
        ("-1", False),
        ("+1", False),
        (" 1", False),
        ("", False),
        ("\u0661", False),  # ARABIC-INDIC DIGIT ONE: str.isdigit() is true for it
    ],
    ids=[
        "one",
        "ten",
        "large",
        "zero",
        "leading-zero",
        "letters",
        "digit-then-letter",
        "negative",
        "plus",
        "space",
        "empty",
        "arabic-digit",
    ],
)
def test_version_dir_name(name: str, expected: bool) -> None:
    assert is_version_dir_name(name) is expected


def test_list_versions_keeps_only_numeric_directories(tmp_path: Path) -> None:
    model_dir = make_model(tmp_path, "m", "1/", "10/", "2", "0/", "01/", "abc/", "1a/", "config.pbtxt")
    assert list_versions(model_dir) == {1: model_dir / "1", 10: model_dir / "10"}
    # Numeric order, not directory-listing or lexical order.
    assert list(list_versions(model_dir)) == [1, 10]


def test_scan_several_repositories(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    make_model(first, "resnet", "1/", "3/", config=True)
    make_model(first, "bert", "2/")
    make_model(second, "ocr", "1/")
    (first / "README.md").write_text("not a model")
    models = scan_repositories([first, second])
    assert sorted(models) == ["bert", "ocr", "resnet"]
    assert models["resnet"].directory == first / "resnet"
    assert list(models["resnet"].versions) == [1, 3]
    assert models["resnet"].config_path == first / "resnet" / "config.pbtxt"
    assert models["bert"].config_path is None
    assert models["ocr"].versions == {1: second / "ocr" / "1"}


def test_model_without_versions_is_listed(tmp_path: Path) -> None:
    make_model(tmp_path, "empty", "notes/")
    assert scan_repositories([tmp_path])["empty"].versions == {}


def test_hidden_directories_are_ignored(tmp_path: Path) -> None:
    make_model(tmp_path, ".ipynb_checkpoints", "1/")
    make_model(tmp_path, ".git", "1/")
    make_model(tmp_path, "m", "1/")
    assert list(scan_repositories([tmp_path])) == ["m"]


def test_duplicate_model_name_names_both_paths(tmp_path: Path) -> None:
    first, second = tmp_path / "a", tmp_path / "b"
    make_model(first, "resnet", "1/")
    make_model(second, "resnet", "2/")
    with pytest.raises(ServerError) as caught:
        scan_repositories([first, second])
    assert caught.value.code is ErrorCode.ALREADY_EXISTS
    assert caught.value.message == f"model 'resnet' appears in two repositories: {first / 'resnet'} and {second / 'resnet'}"


def test_config_path_must_be_a_file(tmp_path: Path) -> None:
    make_model(tmp_path, "m", "1/", "config.pbtxt/")
    assert scan_repositories([tmp_path])["m"].config_path is None
