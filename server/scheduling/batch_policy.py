"""The batch-formation rule, as a pure function of the queue and the clock.

When an instance is free, the scheduler asks ``form_batch`` what to do with the queue (oldest
first, highest priority first). The rule, following Triton's dynamic batcher:

1. The head (oldest request) starts the batch. Later requests join in queue order if their
   non-batch input shapes equal the head's, while the summed batch dims fit max_batch_size.
   A request with other shapes is skipped (it waits for a later batch, and becomes a head
   itself once it is the oldest, so it is never starved). The scan stops at the first
   compatible request that would overflow max_batch_size.
2. If the candidates fill max_batch_size, dispatch them at once.
3. Else, if a prefix of the candidates sums exactly to a preferred batch size, dispatch the
   longest such prefix at once.
4. Else, if the head has waited at least max_queue_delay, dispatch every candidate.
5. Else, wait until the head's delay runs out (new arrivals are considered before then).

Without merging (max_batch_size 0, or no dynamic_batching), every request is its own batch.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Protocol

from server.proto import model_config_pb2 as mc


class Candidate(Protocol):
    @property
    def rows(self) -> int: ...

    @property
    def shape_key(self) -> Hashable: ...

    @property
    def enqueued_ns(self) -> int: ...


@dataclass(frozen=True, slots=True)
class BatchingRule:
    # 0 disables merging: each request runs alone.
    max_batch_size: int
    preferred_batch_sizes: tuple[int, ...] = ()
    max_queue_delay_ns: int = 0

    @property
    def merges(self) -> bool:
        return self.max_batch_size > 0

    @classmethod
    def from_config(cls, config: mc.ModelConfig) -> BatchingRule:
        if config.max_batch_size <= 0 or not config.HasField("dynamic_batching"):
            return cls(max_batch_size=0)
        batching = config.dynamic_batching
        return cls(
            max_batch_size=config.max_batch_size,
            preferred_batch_sizes=tuple(sorted(set(batching.preferred_batch_size))),
            max_queue_delay_ns=batching.max_queue_delay_microseconds * 1000,
        )


@dataclass(frozen=True, slots=True)
class Dispatch:
    """Run these queue positions (ascending) as one batch now."""

    positions: tuple[int, ...]


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Nothing to run yet; decide again at ``deadline_ns`` or when the queue changes."""

    deadline_ns: int


def form_batch(queue: Sequence[Candidate], now_ns: int, rule: BatchingRule) -> Dispatch | WaitUntil | None:
    """What to do with ``queue`` when an instance is free; None when the queue is empty."""
    if not queue:
        return None
    if not rule.merges:
        return Dispatch((0,))
    head = queue[0]
    positions = [0]
    rows = head.rows
    preferred_prefix = len(positions) if rows in rule.preferred_batch_sizes else 0
    for position in range(1, len(queue)):
        if rows >= rule.max_batch_size:
            break
        candidate = queue[position]
        if candidate.shape_key != head.shape_key:
            continue
        if rows + candidate.rows > rule.max_batch_size:
            break
        positions.append(position)
        rows += candidate.rows
        if rows in rule.preferred_batch_sizes:
            preferred_prefix = len(positions)
    if rows >= rule.max_batch_size:
        return Dispatch(tuple(positions))
    if preferred_prefix:
        return Dispatch(tuple(positions[:preferred_prefix]))
    deadline = head.enqueued_ns + rule.max_queue_delay_ns
    if now_ns >= deadline:
        return Dispatch(tuple(positions))
    return WaitUntil(deadline)
