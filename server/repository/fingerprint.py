"""Content fingerprints of a model's files, so polling acts on real changes only.

A change is decided by content (SHA-256), not by timestamps: touching a file does not reload a
model, and a new file with an old mtime still does. Hashing large models on every poll would be
wasteful, so each file's hash is cached under its (size, mtime, ctime, inode) — ctime and inode
change whenever the content is written or the file is replaced, even when mtime is preserved.
"""

from __future__ import annotations

import hashlib
import os
from dataclasses import dataclass
from pathlib import Path

from server.repository.layout import CONFIG_FILENAME, ModelSource

_CHUNK_BYTES = 1 << 20


@dataclass(frozen=True, slots=True)
class ModelFingerprint:
    """Digest of config.pbtxt (and other model-level files) and of each version directory."""

    model_files: str
    versions: dict[int, str]


class FileHasher:
    """SHA-256 of files, cached by their stat identity. Not thread-safe: one poller uses it."""

    def __init__(self) -> None:
        self._cache: dict[str, tuple[tuple[int, int, int, int], str]] = {}

    def file_digest(self, path: Path) -> str:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns, stat.st_ino)
        cached = self._cache.get(str(path))
        if cached and cached[0] == key:
            return cached[1]
        digest = hashlib.sha256()
        with path.open("rb") as handle:
            while chunk := handle.read(_CHUNK_BYTES):
                digest.update(chunk)
        self._cache[str(path)] = (key, digest.hexdigest())
        return digest.hexdigest()

    def tree_digest(self, root: Path, files: list[Path]) -> str:
        digest = hashlib.sha256()
        for path in sorted(files):
            digest.update(str(path.relative_to(root)).encode())
            digest.update(self.file_digest(path).encode())
        return digest.hexdigest()

    def fingerprint(self, source: ModelSource) -> ModelFingerprint:
        """Raises OSError if files vanish mid-scan (the poller tries again next time)."""
        versions = {version: self.tree_digest(directory, _files_under(directory)) for version, directory in source.versions.items()}
        return ModelFingerprint(self.tree_digest(source.directory, _model_level_files(source)), versions)


def _model_level_files(source: ModelSource) -> list[Path]:
    """config.pbtxt, label files and warmup data: what every version shares."""
    if source.directory in source.versions.values():  # a bare single-model directory
        config = source.directory / CONFIG_FILENAME
        return [config] if config.is_file() else []
    files = [path for path in source.directory.iterdir() if path.is_file()]
    warmup = source.directory / "warmup"
    return files + (_files_under(warmup) if warmup.is_dir() else [])


def _files_under(directory: Path) -> list[Path]:
    found: list[Path] = []
    for root, _dirs, names in os.walk(directory):
        found.extend(Path(root) / name for name in names)
    return found
