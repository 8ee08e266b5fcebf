"""One loop timer kept at the earliest instant a scheduler's decision could change."""

from __future__ import annotations

import asyncio
from collections.abc import Callable

from server.scheduling.clock import Clock


class EarliestTimer:
    """Calls ``callback`` on the loop at the earliest instant asked for since it last fired.

    Instants are the clock's (ns); asking for a later instant than the one armed changes nothing,
    an earlier one re-arms. The instant armed is kept here because uvloop hands back a plain
    Handle (no ``.when()``) for zero delays.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, clock: Clock, callback: Callable[[], None]) -> None:
        self._loop, self._clock, self._callback = loop, clock, callback
        self._handle: asyncio.TimerHandle | asyncio.Handle | None = None
        self._at = 0.0

    @property
    def armed(self) -> bool:
        return self._handle is not None

    def arm(self, at_ns: int) -> None:
        when = self._loop.time() + max(0, at_ns - self._clock.now_ns()) / 1e9
        if self._handle is not None:
            if self._at <= when:
                return
            self._handle.cancel()
        self._handle, self._at = self._loop.call_at(when, self._fire), when

    def cancel(self) -> None:
        if self._handle is not None:
            self._handle.cancel()
            self._handle = None

    def _fire(self) -> None:
        self._handle = None
        self._callback()
