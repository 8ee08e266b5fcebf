"""EarliestTimer: one loop timer at the earliest instant asked for. The clock is fake and frozen,
so each instant maps to a loop delay the test chooses; what is observed is whether the callback
ran by the time the loop has run its ready callbacks, or is still armed."""

from __future__ import annotations

import asyncio

from server.scheduling.wakeup import EarliestTimer
from tests.fake_clock import FakeClock

HOUR_NS = 3600 * 10**9


async def _run_ready_callbacks() -> None:
    for _ in range(3):  # a zero-delay call_at runs on the next turns of the loop
        await asyncio.sleep(0)


def test_an_earlier_instant_re_arms_and_a_later_one_does_not() -> None:
    async def scenario() -> list[str]:
        clock, fired = FakeClock(), []
        timer = EarliestTimer(asyncio.get_running_loop(), clock, lambda: fired.append("fired"))
        timer.arm(clock.now_ns() + HOUR_NS)
        await _run_ready_callbacks()
        assert timer.armed and fired == []  # an hour away
        timer.arm(clock.now_ns())  # earlier: re-armed to now
        timer.arm(clock.now_ns() + HOUR_NS)  # later than what is armed: no change
        done = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, done.set)
        await done.wait()
        return fired if not timer.armed else ["still armed"]

    assert asyncio.run(scenario()) == ["fired"]


def test_cancel_disarms_and_the_callback_never_runs() -> None:
    async def scenario() -> tuple[bool, list[str]]:
        clock, fired = FakeClock(), []
        timer = EarliestTimer(asyncio.get_running_loop(), clock, lambda: fired.append("fired"))
        timer.arm(clock.now_ns())
        timer.cancel()
        await _run_ready_callbacks()
        done = asyncio.Event()
        asyncio.get_running_loop().call_later(0.05, done.set)
        await done.wait()
        return timer.armed, fired

    assert asyncio.run(scenario()) == (False, [])
