"""The in-flight byte budget: how much request data the server holds at once, queued or running.

Every admitted request reserves its size as received until it is answered; one that would take
the total past the budget is refused at once (UNAVAILABLE, counted as REJECTED) before its
tensors are decoded, so a burst of large requests costs bounded memory. Runs on the event loop.
"""

from __future__ import annotations

import os
from pathlib import Path

from server.errors import ErrorCode, FailureReason, ServerError

# By default a quarter of the memory this process may use: room for decoded tensors, outputs,
# the models themselves and the transports' own buffers.
_DEFAULT_SHARE = 4


def default_budget_bytes() -> int:
    """A quarter of the cgroup memory limit when one is set, else of the machine's memory."""
    return _memory_limit_bytes() // _DEFAULT_SHARE


def machine_memory_bytes() -> int:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _memory_limit_bytes() -> int:
    physical = machine_memory_bytes()
    for path in ("/sys/fs/cgroup/memory.max", "/sys/fs/cgroup/memory/memory.limit_in_bytes"):
        try:
            text = Path(path).read_text().strip()
        except OSError:
            continue
        if text.isdigit() and 0 < int(text) < physical:
            return int(text)
    return physical


class InflightBudget:
    def __init__(self, limit_bytes: int) -> None:
        self.limit_bytes = limit_bytes
        self.used_bytes = 0

    def reserve(self, size: int) -> None:
        """Take ``size`` bytes or raise UNAVAILABLE (REJECTED) without taking any."""
        if self.used_bytes + size > self.limit_bytes:
            raise ServerError(
                ErrorCode.UNAVAILABLE,
                f"the server holds its limit of {self.limit_bytes} bytes of requests in flight (--max-inflight-bytes); retry later",
                FailureReason.REJECTED,
            )
        self.used_bytes += size

    def release(self, size: int) -> None:
        self.used_bytes -= size
