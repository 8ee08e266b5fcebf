"""``preserve_ordering``: release responses in the order requests arrived.

With several instances, a later batch can finish first; its responses are held until every
earlier request has its outcome. Requests that already have an outcome (cancelled, or failed
in the queue) do not hold anything back.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable

from server.scheduling.job import InferenceJob


class OrderedRelease:
    def __init__(self) -> None:
        self._arrivals: deque[InferenceJob] = deque()
        self._ready: dict[int, Callable[[], None]] = {}

    def track(self, job: InferenceJob) -> None:
        """Call at admission, in arrival order."""
        self._arrivals.append(job)

    def complete(self, job: InferenceJob, settle: Callable[[], None]) -> None:
        """``settle`` resolves ``job``'s future; it runs once every earlier job is settled."""
        self._ready[id(job)] = settle
        self.flush()

    def flush(self) -> None:
        while self._arrivals:
            head = self._arrivals[0]
            settle = self._ready.pop(id(head), None)
            if settle is not None:
                settle()
            elif not head.future.done():
                return
            self._arrivals.popleft()
