"""Keep real request inputs, bounded, for ``ortserve optimize --samples DIR`` to calibrate on.

Off unless ``--sample-capture-dir`` is given. Each admitted request of a model is copied until the
model has ``--sample-capture-count`` requests or ``--sample-capture-bytes`` bytes in
``DIR/<model>/`` (files from earlier runs count too); then capturing stops for that model. A
model's ``parameters { key: "sample_capture_count" }`` overrides the count (0 turns it off).

One ``<time>-<n>.npz`` per request, arrays named after the graph's inputs, as the model receives
them. The event loop only checks the bounds and copies the arrays; files are written by one
thread of their own, and a request is skipped (never waited for) while 16 writes are pending.
"""

from __future__ import annotations

import logging
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from server.proto import model_config_pb2 as mc

log = logging.getLogger(__name__)

CAPTURE_SUFFIX = ".npz"
COUNT_PARAMETER = "sample_capture_count"
MAX_PENDING_WRITES = 16
# Numeric and boolean arrays only: strings would need pickling to round-trip through .npz.
_CAPTURED_KINDS = frozenset("biuf")


@dataclass(slots=True)
class _Budget:
    """What one model may still capture in this process (the writer also counts files on disk)."""

    max_count: int
    max_bytes: int
    count: int = 0
    size_bytes: int = 0

    def admits(self, size: int) -> bool:
        return self.count < self.max_count and self.size_bytes + size <= self.max_bytes


class SampleCapture:
    """``offer`` runs on the event loop and never blocks; files are written on one thread."""

    def __init__(self, directory: Path, max_count: int, max_bytes: int) -> None:
        self._directory = directory
        self._max_count = max_count
        self._max_bytes = max_bytes
        self._budgets: dict[str, _Budget] = {}
        self._slots = threading.BoundedSemaphore(MAX_PENDING_WRITES)
        self._writer = ThreadPoolExecutor(1, thread_name_prefix="sample-capture")

    def offer(self, model: str, config: mc.ModelConfig, feeds: dict[str, np.ndarray]) -> None:
        """Copy ``feeds`` for writing if the model's bounds allow it; otherwise do nothing."""
        budget = self._budgets.get(model) or self._start_model(model, config)
        size = sum(array.nbytes for array in feeds.values())
        if not budget.admits(size) or any(array.dtype.kind not in _CAPTURED_KINDS for array in feeds.values()):
            return
        if not self._slots.acquire(blocking=False):
            return  # the writer is behind: this request is not kept, the bound holds
        budget.count += 1
        budget.size_bytes += size
        copies = {name: np.array(array, copy=True) for name, array in feeds.items()}
        self._writer.submit(self._write, model, budget.count, budget, copies)

    def close(self) -> None:
        """Blocks until the pending writes (at most 16) are done."""
        self._writer.shutdown(wait=True)

    def _start_model(self, model: str, config: mc.ModelConfig) -> _Budget:
        count = self._max_count
        if COUNT_PARAMETER in config.parameters:
            text = config.parameters[COUNT_PARAMETER].string_value
            try:
                count = max(0, int(text))
            except ValueError:
                log.warning("model '%s': parameter '%s' must be an integer, got '%s'; using %d", model, COUNT_PARAMETER, text, count)
        budget = self._budgets[model] = _Budget(count, self._max_bytes)
        if count:
            log.info("model '%s': capturing up to %d requests (%d bytes) in %s", model, count, self._max_bytes, self._directory / model)
        return budget

    def _write(self, model: str, sequence: int, budget: _Budget, arrays: dict[str, np.ndarray]) -> None:
        """On the writer thread: one file, written under a temporary name and renamed into place."""
        try:
            directory = self._directory / model
            directory.mkdir(parents=True, exist_ok=True)
            held = [path.stat().st_size for path in directory.glob(f"*{CAPTURE_SUFFIX}")]
            if len(held) >= budget.max_count or sum(held) >= budget.max_bytes:
                return  # files kept by an earlier run already fill the bounds
            final = directory / f"{time.time_ns()}-{sequence:06d}{CAPTURE_SUFFIX}"
            partial = directory / f".{final.name}.partial"
            with partial.open("wb") as handle:
                np.savez(handle, **arrays)  # type: ignore[arg-type]  # numpy's stubs fear a key named allow_pickle
            os.replace(partial, final)
        except OSError as error:
            log.warning("model '%s': cannot keep a captured request: %s", model, error)
        finally:
            self._slots.release()
