"""The batcher's notion of time: a monotonic nanosecond clock, injectable for tests."""

from __future__ import annotations

import time
from typing import Protocol


class Clock(Protocol):
    def now_ns(self) -> int:
        """Monotonic nanoseconds; never goes back."""
        ...


class MonotonicClock:
    def now_ns(self) -> int:
        return time.monotonic_ns()
