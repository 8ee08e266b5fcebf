"""Pick the scheduler a model version's config asks for."""

from __future__ import annotations

from server.observability.statistics import ModelStats
from server.proto import model_config_pb2 as mc
from server.runtime.instance import ModelInstance
from server.scheduling.base import Scheduler
from server.scheduling.passthrough import PassThroughScheduler


def create_scheduler(config: mc.ModelConfig, instances: list[ModelInstance], stats: ModelStats) -> Scheduler:
    """Must be called on the event loop (schedulers start worker tasks)."""
    model_outputs = tuple(output.name for output in config.output)
    return PassThroughScheduler(instances, model_outputs, stats)
