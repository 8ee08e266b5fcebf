"""The ceiling at several batch sizes: raw ``InferenceSession.run`` in-process, one session reused.

Unlike ``raw_ort.measure`` (20 warm-up runs, fine for small models), warm-up here is bounded by
time, so a compute-bound model at batch 32 does not spend half a minute warming up; each size runs
for ``seconds`` but at least ``MIN_RUNS`` times so a slow model still gives a figure.
"""

from __future__ import annotations

import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
import onnxruntime as ort

from loadtest.raw_ort import CeilingResult, make_session, random_feeds, time_runs

MIN_RUNS = 3
WARMUP_S = 0.5


def measure_batches(
    model_file: Path, batches: Sequence[int], threads: int, seconds: float, shapes: Mapping[str, Sequence[int]] | None = None
) -> list[CeilingResult]:
    """One result per batch size, in the given order. Blocks the calling thread."""
    session = make_session(model_file, threads)
    return [_measure(session, model_file, batch, threads, seconds, {k: list(v) for k, v in (shapes or {}).items()}) for batch in batches]


def _measure(
    session: ort.InferenceSession, model_file: Path, batch: int, threads: int, seconds: float, shapes: dict[str, list[int]]
) -> CeilingResult:
    feeds = random_feeds(session, batch, shapes)
    run = session.run
    warm_until = time.perf_counter() + WARMUP_S
    run(None, feeds)  # the first run at a new shape allocates; never timed
    while time.perf_counter() < warm_until:
        run(None, feeds)
    return time_runs(session, feeds, str(model_file), batch, threads, seconds, MIN_RUNS)


def mix_sizes(batch_executions: Mapping[int, int], cap: int = 6, coverage: float = 0.9) -> set[int]:
    """Batch sizes to measure for a formed mix: its smallest and largest, and the sizes carrying the
    most rows until ``coverage`` of the rows is covered (at most ``cap`` of those). The sizes in
    between are interpolated by ``mix_throughput``."""
    if not batch_executions:
        return set()
    chosen = {min(batch_executions), max(batch_executions)}
    total = sum(size * count for size, count in batch_executions.items())
    covered = 0
    for size, count in sorted(batch_executions.items(), key=lambda item: -item[0] * item[1])[:cap]:
        if covered >= coverage * total:
            break
        chosen.add(size)
        covered += size * count
    return chosen


def mix_throughput(batch_executions: Mapping[int, int], measured: Mapping[int, float]) -> float | None:
    """Inferences/s raw ORT would reach running exactly the batches the server formed, back to back:
    all their rows over the sum of each batch's raw run time. Run times of unmeasured sizes are
    interpolated linearly between the measured ones (``measured``: batch size → inferences/s)."""
    points = sorted((size, size / rate) for size, rate in measured.items() if rate > 0)
    if not batch_executions or not points:
        return None
    sizes, seconds = [p[0] for p in points], [p[1] for p in points]
    rows = sum(size * count for size, count in batch_executions.items())
    busy_s = sum(count * float(np.interp(size, sizes, seconds)) for size, count in batch_executions.items())
    return round(rows / busy_s, 1) if busy_s > 0 else None
