"""Check the scheduling part of a config (dynamic_batching) before a version is served."""

from __future__ import annotations

from server.errors import ServerError
from server.proto import model_config_pb2 as mc


def validate_batching(config: mc.ModelConfig) -> None:
    """Raise INVALID_ARG for dynamic_batching settings that cannot work, naming the field."""
    if not config.HasField("dynamic_batching"):
        return
    name, batching = config.name, config.dynamic_batching
    for size in batching.preferred_batch_size:
        if size < 1 or (config.max_batch_size > 0 and size > config.max_batch_size):
            raise ServerError.invalid_arg(
                f"model '{name}': dynamic_batching preferred_batch_size {size} must be between 1 and max_batch_size {config.max_batch_size}"
            )
    levels = batching.priority_levels
    if levels and not 1 <= batching.default_priority_level <= levels:
        raise ServerError.invalid_arg(
            f"model '{name}': dynamic_batching default_priority_level must be in [1, {levels}], got {batching.default_priority_level}"
        )
    for level in batching.priority_queue_policy:
        if not 1 <= level <= max(levels, 0):
            raise ServerError.invalid_arg(
                f"model '{name}': dynamic_batching priority_queue_policy has level {level}, but priority_levels is {levels}"
            )
