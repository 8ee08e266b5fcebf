"""What each worker process records in one step's measurement window, and how the parent merges it.

Percentiles are taken over the merged samples of every worker, never averaged across workers:
an average of per-process p99s is not the p99 of the load.
"""

from __future__ import annotations

import math
from array import array
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

PERCENTILES = (50, 90, 95, 99)


@dataclass
class WorkerSamples:
    """One worker's measurement window. Latencies are in ns, one per successful request that
    completed inside the window (measured from the scheduled send time in rate mode)."""

    # array('q') rather than list: compact to pickle back to the parent, and as cheap to append.
    latencies_ns: array[int] = field(default_factory=lambda: array("q"))
    errors: Counter[str] = field(default_factory=Counter)  # gRPC code name (or IN_STREAM) → count
    send_lag_ns: array[int] = field(default_factory=lambda: array("q"))  # rate mode: actual minus scheduled send
    skipped: int = 0  # rate mode: schedule slots not sent because max in flight was reached
    cpu_s: float = 0.0  # this process's CPU time during the window
    # Whole step, warm-up and drain included: what the server's own counters must add up to.
    started: int = 0
    succeeded: int = 0
    wall_s: float = 0.0


@dataclass(frozen=True)
class StepSummary:
    """The client-side figures of one step (latencies in µs)."""

    requests: int
    errors: dict[str, int]
    throughput_rps: float
    infer_per_s: float
    p50_us: float | None
    p90_us: float | None
    p95_us: float | None
    p99_us: float | None
    avg_us: float | None
    client_cpu: float  # CPU seconds of all workers / wall seconds (1.0 = one core busy)
    client_cpu_max_process: float  # the busiest worker's share of a core: near 1.0 means client-bound
    skipped: int
    send_lag_p99_us: float | None
    started_total: int = 0  # requests sent over the whole step (warm-up and drain included)
    succeeded_total: int = 0  # of those, answered without error


def percentile(sorted_values: np.ndarray, pct: float) -> float | None:
    """Nearest-rank percentile of ascending ``sorted_values`` (the smallest value with at least
    ``pct`` % of the samples at or below it), None when empty."""
    if len(sorted_values) == 0:
        return None
    rank = max(1, math.ceil(pct / 100 * len(sorted_values)))
    return float(sorted_values[rank - 1])


def merge_sorted(parts: Sequence[Sequence[int]]) -> np.ndarray:
    """All samples of ``parts`` in one ascending array."""
    if not parts:
        return np.empty(0, dtype=np.int64)
    return np.sort(np.concatenate([np.asarray(p, dtype=np.int64) for p in parts]))


def summarize(workers: Sequence[WorkerSamples], duration_s: float, rows: int) -> StepSummary:
    """Merge the workers' windows into the step's figures; ``rows`` inferences per request."""
    latencies = merge_sorted([w.latencies_ns for w in workers])
    lags = merge_sorted([w.send_lag_ns for w in workers])
    errors: Counter[str] = Counter()
    for w in workers:
        errors.update(w.errors)
    throughput = len(latencies) / duration_s if duration_s > 0 else 0.0
    shares = [w.cpu_s / w.wall_s for w in workers if w.wall_s > 0]
    wall = max((w.wall_s for w in workers), default=0.0)

    def us(value: float | None) -> float | None:
        return None if value is None else round(value / 1e3, 1)

    return StepSummary(
        requests=len(latencies),
        errors=dict(sorted(errors.items())),
        throughput_rps=round(throughput, 1),
        infer_per_s=round(throughput * rows, 1),
        **{f"p{p}_us": us(percentile(latencies, p)) for p in PERCENTILES},  # type: ignore[arg-type]
        avg_us=us(float(latencies.mean())) if len(latencies) else None,
        client_cpu=round(sum(w.cpu_s for w in workers) / wall, 3) if wall > 0 else 0.0,
        client_cpu_max_process=round(max(shares, default=0.0), 3),
        skipped=sum(w.skipped for w in workers),
        send_lag_p99_us=us(percentile(lags, 99)),
        started_total=sum(w.started for w in workers),
        succeeded_total=sum(w.succeeded for w in workers),
    )
