"""The ``ortserve.target_latency_p99_ms`` model parameter: batch to a latency target.

With it, the dynamic batcher tunes its queue delay online (scheduling/delay_controller.py) so
that the p99 of queue + compute time stays under the target. It needs a batcher that merges
requests, so the config must have ``dynamic_batching`` and ``max_batch_size > 0``.
"""

from __future__ import annotations

import math

from server.errors import ServerError
from server.proto import model_config_pb2 as mc

TARGET_PARAMETER = "ortserve.target_latency_p99_ms"
# A queue delay is not a timeout: a target above a minute is a typo, not a latency budget.
MAX_TARGET_MS = 60_000.0


def latency_target_ms(config: mc.ModelConfig) -> float | None:
    """The target in milliseconds, or None when the parameter is absent.

    Raises INVALID_ARG for a value that is not a number in (0, 60000] ms, and for a model whose
    batcher does not merge requests (there is no queue delay to tune).
    """
    entry = config.parameters.get(TARGET_PARAMETER)
    if entry is None:
        return None
    text = entry.string_value.strip()
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not 0 < value <= MAX_TARGET_MS:  # also false for nan and inf
        raise ServerError.invalid_arg(
            f"model '{config.name}': parameter '{TARGET_PARAMETER}' must be a number of milliseconds "
            f"in (0, {MAX_TARGET_MS:g}], got '{entry.string_value}'"
        )
    if config.max_batch_size <= 0 or not config.HasField("dynamic_batching"):
        raise ServerError.invalid_arg(
            f"model '{config.name}': parameter '{TARGET_PARAMETER}' tunes the dynamic batcher's queue delay "
            "and needs dynamic_batching with max_batch_size > 0"
        )
    return value
