"""Latency and batch-size histograms that Triton lacks by default (``ortserve_*`` names).

Prometheus histograms aggregate across replicas, so p50/p99 can be computed per model from
``histogram_quantile`` — what users of Triton's cumulative counters ask for. Observations happen
on the event loop when a request or batch completes; each version pre-binds its label values so
the request path does no label lookup.
"""

from __future__ import annotations

import contextlib

import prometheus_client
from prometheus_client import CollectorRegistry, Histogram, generate_latest

from server.observability.statistics import RequestTiming

# 50 µs … 10 s: small CPU models answer in well under a millisecond.
LATENCY_BUCKETS_SECS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024)
_LABELS = ("model", "version")


class VersionHistograms:
    """The histogram children of one model version."""

    def __init__(self, families: LatencyHistograms, model: str, version: str) -> None:
        self._request = families.request.labels(model, version)
        self._queue = families.queue.labels(model, version)
        self._compute = families.compute.labels(model, version)
        self._batch = families.batch_size.labels(model, version)

    def observe_request(self, timing: RequestTiming, done_ns: int) -> None:
        self._request.observe((done_ns - timing.received_ns) / 1e9)
        self._queue.observe((timing.exec_start_ns - timing.enqueued_ns) / 1e9)

    def observe_batch(self, rows: int, timing: RequestTiming) -> None:
        self._batch.observe(rows)
        self._compute.observe((timing.output_done_ns - timing.exec_start_ns) / 1e9)


class LatencyHistograms:
    def __init__(self) -> None:
        # ``*_created`` series double the output and no dashboard reads them.
        prometheus_client.disable_created_metrics()
        self.registry = CollectorRegistry(auto_describe=False)
        self.request = Histogram(
            "ortserve_request_duration_seconds",
            "End-to-end inference request duration in the server, seconds",
            _LABELS,
            buckets=LATENCY_BUCKETS_SECS,
            registry=self.registry,
        )
        self.queue = Histogram(
            "ortserve_queue_duration_seconds",
            "Time a request waited in the scheduler queue before its batch started, seconds",
            _LABELS,
            buckets=LATENCY_BUCKETS_SECS,
            registry=self.registry,
        )
        self.compute = Histogram(
            "ortserve_compute_duration_seconds",
            "Time one batch took on an instance (input merge, ONNX Runtime run, output split), seconds",
            _LABELS,
            buckets=LATENCY_BUCKETS_SECS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "ortserve_batch_size",
            "Rows in each batch the scheduler formed and executed",
            _LABELS,
            buckets=BATCH_SIZE_BUCKETS,
            registry=self.registry,
        )

    def for_version(self, model: str, version: str) -> VersionHistograms:
        return VersionHistograms(self, model, version)

    def forget(self, model: str, version: str) -> None:
        """Drop an unloaded version's series."""
        for family in (self.request, self.queue, self.compute, self.batch_size):
            with contextlib.suppress(KeyError):
                family.remove(model, version)

    def render(self) -> str:
        return generate_latest(self.registry).decode("utf-8")
