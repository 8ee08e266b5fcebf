"""Read the Triton repository layout from disk: which models and version directories exist.

Pure reads, no loading: ``<repo>/<model>/[config.pbtxt]`` and ``<repo>/<model>/<version>/``,
where a version directory is a decimal number without a leading zero (Triton ignores the rest).

A repository path may also be a single model, which is what KServe's storage initializer leaves
in /mnt/models: either a model directory (config.pbtxt and/or version directories) or a
directory holding the ONNX file itself, served as version 1.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from server.errors import ErrorCode, ServerError

CONFIG_FILENAME = "config.pbtxt"


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where one model lives on disk and which version directories it has."""

    name: str
    directory: Path
    versions: dict[int, Path]
    # The ONNX file name when the layout implies it (a bare directory with one *.onnx file).
    model_filename: str | None = None

    @property
    def config_path(self) -> Path | None:
        path = self.directory / CONFIG_FILENAME
        return path if path.is_file() else None


def is_version_dir_name(name: str) -> bool:
    """Triton's rule: decimal digits only, and no leading zero ("0" and "01" are ignored)."""
    return name.isdigit() and name.isascii() and not name.startswith("0")


def list_versions(model_dir: Path) -> dict[int, Path]:
    versions: dict[int, Path] = {}
    for child in model_dir.iterdir():
        if child.is_dir() and is_version_dir_name(child.name):
            versions[int(child.name)] = child
    return dict(sorted(versions.items()))


def read_model(model_dir: Path) -> ModelSource:
    return ModelSource(name=model_dir.name, directory=model_dir, versions=list_versions(model_dir))


def single_model(path: Path, name: str) -> ModelSource | None:
    """``path`` as one model, or None when it looks like a repository of models."""
    onnx_files = sorted(p.name for p in path.glob("*.onnx"))
    if onnx_files:
        filename = "model.onnx" if "model.onnx" in onnx_files else onnx_files[0]
        return ModelSource(name=name, directory=path, versions={1: path}, model_filename=filename)
    versions = list_versions(path)
    if versions or (path / CONFIG_FILENAME).is_file():
        return ModelSource(name=name, directory=path, versions=versions)
    return None


def scan_repositories(repositories: list[Path], single_model_name: str | None = None) -> dict[str, ModelSource]:
    """Every model directory in every repository, by name.

    A repository that is itself one model is served under ``single_model_name`` (default: its
    directory name). Raises ServerError(ALREADY_EXISTS) when one name appears twice (Triton refuses this
    too, because a request could not say which one it means).
    """
    models: dict[str, ModelSource] = {}
    for repository in repositories:
        found = single_model(repository, single_model_name or repository.name)
        sources = [found] if found else [read_model(d) for d in sorted(repository.iterdir()) if _is_model_dir(d)]
        for source in sources:
            if source.name in models:
                raise ServerError(
                    ErrorCode.ALREADY_EXISTS,
                    f"model '{source.name}' appears in two repositories: {models[source.name].directory} and {source.directory}",
                )
            models[source.name] = source
    return models


def _is_model_dir(path: Path) -> bool:
    return path.is_dir() and not path.name.startswith(".")
