"""Class labels of an output (its config's ``label_filename``): one label per line, as Triton reads them."""

from __future__ import annotations


def read_labels(text: str) -> tuple[str, ...]:
    """One label per line, as Triton reads a label file (a trailing newline adds no label)."""
    return tuple(text.split("\n")[:-1] if text.endswith("\n") else text.split("\n")) if text else ()
