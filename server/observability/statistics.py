"""Cumulative per-version inference statistics: the one source for ModelStatistics and /metrics.

Every counter is updated on the event-loop thread (results are handed back from instance threads
before they are recorded), so plain integers suffice and readers see consistent values.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Protocol

from server.errors import FailureReason


@dataclass(slots=True)
class DurationStat:
    count: int = 0
    ns: int = 0

    def add(self, ns: int) -> None:
        self.count += 1
        self.ns += ns


@dataclass(slots=True)
class BatchStat:
    """Executions of one formed batch size, with their compute phases."""

    compute_input: DurationStat = field(default_factory=DurationStat)
    compute_infer: DurationStat = field(default_factory=DurationStat)
    compute_output: DurationStat = field(default_factory=DurationStat)


@dataclass(slots=True)
class RequestTiming:
    """Monotonic nanosecond timestamps of one request's path through the server."""

    received_ns: int
    enqueued_ns: int = 0
    exec_start_ns: int = 0
    input_done_ns: int = 0
    infer_done_ns: int = 0
    output_done_ns: int = 0


@dataclass(slots=True)
class SequenceCounters:
    """A sequence batcher's figures (ortserve_sequence_* metrics)."""

    # Sequences holding a batch slot, and sequences waiting for one.
    active: int = 0
    backlog: int = 0
    # Sequences whose slot was released after max_sequence_idle_microseconds without a request.
    idle_released: int = 0
    # Sequences ended because the batch they ran in failed on their instance.
    ended_by_failure: int = 0


@dataclass(slots=True)
class StepStat:
    """One ensemble step's requests to its member (ortserve_ensemble_step_* metrics)."""

    model: str
    success: DurationStat = field(default_factory=DurationStat)
    failures: int = 0


class HistogramSink(Protocol):
    def observe_request(self, timing: RequestTiming, done_ns: int) -> None: ...

    def observe_batch(self, rows: int, timing: RequestTiming) -> None: ...


@dataclass(slots=True)
class ModelStats:
    success: DurationStat = field(default_factory=DurationStat)
    fail: DurationStat = field(default_factory=DurationStat)
    queue: DurationStat = field(default_factory=DurationStat)
    compute_input: DurationStat = field(default_factory=DurationStat)
    compute_infer: DurationStat = field(default_factory=DurationStat)
    compute_output: DurationStat = field(default_factory=DurationStat)
    inference_count: int = 0
    execution_count: int = 0
    # Wall-clock milliseconds since the epoch of the last completed inference (0 = never).
    last_inference_ms: int = 0
    failures: dict[FailureReason, int] = field(default_factory=lambda: dict.fromkeys(FailureReason, 0))
    batch_stats: dict[int, BatchStat] = field(default_factory=dict)
    # ONNX Runtime time and executions per instance (by instance name).
    instances: dict[str, DurationStat] = field(default_factory=dict)
    # Optional latency histograms fed by the same events (None when histograms are off).
    histograms: HistogramSink | None = None
    # A sequence batcher's counters, and an ensemble's per-step figures (None for other models).
    sequences: SequenceCounters | None = None
    steps: list[StepStat] | None = None
    # The response cache (True when this version answers from it): requests answered from it and
    # the lookups that missed it, with their lookup (and insertion) time.
    cache_enabled: bool = False
    cache_hit: DurationStat = field(default_factory=DurationStat)
    cache_miss: DurationStat = field(default_factory=DurationStat)
    # The dynamic batcher's current max queue delay (tuned under a latency target); None when
    # the version's batcher does not merge requests.
    batch_delay_ns: int | None = None

    def record_success(self, timing: RequestTiming, batch_size: int, done_ns: int) -> None:
        self.success.add(done_ns - timing.received_ns)
        self.queue.add(timing.exec_start_ns - timing.enqueued_ns)
        self.compute_input.add(timing.input_done_ns - timing.exec_start_ns)
        self.compute_infer.add(timing.infer_done_ns - timing.input_done_ns)
        self.compute_output.add(timing.output_done_ns - timing.infer_done_ns)
        self.inference_count += batch_size
        self.last_inference_ms = time.time_ns() // 1_000_000
        if self.histograms is not None:
            self.histograms.observe_request(timing, done_ns)

    def record_cache_hit(self, timing: RequestTiming, lookup_ns: int, done_ns: int) -> None:
        """A request answered from the response cache (Triton's rule: a success with its queue
        time, but neither an inference nor an execution, and no compute time)."""
        self.success.add(done_ns - timing.received_ns)
        self.queue.add(timing.exec_start_ns - timing.enqueued_ns)
        self.cache_hit.add(lookup_ns)
        if self.histograms is not None:
            self.histograms.observe_request(timing, done_ns)

    def record_cache_miss(self, ns: int) -> None:
        """A lookup that missed and went to the model; ``ns`` is the lookup plus the insertion."""
        self.cache_miss.add(ns)

    def record_failure(self, reason: FailureReason, received_ns: int, done_ns: int) -> None:
        self.fail.add(done_ns - received_ns)
        self.failures[reason] += 1

    def record_execution(self, batch_size: int, timing: RequestTiming, instance: str = "") -> None:
        """One model execution (a formed batch of ``batch_size`` inferences) on ``instance``."""
        self.execution_count += 1
        if instance:
            per_instance = self.instances.get(instance)
            if per_instance is None:
                per_instance = self.instances[instance] = DurationStat()
            per_instance.add(timing.infer_done_ns - timing.input_done_ns)
        stat = self.batch_stats.get(batch_size)
        if stat is None:
            stat = self.batch_stats[batch_size] = BatchStat()
        stat.compute_input.add(timing.input_done_ns - timing.exec_start_ns)
        stat.compute_infer.add(timing.infer_done_ns - timing.input_done_ns)
        stat.compute_output.add(timing.output_done_ns - timing.infer_done_ns)
        if self.histograms is not None:
            self.histograms.observe_batch(batch_size, timing)
