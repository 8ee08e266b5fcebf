"""Batching to a latency target: the dynamic batcher's queue delay, tuned online by AIMD.

A model with ``parameters { key: "ortserve.target_latency_p99_ms" ... }`` starts with no queue
delay. The batcher reports every formed batch and every executed one; each observation window
(128 requests, or 100 ms with at least one) ends with one decision by ``next_delay``, a pure
function of the window and the current delay (Clipper's additive-increase / multiplicative-
decrease, applied to the delay instead of the batch size):

1. The window's p99 of queue + compute time is over the target: halve the delay.
2. An idle instance was held back for a batch to grow (the delay bound) in the window: add one
   step if requests kept joining late in those waits — at least half as many joined in the
   second half of a wait (a batch that filled up before the delay ran out counts as one) as in
   the first — otherwise halve. Requests that arrive at random join both halves alike, so a
   longer wait gathers more, however short the delay is now; requests that arrive together join
   at once, and the rest of the wait only delays them (two clients whose requests arrive as a
   pair); a wait nobody joins (a lone client) is latency spent for nothing.
3. Nothing waited (the delay did not bind): add one step if requests shared batches (they queue
   behind busy instances, so a longer wait may gather more), else halve — every request ran
   alone, as a lone client's do, and a delay would only add to its latency.

A halved delay under one step becomes 0, so an idle or lightly loaded model runs each request at
once (the batcher's no-delay fast path), and the delay never exceeds the ceiling: the config's
``max_queue_delay_microseconds`` when set, else half the target (the other half is for compute).
"""

from __future__ import annotations

from dataclasses import dataclass, field

# The p99 of a window is its 99th-percentile sample (nearest rank).
P99 = 0.99


@dataclass(frozen=True, slots=True)
class DelayTarget:
    """The controller's constants for one model version (nanoseconds)."""

    target_ns: int
    ceiling_ns: int
    step_ns: int
    backoff: float = 0.5
    window_requests: int = 128
    window_ns: int = 100_000_000

    @classmethod
    def for_target(cls, target_ms: float, configured_delay_ns: int = 0) -> DelayTarget:
        """Steps of 1 % of the target (at least 10 µs): from 0 to a typical 2-5 ms delay in a few
        dozen windows, fine enough that the oscillation around a good delay stays small."""
        target_ns = int(target_ms * 1_000_000)
        ceiling = configured_delay_ns or target_ns // 2
        return cls(target_ns=target_ns, ceiling_ns=ceiling, step_ns=min(ceiling, max(10_000, target_ns // 100)))


@dataclass(frozen=True, slots=True)
class Window:
    """What one observation window saw."""

    p99_ns: int
    requests: int
    batches: int
    # Batches an idle instance was held back for, and the requests that joined them in the first and
    # in the second half of the wait (a batch that filled up before its deadline adds one late join).
    waits: int = 0
    early_joins: int = 0
    late_joins: int = 0


def next_delay(current_ns: int, window: Window, target: DelayTarget) -> int:
    """The queue delay for the next window (the rule in the module docstring)."""
    if window.requests == 0:
        return current_ns
    if window.p99_ns > target.target_ns:
        return _decrease(current_ns, target)
    grow = _kept_gathering(window) if window.waits else window.requests > window.batches
    return min(target.ceiling_ns, current_ns + target.step_ns) if grow else _decrease(current_ns, target)


def _kept_gathering(window: Window) -> bool:
    """Whether the waits kept gathering requests until late (where nothing waited, the caller asks
    instead whether requests shared batches)."""
    return window.late_joins > 0 and 2 * window.late_joins >= window.early_joins


def _decrease(current_ns: int, target: DelayTarget) -> int:
    lowered = int(current_ns * target.backoff)
    return lowered if lowered >= target.step_ns else 0


def wait_joins(joined_ns: list[int], wait_start_ns: int, deadline_ns: int, dispatched_ns: int) -> tuple[int, int]:
    """(early, late): the requests that joined a held-back batch (``joined_ns``: their enqueue
    instants) in the first and in the second half of the wait; one more late if the batch filled
    up before ``deadline_ns``."""
    midpoint = wait_start_ns + (deadline_ns - wait_start_ns) // 2
    late = sum(1 for joined in joined_ns if joined >= midpoint)
    return len(joined_ns) - late, late + (dispatched_ns < deadline_ns)


def p99(samples: list[int]) -> int:
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(P99 * len(ordered)))]


@dataclass(slots=True)
class DelayController:
    """The batcher's window of observations and the current delay. Runs on the event loop; the
    caller passes the clock's instants, so it is tested with a fake clock."""

    target: DelayTarget
    started_ns: int
    delay_ns: int = 0
    _latencies: list[int] = field(default_factory=list)
    _batches: int = 0
    _waits: int = 0
    _early: int = 0
    _late: int = 0

    def wait_ended(self, early: int, late: int) -> None:
        """A batch that an idle instance was held back for was dispatched (``wait_joins``)."""
        self._waits += 1
        self._early += early
        self._late += late

    def batch_done(self, latencies_ns: list[int], now_ns: int) -> bool:
        """One executed batch: each request's queue + compute time. True when the window closed
        and the delay changed."""
        self._latencies += latencies_ns
        self._batches += 1
        if len(self._latencies) < self.target.window_requests and now_ns - self.started_ns < self.target.window_ns:
            return False
        window = Window(p99(self._latencies), len(self._latencies), self._batches, self._waits, self._early, self._late)
        self._latencies, self._batches, self._waits, self._early, self._late = [], 0, 0, 0, 0
        self.started_ns = now_ns
        previous, self.delay_ns = self.delay_ns, next_delay(self.delay_ns, window, self.target)
        return self.delay_ns != previous
