"""Build the scheduler a model version's config asks for."""

from __future__ import annotations

from server.model_config.batch_inputs import batch_input_specs
from server.observability.statistics import ModelStats
from server.proto import model_config_pb2 as mc
from server.runtime.instance import ModelInstance
from server.scheduling.base import Scheduler
from server.scheduling.batch_policy import BatchingRule
from server.scheduling.batcher import DynamicBatcher
from server.scheduling.caching_scheduler import CachingScheduler
from server.scheduling.execution import BatchLayout
from server.scheduling.queue_policy import PriorityPolicy
from server.scheduling.response_cache import ResponseCache


def create_scheduler(
    config: mc.ModelConfig,
    instances: list[ModelInstance],
    stats: ModelStats,
    cache: ResponseCache | None = None,
    version: int = 0,
) -> Scheduler:
    """Must be called on the event loop (the batcher binds to the running loop).

    Every model gets a DynamicBatcher; without dynamic_batching (or with max_batch_size 0) it
    does not merge requests, but queueing, cancellation and statistics work the same. With a
    server cache and ``response_cache { enable: true }`` a CachingScheduler sits in front of it.
    """
    batcher = _batcher(config, instances, stats)
    if cache is None or not config.response_cache.enable:
        return batcher
    return CachingScheduler(batcher, cache, cache.partition(config.name, version), stats)


def _batcher(config: mc.ModelConfig, instances: list[ModelInstance], stats: ModelStats) -> DynamicBatcher:
    return DynamicBatcher(
        rule=BatchingRule.from_config(config),
        priority=PriorityPolicy.from_config(config),
        instances=instances,
        layout=BatchLayout(tuple(output.name for output in config.output), batch_input_specs(config)),
        stats=stats,
        preserve_ordering=config.dynamic_batching.preserve_ordering,
    )
