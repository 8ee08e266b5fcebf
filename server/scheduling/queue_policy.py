"""Priority levels and per-level queue policies from ``dynamic_batching`` (Triton's semantics).

- priority_levels N > 0 enables levels 1 (highest) .. N; a request's ``priority`` parameter picks
  one, 0 or out-of-range values use default_priority_level.
- Each level has a ModelQueuePolicy (priority_queue_policy[level], else default_queue_policy):
  max_queue_size, default_timeout_microseconds (0 = none), allow_timeout_override (a request's
  ``timeout`` may only lower the default), timeout_action.
- On purpose unlike Triton, no queue is unbounded: a max_queue_size of 0 (Triton's "no limit",
  and what a config without dynamic_batching has) becomes ``default_max_queue_size``, so a burst
  is refused at once instead of growing memory and latency without end.
"""

from __future__ import annotations

import dataclasses
import enum
from dataclasses import dataclass

from server.proto import model_config_pb2 as mc


class TimeoutAction(enum.Enum):
    REJECT = "REJECT"
    DELAY = "DELAY"


@dataclass(frozen=True, slots=True)
class QueuePolicy:
    max_queue_size: int = 0
    default_timeout_ns: int = 0
    allow_timeout_override: bool = False
    timeout_action: TimeoutAction = TimeoutAction.REJECT

    @classmethod
    def from_config(cls, policy: mc.ModelQueuePolicy) -> QueuePolicy:
        action = TimeoutAction.DELAY if policy.timeout_action == mc.ModelQueuePolicy.DELAY else TimeoutAction.REJECT
        return cls(
            max_queue_size=policy.max_queue_size,
            default_timeout_ns=policy.default_timeout_microseconds * 1000,
            allow_timeout_override=policy.allow_timeout_override,
            timeout_action=action,
        )

    def bounded(self, default_size: int) -> QueuePolicy:
        """This policy with ``default_size`` in place of an unbounded (0) queue."""
        return self if self.max_queue_size else dataclasses.replace(self, max_queue_size=default_size)

    def timeout_ns(self, requested_us: int) -> int:
        """The queue timeout a request gets (0 = none): the default, or a lower override."""
        timeout = self.default_timeout_ns
        requested = requested_us * 1000
        if self.allow_timeout_override and requested > 0 and (timeout == 0 or requested < timeout):
            timeout = requested
        return timeout


@dataclass(frozen=True, slots=True)
class PriorityPolicy:
    """Level 1 is the highest priority. ``levels`` holds one policy per level, index 0 = level 1."""

    levels: tuple[QueuePolicy, ...]
    default_level: int = 1

    @classmethod
    def from_config(cls, config: mc.ModelConfig) -> PriorityPolicy:
        bound = default_max_queue_size(config)
        if not config.HasField("dynamic_batching"):
            return cls(levels=(QueuePolicy(max_queue_size=bound),))
        batching = config.dynamic_batching
        default = QueuePolicy.from_config(batching.default_queue_policy).bounded(bound)
        count = max(1, batching.priority_levels)
        levels = tuple(
            QueuePolicy.from_config(batching.priority_queue_policy[level]).bounded(bound)
            if level in batching.priority_queue_policy
            else default
            for level in range(1, count + 1)
        )
        # model_config.batching_validation.validate_batching guarantees the default level is in range when levels are on.
        default_level = batching.default_priority_level if batching.priority_levels else 1
        return cls(levels=levels, default_level=default_level)

    def level_of(self, priority: int) -> int:
        """A request's ``priority`` parameter → level; 0 or out of range → the default level."""
        if 1 <= priority <= len(self.levels):
            return priority
        return self.default_level


# The smallest default bound, and how many batches per instance a default queue holds.
MIN_DEFAULT_QUEUE_SIZE = 256
QUEUED_BATCHES_PER_INSTANCE = 32


def default_max_queue_size(config: mc.ModelConfig) -> int:
    """The bound of a queue the config leaves unbounded: 32 full batches per instance, at least 256."""
    instances = sum(max(group.count, 1) for group in config.instance_group) or 1
    return max(MIN_DEFAULT_QUEUE_SIZE, QUEUED_BATCHES_PER_INSTANCE * max(config.max_batch_size, 1) * instances)
