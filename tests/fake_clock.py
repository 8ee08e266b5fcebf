"""A clock the tests move by hand (TF Serving's FakeClockEnv idea): no sleeps, exact instants."""

from __future__ import annotations


class FakeClock:
    def __init__(self, start_ns: int = 1_000_000_000) -> None:
        self._now = start_ns

    def now_ns(self) -> int:
        return self._now

    def advance_us(self, microseconds: float) -> None:
        self._now += int(microseconds * 1000)
