"""Write the new version directory so that nobody ever sees it half-written.

Everything goes into a hidden staging directory inside the model directory (so the final step
is a rename on one filesystem, and the server ignores the name: it is not a version number);
files are flushed, then one ``rename`` makes the version appear whole. Any failure removes the
staging directory. The source version is only ever read.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from pathlib import Path

from server.optimize.failure import OptimizeError

REPORT_FILENAME = "optimization.json"


def write_version(model_dir: Path, version: int, model_file: Path, filename: str, report: dict[str, object]) -> Path:
    """Blocks on file I/O. Raises OptimizeError if the version appeared meanwhile or I/O fails."""
    target = model_dir / str(version)
    staging = Path(tempfile.mkdtemp(prefix=f".optimize-{version}-", dir=model_dir))
    try:
        shutil.copyfile(model_file, staging / filename)
        (staging / REPORT_FILENAME).write_text(json.dumps(report, indent=2) + "\n")
        for path in (staging / filename, staging / REPORT_FILENAME, staging):
            _fsync(path)
        staging.chmod(_directory_mode())  # mkdtemp makes it private; a version is as readable as any directory
        if target.exists():
            raise OptimizeError(f"version {version} of model '{model_dir.name}' appeared while optimizing; nothing written")
        os.rename(staging, target)
        _fsync(model_dir)
    except OSError as error:
        raise OptimizeError(f"cannot write version {version} of model '{model_dir.name}': {error}") from None
    finally:
        if staging.exists():
            shutil.rmtree(staging, ignore_errors=True)
    return target


def _directory_mode() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def _fsync(path: Path) -> None:
    descriptor = os.open(path, os.O_RDONLY)
    try:
        os.fsync(descriptor)
    finally:
        os.close(descriptor)
