"""Build the scheduler a model version's config asks for."""

from __future__ import annotations

import numpy as np

from server.model_config.batch_inputs import batch_input_specs
from server.model_config.sequence_config import sequence_settings
from server.observability.statistics import ModelStats
from server.proto import model_config_pb2 as mc
from server.runtime.instance import ModelInstance
from server.scheduling.base import Scheduler
from server.scheduling.batch_policy import BatchingRule
from server.scheduling.batcher import DynamicBatcher
from server.scheduling.execution import BatchLayout
from server.scheduling.queue_policy import PriorityPolicy
from server.scheduling.sequence_batcher import SequenceBatcher


def create_scheduler(
    config: mc.ModelConfig, instances: list[ModelInstance], stats: ModelStats, initial_states: dict[str, np.ndarray] | None = None
) -> Scheduler:
    """Must be called on the event loop (the batcher binds to the running loop).

    A model with sequence_batching gets a SequenceBatcher (``initial_states``: each implicit
    state's first value). Every other model gets a DynamicBatcher; without dynamic_batching (or
    with max_batch_size 0) it does not merge requests, but queueing, cancellation and statistics
    work the same.
    """
    if config.HasField("sequence_batching"):
        layout = BatchLayout(tuple(output.name for output in config.output))
        return SequenceBatcher(config.name, sequence_settings(config), instances, layout, stats, initial_states or {})
    return DynamicBatcher(
        rule=BatchingRule.from_config(config),
        priority=PriorityPolicy.from_config(config),
        instances=instances,
        layout=BatchLayout(tuple(output.name for output in config.output), batch_input_specs(config)),
        stats=stats,
        preserve_ordering=config.dynamic_batching.preserve_ordering,
    )
