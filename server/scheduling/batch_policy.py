"""The batch-formation rule, as a pure function of the queue and the clock.

When an instance is free, the scheduler asks ``form_batch`` what to do with the queue (oldest
first, highest priority first). The rule is Triton 2.41's dynamic batcher (GetDynamicBatch in
its core), stated here as a pure function:

1. The head (oldest request) starts the batch; later requests join in queue order. A request's
   rows are its batch dim (at least 1). "The largest preferred size" is the largest
   ``preferred_batch_size``, or ``max_batch_size`` when none is set.
2. The scan stops at the first request that cannot join: one that would overflow
   ``max_batch_size``, or whose non-ragged input shapes differ from the head's. Such a request
   closes the batch: what has been gathered cannot grow, so it is dispatched at once. (The
   request that stopped the scan heads the next batch; nothing is skipped or reordered.)
3. While scanning, the batch remembers its last "good place to cut": each time the rows reach a
   preferred size, and the point just before the rows would first exceed the largest preferred
   size. If such a cut exists and the head has not waited a (non-zero) ``max_queue_delay`` yet,
   dispatch the requests up to that cut at once.
4. Otherwise dispatch everything gathered at once if the scan was stopped (rule 2), if the rows
   reach the largest preferred size, if the head has waited ``max_queue_delay``, or if that delay
   is 0.
5. Otherwise the batch could still grow: wait until the head's delay runs out (new arrivals are
   considered before then).

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

    @property
    def largest_preferred(self) -> int:
        """Rows at which a batch stops waiting for more (Triton's max preferred batch size)."""
        return self.preferred_batch_sizes[-1] if self.preferred_batch_sizes else self.max_batch_size

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
    """Run the first ``count`` queued requests as one batch now."""

    count: int


@dataclass(frozen=True, slots=True)
class WaitUntil:
    """Nothing to run yet; decide again at ``deadline_ns`` or when the queue changes."""

    deadline_ns: int


def form_batch(queue: Sequence[Candidate], now_ns: int, rule: BatchingRule) -> Dispatch | WaitUntil | None:
    """What to do with ``queue`` when an instance is free; None when the queue is empty."""
    if not queue:
        return None
    if not rule.merges:
        return Dispatch(1)
    head = queue[0]
    largest_preferred = rule.largest_preferred
    rows = max(1, head.rows)
    count = 1
    cut = 1 if rows in rule.preferred_batch_sizes else 0
    stopped = False
    for position in range(1, len(queue)):
        candidate = queue[position]
        joined = rows + max(1, candidate.rows)
        if joined > largest_preferred and not cut:
            cut = count
        if joined > rule.max_batch_size or candidate.shape_key != head.shape_key:
            stopped = True
            break
        rows, count = joined, count + 1
        if rows in rule.preferred_batch_sizes:
            cut = count
    no_delay = rule.max_queue_delay_ns == 0
    delay_over = not no_delay and now_ns - head.enqueued_ns >= rule.max_queue_delay_ns
    if cut and not delay_over:
        return Dispatch(cut)
    if stopped or delay_over or no_delay or rows >= largest_preferred:
        return Dispatch(count)
    return WaitUntil(head.enqueued_ns + rule.max_queue_delay_ns)
