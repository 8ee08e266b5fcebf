"""Read the Triton repository layout from disk: which models and version directories exist.

Pure reads, no loading: ``<repo>/<model>/[config.pbtxt]`` and ``<repo>/<model>/<version>/``,
where a version directory is a decimal number without a leading zero (Triton ignores the rest).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

CONFIG_FILENAME = "config.pbtxt"


@dataclass(frozen=True, slots=True)
class ModelSource:
    """Where one model lives on disk and which version directories it has."""

    name: str
    directory: Path
    versions: dict[int, Path]

    @property
    def config_path(self) -> Path | None:
        path = self.directory / CONFIG_FILENAME
        return path if path.is_file() else None


class DuplicateModelError(Exception):
    """Two repositories hold a model with the same name."""


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


def scan_repositories(repositories: list[Path]) -> dict[str, ModelSource]:
    """Every model directory in every repository, by name.

    Raises DuplicateModelError when one name appears in two repositories (Triton refuses this too,
    because a request could not say which one it means).
    """
    models: dict[str, ModelSource] = {}
    for repository in repositories:
        for model_dir in sorted(repository.iterdir()):
            if not model_dir.is_dir() or model_dir.name.startswith("."):
                continue
            if model_dir.name in models:
                raise DuplicateModelError(
                    f"model '{model_dir.name}' appears in two repositories: {models[model_dir.name].directory} and {model_dir}"
                )
            models[model_dir.name] = read_model(model_dir)
    return models
