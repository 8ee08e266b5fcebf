"""How a run ends: the exit statuses and the one error type for bad input."""

from __future__ import annotations

EXIT_WRITTEN = 0
EXIT_BAD_INPUT = 1  # a message says what is wrong; nothing was written
EXIT_GATE_FAILED = 2  # the report was printed; nothing was written unless --keep-failed


class OptimizeError(Exception):
    """Bad input (a model, samples file or option that cannot work): shown to the user as is,
    exit status 1, nothing written."""
