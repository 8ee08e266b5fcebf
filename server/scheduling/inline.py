"""The measured exception to "no blocking work on the loop": tiny models may run inline.

Handing a batch to an instance thread costs the loop a queue put, a thread wake-up, a
``call_soon_threadsafe`` back and the GIL changing hands twice; for a model that computes in
10-20 µs that is most of a request's cost (measured on ``simple`` in-process, one caller: 70-76
µs per request inline against 112-284 µs through the thread). So a batcher whose executions are
tiny runs them on the loop itself, and goes back to its threads as soon as they are not:

- on the threads, a batcher qualifies once at least ``window`` executions ran there and at least
  half of the last ``SAMPLES`` took under ``LIMIT_NS`` of the instance thread's CPU time (its wall
  time would count the wait for the GIL, which a busy loop holds for milliseconds; the CPU time
  still counts the hand-over's own overhead, so a median is asked for, not a p99);
- inline, each execution's wall time is what blocked the loop, and the loop keeps them only while
  their online p99 stays under the limit: the second execution over it among the last
  ``SAMPLES`` sends the batcher back to the threads at once, and the window it must qualify in
  again doubles (up to ``MAX_WINDOW``), so a model that only looked tiny costs the loop two slow
  executions per window at most; a window's worth of inline executions without a fall-back
  halves it again;
- an execution with more input bytes than the largest seen while qualifying never runs inline,
  so a sudden large request cannot block the loop on its first run.

``InlineGuard`` is a pure function of the timings it is fed, tested without a clock.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass, field

from server.scheduling.job import InferenceJob

# "An online p99 under a few tens of µs": about what the thread hand-over it saves costs the loop.
LIMIT_NS = 50_000
# The executions the median (on the threads) and the p99 (inline) are read from.
SAMPLES = 128
# Executions on the threads before the loop takes them, at first and at most.
WINDOW = 128
MAX_WINDOW = 4096


@dataclass(slots=True)
class InlineGuard:
    limit_ns: int = LIMIT_NS
    window: int = WINDOW
    _inline: bool = False
    # Over-limit flags of the last SAMPLES executions in the current mode, and how many are set.
    _recent: deque[bool] = field(default_factory=lambda: deque(maxlen=SAMPLES))
    _over: int = 0
    _runs: int = 0
    _qualified_bytes: int = 0

    @property
    def inline(self) -> bool:
        return self._inline

    def allows(self, input_bytes: int) -> bool:
        """Whether an execution with ``input_bytes`` of inputs may run on the loop now."""
        return self._inline and input_bytes <= self._qualified_bytes

    def record(self, elapsed_ns: int, input_bytes: int, inline: bool) -> None:
        """One execution took ``elapsed_ns`` (wall time on the loop if ``inline``, else the
        instance thread's CPU time) for ``input_bytes`` of inputs. Reports from the other mode
        (a hand-over that was already on a thread when the batcher went inline) are ignored."""
        if inline != self._inline:
            return
        over = elapsed_ns > self.limit_ns
        if len(self._recent) == self._recent.maxlen:
            self._over -= self._recent[0]
        self._recent.append(over)
        self._over += over
        self._runs += 1
        if inline:
            self._check_inline()
        else:
            self._check_threads(over, input_bytes)

    def _check_inline(self) -> None:
        if self._over >= 2:
            self.window = min(MAX_WINDOW, self.window * 2)
            self._switch(inline=False)
            self._qualified_bytes = 0
        elif self._runs >= self.window:
            self.window, self._runs = max(WINDOW, self.window // 2), 0

    def _check_threads(self, over: bool, input_bytes: int) -> None:
        if not over:
            self._qualified_bytes = max(self._qualified_bytes, input_bytes)
        if self._runs >= self.window and 2 * self._over <= len(self._recent) and self._qualified_bytes:
            self._switch(inline=True)

    def _switch(self, inline: bool) -> None:
        self._inline, self._runs, self._over = inline, 0, 0
        self._recent.clear()


def execution_bytes(batches: list[list[InferenceJob]]) -> int:
    """The most input bytes one execution of a hand-over carries."""
    return max(sum(array.nbytes for job in batch for array in job.feeds.values()) for batch in batches)
