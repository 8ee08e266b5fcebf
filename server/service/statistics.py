"""The statistics a version has gathered, as values the frontends render (one walk, both protocols)."""

from __future__ import annotations

from server.lifecycle.servable import Servable
from server.observability.statistics import DurationStat
from server.types import BatchStatistics, Duration, ModelStatistics


def _duration(stat: DurationStat) -> Duration:
    return Duration(stat.count, stat.ns)


def version_statistics(servable: Servable) -> ModelStatistics:
    stats = servable.stats
    return ModelStatistics(
        name=servable.name,
        version=servable.version_str,
        last_inference_ms=stats.last_inference_ms,
        inference_count=stats.inference_count,
        execution_count=stats.execution_count,
        success=_duration(stats.success),
        fail=_duration(stats.fail),
        queue=_duration(stats.queue),
        compute_input=_duration(stats.compute_input),
        compute_infer=_duration(stats.compute_infer),
        compute_output=_duration(stats.compute_output),
        batch_stats=tuple(
            BatchStatistics(size, _duration(batch.compute_input), _duration(batch.compute_infer), _duration(batch.compute_output))
            for size, batch in sorted(stats.batch_stats.items())
        ),
        cache_hit=_duration(stats.cache_hit),
        cache_miss=_duration(stats.cache_miss),
    )
