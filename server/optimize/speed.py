"""Speed of the source and the candidate, measured in one run with their runs interleaved.

On a shared or noisy machine, two back-to-back measurements see different machines; alternating
one run of each (and which goes first) lets both see the same disturbance, so their ratio holds
even when the absolute figures move.
"""

from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.optimize.failure import OptimizeError
from server.optimize.samples import Feeds
from server.proto import model_config_pb2 as mc
from server.runtime.session_options import build_session_options
from server.runtime.threads import ThreadPlan


@dataclass(frozen=True, slots=True)
class Timing:
    p50_ms: float
    p99_ms: float
    throughput_per_s: float


@dataclass(frozen=True, slots=True)
class SpeedPoint:
    batch: int
    before: Timing
    after: Timing

    @property
    def speedup(self) -> float:
        return self.after.throughput_per_s / self.before.throughput_per_s


def open_session(path: Path, config: mc.ModelConfig, threads: int, provider: str) -> ort.InferenceSession:
    """A session set up as the server sets up an instance (the config's parameters and graph
    level), with ``threads`` intra-op threads unless the config says otherwise.

    Raises OptimizeError with ORT's reason; the caller adds what produced the file.
    """
    options = build_session_options(config, ThreadPlan(global_pool=False, intra_op_threads=threads))
    providers = [provider] if provider == "CPUExecutionProvider" else [provider, "CPUExecutionProvider"]
    try:
        return ort.InferenceSession(str(path), options, providers=providers)
    except Exception as error:  # ORT raises its own pybind exception types
        raise OptimizeError(str(error)) from None


def measure(before: ort.InferenceSession, after: ort.InferenceSession, feeds: dict[int, Feeds], runs: int, warmup: int) -> list[SpeedPoint]:
    """Per batch size: ``warmup`` unmeasured runs of each, then ``runs`` measured runs of each,
    alternating. Blocks for all of them."""
    points = []
    for batch, feed in feeds.items():
        for _ in range(warmup):
            before.run(None, feed)
            after.run(None, feed)
        times: dict[int, list[float]] = {0: [], 1: []}
        for run in range(runs):
            order = (0, 1) if run % 2 == 0 else (1, 0)
            for which in order:
                session = before if which == 0 else after
                start = time.perf_counter()
                session.run(None, feed)
                times[which].append(time.perf_counter() - start)
        points.append(SpeedPoint(batch, _timing(times[0], batch), _timing(times[1], batch)))
    return points


def _timing(seconds: list[float], batch: int) -> Timing:
    values = np.asarray(seconds)
    return Timing(
        p50_ms=round(float(np.percentile(values, 50)) * 1e3, 4),
        p99_ms=round(float(np.percentile(values, 99)) * 1e3, 4),
        # Rows per second at the median run time: one stall of a shared machine moves a mean a lot.
        throughput_per_s=round(batch / float(np.percentile(values, 50)), 2),
    )
