"""Strings a client chooses (model names, request ids, tensor and parameter names): checked once at
the door, so that everything the server later logs or echoes in an error is short and printable.

A model name is also a directory name, so it follows the filesystem's rules and Triton's layout:
no path separators, no dot-segments, not empty or blank, at most 255 UTF-8 bytes. Names and ids
may not hold control or formatting characters (newlines, NUL, U+202E RIGHT-TO-LEFT OVERRIDE...),
which would let a client forge log lines or disguise text. Refusals show a bounded, escaped form
of the string, never the string itself.
"""

from __future__ import annotations

from server.errors import ServerError

# NAME_MAX on Linux filesystems: a model name is a directory name.
MAX_MODEL_NAME_BYTES = 255
# Tensor, parameter and other names a request carries.
MAX_NAME_CHARS = 256
# Request ids are echoed in every error message of their request.
MAX_REQUEST_ID_CHARS = 256
# How much of a refused string an error message shows.
_SHOWN_CHARS = 64


def shown(text: str) -> str:
    """``text`` quoted for a message: escaped (control and format characters as \\n, \\u202e ...)
    and cut to a bounded length, saying how much was left out."""
    cut = text[:_SHOWN_CHARS]
    escaped = "".join(_escape(c) for c in cut)
    rest = len(text) - len(cut)
    return f"'{escaped}'" + (f"... ({rest} more characters)" if rest else "")


def _escape(char: str) -> str:
    if not char.isprintable():
        return char.encode("unicode_escape", "backslashreplace").decode("ascii")
    return char


def has_unprintable(text: str) -> bool:
    """Control (\n, NUL, ESC), format (U+202E, zero-width joiners), separator other than the ASCII
    space, unassigned and surrogate characters: what str.isprintable() calls non-printable."""
    return not text.isprintable()


def check_model_name(name: str) -> None:
    """Raise INVALID_ARG unless ``name`` can be a model directory's name."""
    problem = _model_name_problem(name)
    if problem:
        raise ServerError.invalid_arg(f"invalid model name {shown(name)}: {problem}")


def _model_name_problem(name: str) -> str:
    if not name.strip():
        return "a model name must not be empty or blank"
    if name in (".", "..") or name.startswith(".") or any(c in name for c in "/\\"):
        return "a model name must be a plain directory name"
    if has_unprintable(name):
        return "a model name must not hold control or formatting characters"
    if len(name.encode("utf-8", "surrogatepass")) > MAX_MODEL_NAME_BYTES:
        return f"a model name must be at most {MAX_MODEL_NAME_BYTES} bytes"
    return ""


def check_client_string(kind: str, text: str, max_chars: int = MAX_NAME_CHARS) -> None:
    """Raise INVALID_ARG for a name or id that is too long or holds unprintable characters."""
    if len(text) > max_chars:
        raise ServerError.invalid_arg(f"{kind} {shown(text)} is longer than {max_chars} characters")
    if has_unprintable(text):
        raise ServerError.invalid_arg(f"{kind} {shown(text)} holds control or formatting characters")
