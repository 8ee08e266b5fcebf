"""Model files that arrive in load requests, kept inside a private area.

Nothing a request names may reach outside the repositories or the private temporary directory:
names with path separators or dot-segments are refused with INVALID_ARG before any file I/O.
"""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path, PurePosixPath

from server.client_strings import check_model_name
from server.errors import ServerError
from server.repository.layout import is_version_dir_name

FILE_PREFIX = "file:"


def relative_file_path(key: str) -> PurePosixPath:
    """``file:<version>/<path>`` → the relative path, refusing anything that could escape."""
    raw = key.removeprefix(FILE_PREFIX)
    path = PurePosixPath(raw)
    parts = path.parts
    if (
        not raw
        or path.is_absolute()
        or "\\" in raw
        or "\0" in raw
        or any(part in ("..", ".", "") for part in raw.split("/"))  # PurePosixPath drops "." and ""
        or len(parts) < 2
        or not is_version_dir_name(parts[0])
    ):
        raise ServerError.invalid_arg(
            f"invalid load parameter '{key}': expected 'file:<version>/<relative path>' with no '..' or absolute parts"
        )
    return path


class PrivateModelFiles:
    """Model directories written from request bytes, under one private temporary directory."""

    def __init__(self) -> None:
        self._root = Path(tempfile.mkdtemp(prefix="ortserve-loaded-models-"))

    def write(self, model_name: str, files: dict[str, bytes]) -> Path:
        """A fresh directory holding ``files``; raises INVALID_ARG for a bad key."""
        check_model_name(model_name)
        relative = {key: relative_file_path(key) for key in files}
        directory = Path(tempfile.mkdtemp(prefix=f"{model_name}-", dir=self._root)) / model_name
        directory.mkdir()
        try:
            for key, path in relative.items():
                target = (directory / path).resolve()
                if not target.is_relative_to(directory.resolve()):
                    raise ServerError.invalid_arg(f"invalid load parameter '{key}': path leaves the model directory")
                target.parent.mkdir(parents=True, exist_ok=True)
                target.write_bytes(files[key])
        except OSError as exc:  # e.g. 'file:1/a' and 'file:1/a/b': one path both a file and a directory
            self.discard(directory)
            raise ServerError.invalid_arg(f"cannot write the files of load request for '{model_name}': {exc.strerror}") from None
        except ServerError:
            self.discard(directory)
            raise
        return directory

    def discard(self, directory: Path) -> None:
        """Delete a directory made by ``write`` (only inside the private root)."""
        if directory.parent.parent == self._root:
            shutil.rmtree(directory.parent, ignore_errors=True)

    def close(self) -> None:
        shutil.rmtree(self._root, ignore_errors=True)
