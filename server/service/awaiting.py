"""``infer`` in terms of ``submit`` and ``complete``: the one way a caller waits for a request,
shared by the in-process service and the proxy that stands in for it behind a process boundary."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Awaitable, Callable
from typing import Protocol, TypeVar

from server.types import InferRequest, InferResponse


class WaitableHandle(Protocol):
    def wait(self) -> Awaitable[None]: ...
    def cancel(self) -> None: ...


HandleT = TypeVar("HandleT", bound=WaitableHandle)


async def submit_and_wait(
    submit: Callable[[InferRequest], HandleT], complete: Callable[[HandleT], InferResponse], request: InferRequest
) -> InferResponse:
    """Submit, await and answer one request. If the caller is cancelled, the request is withdrawn
    (a queued job is skipped, never run) and ``complete`` still runs once, to record that."""
    handle = submit(request)
    try:
        await handle.wait()
    except asyncio.CancelledError:
        handle.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            complete(handle)
        raise
    return complete(handle)
