"""Latency and batch-size histograms that Triton lacks by default (``ortserve_*`` names).

Prometheus histograms aggregate across replicas, so p50/p99 per model come from
``histogram_quantile`` — what users of Triton's cumulative counters ask for. Each version owns
its histograms; they are observed on the event loop when a request or batch completes (no
locks needed) with one C-level bisect per observation, so they cost next to nothing.
"""

from __future__ import annotations

from bisect import bisect_left
from collections.abc import Iterable

from server.observability import families
from server.observability.statistics import RequestTiming


class Histogram:
    """Prometheus histogram semantics: bucket ``le=b`` counts observations ≤ b."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: tuple[float, ...]) -> None:
        self.bounds = bounds
        self.counts = [0] * (len(bounds) + 1)  # the last slot is +Inf
        self.count = 0
        self.sum = 0.0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.count += 1
        self.sum += value

    def cumulative(self) -> list[tuple[str, int]]:
        """(le label, cumulative count) pairs, ending with +Inf."""
        total, rows = 0, []
        for bound, count in zip((*(repr(float(b)) for b in self.bounds), "+Inf"), self.counts):
            total += count
            rows.append((bound, total))
        return rows


class VersionHistograms:
    """The four histograms of one model version, in families.HISTOGRAMS order."""

    def __init__(self) -> None:
        self.request, self.queue, self.compute, self.batch_size = (Histogram(family.buckets) for family in families.HISTOGRAMS)

    def observe_request(self, timing: RequestTiming, done_ns: int) -> None:
        self.request.observe((done_ns - timing.received_ns) / 1e9)
        self.queue.observe((timing.exec_start_ns - timing.enqueued_ns) / 1e9)

    def observe_batch(self, rows: int, timing: RequestTiming) -> None:
        self.batch_size.observe(rows)
        self.compute.observe((timing.output_done_ns - timing.exec_start_ns) / 1e9)

    def by_family(self) -> tuple[Histogram, ...]:
        return (self.request, self.queue, self.compute, self.batch_size)


def render_histograms(series: Iterable[tuple[str, VersionHistograms]]) -> list[str]:
    """Text exposition for every version's histograms; ``series`` yields (label text, histograms).

    The label text is the already formatted ``model="m",version="1"`` part.
    """
    items = list(series)
    lines: list[str] = []
    for index, family in enumerate(families.HISTOGRAMS):
        name = family.name
        lines += family.header()
        for labels, histograms in items:
            histogram = histograms.by_family()[index]
            lines += [f'{name}_bucket{{{labels},le="{le}"}} {count}' for le, count in histogram.cumulative()]
            lines.append(f"{name}_sum{{{labels}}} {histogram.sum!r}")
            lines.append(f"{name}_count{{{labels}}} {histogram.count}")
    return lines
