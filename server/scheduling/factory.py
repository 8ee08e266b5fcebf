"""Build the scheduler a model version's config asks for."""

from __future__ import annotations

import numpy as np

from server.model_config.batch_inputs import batch_input_specs
from server.model_config.latency_target import latency_target_ms
from server.model_config.sequence_config import sequence_settings
from server.observability.statistics import ModelStats
from server.proto import model_config_pb2 as mc
from server.runtime.instance import ModelInstance
from server.scheduling.base import Scheduler
from server.scheduling.batch_policy import BatchingRule
from server.scheduling.batcher import DynamicBatcher
from server.scheduling.caching_scheduler import CachingScheduler
from server.scheduling.clock import MonotonicClock
from server.scheduling.delay_controller import DelayController, DelayTarget
from server.scheduling.execution import BatchLayout
from server.scheduling.queue_policy import PriorityPolicy
from server.scheduling.response_cache import ResponseCache
from server.scheduling.sequence_batcher import SequenceBatcher


def create_scheduler(
    config: mc.ModelConfig,
    instances: list[ModelInstance],
    stats: ModelStats,
    initial_states: dict[str, np.ndarray] | None = None,
    cache: ResponseCache | None = None,
    version: int = 0,
) -> Scheduler:
    """Must be called on the event loop (the batcher binds to the running loop).

    A model with sequence_batching gets a SequenceBatcher (``initial_states``: each implicit
    state's first value). Every other model gets a DynamicBatcher; without dynamic_batching (or
    with max_batch_size 0) it does not merge requests, but queueing, cancellation and statistics
    work the same. With ``ortserve.target_latency_p99_ms`` its queue delay is tuned online
    (delay_controller.py). With a server cache and ``response_cache { enable: true }`` a
    CachingScheduler sits in front of it (validation refuses the cache with sequence batching).
    """
    if config.HasField("sequence_batching"):
        layout = BatchLayout(tuple(output.name for output in config.output))
        return SequenceBatcher(config.name, sequence_settings(config), instances, layout, stats, initial_states or {})
    batcher = _batcher(config, instances, stats)
    if cache is None or not config.response_cache.enable:
        return batcher
    return CachingScheduler(batcher, cache, cache.partition(config.name, version), stats)


def _batcher(config: mc.ModelConfig, instances: list[ModelInstance], stats: ModelStats) -> DynamicBatcher:
    rule = BatchingRule.from_config(config)
    return DynamicBatcher(
        rule=rule,
        priority=PriorityPolicy.from_config(config),
        instances=instances,
        layout=BatchLayout(tuple(output.name for output in config.output), batch_input_specs(config)),
        stats=stats,
        preserve_ordering=config.dynamic_batching.preserve_ordering,
        delay=_delay_controller(config, rule),
    )


def _delay_controller(config: mc.ModelConfig, rule: BatchingRule) -> DelayController | None:
    target_ms = latency_target_ms(config)
    if target_ms is None:
        return None
    return DelayController(DelayTarget.for_target(target_ms, rule.max_queue_delay_ns), started_ns=MonotonicClock().now_ns())
