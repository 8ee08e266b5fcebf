"""How many frontend processes ``--workers auto`` starts.

Measured on 2 cores (docs/architecture.md): the in-process server answers more requests than
two frontends and an engine sharing those cores with the client, so small machines serve in one
process. Above that, one frontend per four cores (the engine's loop, ONNX Runtime and the
kernel's network work need the rest), at most 8 — not measured here, and worth measuring.
"""

from __future__ import annotations

CORES_PER_FRONTEND = 4
MAX_AUTO_WORKERS = 8


def auto_workers(cores: int) -> int:
    """1 (in-process) below 8 cores, then one frontend per 4 cores up to 8."""
    if cores < 2 * CORES_PER_FRONTEND:
        return 1
    return min(MAX_AUTO_WORKERS, cores // CORES_PER_FRONTEND)
