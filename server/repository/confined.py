"""Files that a model's config names (model file, label files, warmup data) must resolve,
symlinks included, inside that model's own directory (or its private upload directory).

A path that would leave it is refused with INVALID_ARG naming the config field, and the message
never says whether the outside target exists, so a config cannot probe the host's files.
"""

from __future__ import annotations

from pathlib import Path, PurePath

from server.errors import ServerError


def inside_model_dir(model_dir: Path, relative: str, field: str, model_name: str) -> Path:
    """``model_dir / relative`` resolved; raises INVALID_ARG when it is absolute or escapes.

    Blocking (touches the filesystem to resolve symlinks): call it off the event loop.
    """
    if not relative or PurePath(relative).is_absolute() or "\0" in relative:
        raise _escapes(field, relative, model_name)
    root = model_dir.resolve()
    target = (model_dir / relative).resolve()
    if not target.is_relative_to(root):
        raise _escapes(field, relative, model_name)
    return target


def _escapes(field: str, relative: str, model_name: str) -> ServerError:
    shown = relative if len(relative) <= 200 else relative[:200] + "..."
    return ServerError.invalid_arg(f"model '{model_name}': {field} '{shown}' must name a file inside the model directory")
