"""Prometheus text exposition with Triton's metric names (no ``_total`` suffix, no ``_created``).

prometheus_client renames counters to ``*_total``, which would break dashboards built for
Triton, so the nv_* families are rendered here straight from the same ModelStats that answer
ModelStatistics. Values are read on the event loop, where they are written.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol

from server.errors import FailureReason
from server.observability import families
from server.observability.composite_metrics import render_composite_metrics
from server.observability.histograms import VersionHistograms, render_histograms
from server.observability.statistics import ModelStats
from server.proto import model_config_pb2 as mc


class QueueCounts(Protocol):
    @property
    def pending_count(self) -> int: ...

    @property
    def executing_count(self) -> int: ...


class ObservedVersion(Protocol):
    """What the exposition reads of a served version (a lifecycle Servable has all of it)."""

    @property
    def name(self) -> str: ...

    @property
    def version_str(self) -> str: ...

    @property
    def config(self) -> mc.ModelConfig: ...

    @property
    def stats(self) -> ModelStats: ...

    @property
    def scheduler(self) -> QueueCounts: ...

    @property
    def load_duration_secs(self) -> float: ...


# Triton's counters read straight off one version's stats.
_COUNTERS: list[tuple[families.Family, Callable[[ModelStats], float]]] = [
    (families.REQUEST_SUCCESS, lambda s: s.success.count),
    (families.INFERENCE_COUNT, lambda s: s.inference_count),
    (families.EXEC_COUNT, lambda s: s.execution_count),
    (families.REQUEST_DURATION, lambda s: s.success.ns // 1000),
    (families.QUEUE_DURATION, lambda s: s.queue.ns // 1000),
    (families.COMPUTE_INPUT_DURATION, lambda s: s.compute_input.ns // 1000),
    (families.COMPUTE_INFER_DURATION, lambda s: s.compute_infer.ns // 1000),
    (families.COMPUTE_OUTPUT_DURATION, lambda s: s.compute_output.ns // 1000),
]


# Triton's response-cache counters, for the versions that answer from the cache.
_CACHE_COUNTERS: list[tuple[families.Family, Callable[[ModelStats], float]]] = [
    (families.CACHE_HITS, lambda s: s.cache_hit.count),
    (families.CACHE_MISSES, lambda s: s.cache_miss.count),
    (families.CACHE_HIT_DURATION, lambda s: s.cache_hit.ns // 1000),
    (families.CACHE_MISS_DURATION, lambda s: s.cache_miss.ns // 1000),
]


class CacheGauges(Protocol):
    """What the exposition reads of the server's response cache."""

    @property
    def entries(self) -> int: ...

    @property
    def used_bytes(self) -> int: ...

    @property
    def capacity_bytes(self) -> int: ...

    @property
    def evictions(self) -> int: ...


class SharedMemoryGauges(Protocol):
    @property
    def region_count(self) -> int: ...

    @property
    def mapped_bytes(self) -> int: ...


def render_cache_metrics(cache: CacheGauges | None) -> list[str]:
    """The server's cache gauges (none without a cache)."""
    if cache is None:
        return []
    return [
        *families.CACHE_ENTRIES.render([({}, cache.entries)]),
        *families.CACHE_BYTES.render([({}, cache.used_bytes)]),
        *families.CACHE_CAPACITY.render([({}, cache.capacity_bytes)]),
        *families.CACHE_EVICTIONS.render([({}, cache.evictions)]),
    ]


def render_shared_memory_metrics(shared_memory: SharedMemoryGauges, enabled: bool) -> list[str]:
    """Registered regions and mapped bytes (none while the extension is off)."""
    if not enabled:
        return []
    return [
        *families.SHM_REGIONS.render([({}, shared_memory.region_count)]),
        *families.SHM_MAPPED_BYTES.render([({}, shared_memory.mapped_bytes)]),
    ]


def version_labels(serving: ObservedVersion) -> dict[str, str]:
    labels = {"model": serving.name, "version": serving.version_str}
    labels.update({f"_{key}": value for key, value in serving.config.metric_tags.items()})
    return labels


def render_latency_histograms(versions: Sequence[ObservedVersion]) -> list[str]:
    """The ortserve_* histograms of the versions that keep them (none when turned off)."""
    series = [
        (families.format_labels(version_labels(s))[1:-1], s.stats.histograms)
        for s in versions
        if isinstance(s.stats.histograms, VersionHistograms)
    ]
    return render_histograms(series) if series else []


def render_inference_metrics(versions: Sequence[ObservedVersion]) -> list[str]:
    """Triton's per-model families (and ortserve's per-instance ones) for every loaded version."""
    lines = families.REQUEST_FAILURE.render(
        ({**version_labels(s), "reason": reason.value}, s.stats.failures[reason]) for s in versions for reason in FailureReason
    )
    for family, value in _COUNTERS:
        lines += family.render((version_labels(s), value(s.stats)) for s in versions)
    lines += families.PENDING_REQUESTS.render((version_labels(s), s.scheduler.pending_count) for s in versions)
    lines += families.EXECUTING_REQUESTS.render((version_labels(s), s.scheduler.executing_count) for s in versions)
    per_instance = [({**version_labels(s), "instance": instance}, stat) for s in versions for instance, stat in s.stats.instances.items()]
    lines += families.INSTANCE_EXECUTION_DURATION.render((labels, stat.ns // 1000) for labels, stat in per_instance)
    lines += families.INSTANCE_EXECUTION_COUNT.render((labels, stat.count) for labels, stat in per_instance)
    lines += families.BATCH_DELAY.render(
        (version_labels(s), s.stats.batch_delay_ns / 1000) for s in versions if s.stats.batch_delay_ns is not None
    )
    lines += families.LOAD_DURATION.render((version_labels(s), round(s.load_duration_secs, 6)) for s in versions)
    lines += render_composite_metrics(versions, version_labels)
    cached = [s for s in versions if s.stats.cache_enabled]
    if cached:
        for family, value in _CACHE_COUNTERS:
            lines += family.render((version_labels(s), value(s.stats)) for s in cached)
    return lines
