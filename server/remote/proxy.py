"""The frontend's InferenceService when the service runs in the engine process.

``RemoteService`` offers every public method of ``InferenceService`` (see ``methods.py``), so a
frontend does not know where the service runs:

- ``submit`` writes the request's tensors into this frontend's request arena and sends a small
  descriptor; it never blocks and returns a ``RemoteHandle`` (wait / cancel / done-callback /
  done, like ``InferenceHandle``). Errors the engine finds at submission (unknown model, bad
  request, full queue) arrive as the request's outcome, so ``complete`` raises them.
- ``complete`` returns the response whose arrays view the engine's response arena until the
  frontend drops them.
- a coroutine method is a call over the same channel; a plain method (metadata, config,
  statistics, readiness) is a blocking round trip on the control channel, bounded by
  ``call_timeout_secs``: the frontend's loop waits for the engine's next loop turn, a few
  hundred µs at worst under load (measured in docs/architecture.md), for calls that are
  rare next to inference.

When the engine goes away every waiting request and call fails with UNAVAILABLE at once and
``on_engine_lost`` runs (the frontend process exits).
"""

from __future__ import annotations

import asyncio
import itertools
import socket
from collections.abc import Callable
from typing import Any

from server.errors import ServerError
from server.remote.arena import Arena
from server.remote.channel import Channel
from server.remote.frames import receive_blocking, send_blocking
from server.remote.methods import service_methods
from server.remote.tensors import ArenaWriter, pack_request, unpack_response
from server.remote.wire_errors import error_from_wire
from server.service.awaiting import submit_and_wait
from server.types import InferRequest, InferResponse

ENGINE_GONE = "the inference engine process exited"


class RemoteHandle:
    """A request submitted to the engine, as its frontend sees it (InferenceHandle's methods)."""

    __slots__ = ("_future", "_proxy", "_request", "_rid")

    def __init__(self, proxy: RemoteService, request: InferRequest, rid: int, future: asyncio.Future[InferResponse]) -> None:
        self._proxy, self._request, self._rid, self._future = proxy, request, rid, future

    @property
    def request(self) -> InferRequest:
        return self._request

    def done(self) -> bool:
        return self._future.done()

    def cancel(self) -> None:
        """Withdraw the request: if it has not run yet it never will."""
        if not self._future.done():
            self._future.cancel()
            self._proxy._withdraw(self._rid)

    def add_done_callback(self, callback: Callable[[RemoteHandle], None]) -> None:
        self._future.add_done_callback(lambda _: callback(self))

    async def wait(self) -> None:
        """Return once the request has an outcome; raises CancelledError only when the waiting
        task itself is cancelled (which also withdraws the request)."""
        if self._future.done():
            return
        try:
            await self._future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                self._proxy._withdraw(self._rid)
                raise
        except Exception:  # the request's own failure
            return


class RemoteService:
    def __init__(
        self,
        data: socket.socket,
        control: socket.socket,
        request_arena: Arena,
        response_arena: Arena,
        call_timeout_secs: float = 30.0,
    ) -> None:
        self._data_socket, self._control = data, control
        self._control.settimeout(call_timeout_secs)
        self._call_timeout_secs = call_timeout_secs
        self._writer = ArenaWriter(request_arena)
        self._response_arena = response_arena
        self._ids = itertools.count()
        self._pending: dict[int, asyncio.Future[InferResponse]] = {}
        self._calls: dict[int, asyncio.Future[Any]] = {}
        self._channel: Channel | None = None
        self._exiting = self._lost = False
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()
        self._tracing = False  # the engine's tracing_active, as it last told us
        # Set by the frontend process: what to do when the engine asks it to stop, or is gone.
        self.on_stop: Callable[[], None] = lambda: None
        self.on_engine_lost: Callable[[], None] = lambda: None

    async def open(self) -> None:
        self._channel = await Channel.open(self._data_socket, self._on_message, self._on_lost)

    def report_audit(self, counts: object) -> None:
        """Hand this frontend's audit counters to the engine, whose /metrics adds them up."""
        if self._channel is not None and not self._lost:
            self._channel.send(("audit", counts))

    def report_started(self, failure: str | None) -> None:
        """Tell the engine this frontend listens (None) or why it cannot."""
        if self._channel is not None:
            self._channel.send(("started", failure))

    # ---- the frontend process's own state ----------------------------------------------------

    def mark_started(self) -> None:
        """The engine decides when serving starts; nothing to do here."""

    def begin_shutdown(self) -> None:
        """This frontend refuses new requests and reports not ready; the engine is not told."""
        self._exiting = True

    async def wait_idle(self) -> None:
        """Return once every request this frontend submitted has been completed."""
        await self._idle.wait()

    def is_ready(self) -> bool:
        return not self._exiting and not self._lost and bool(self._call("is_ready", (), {}))

    def tracing_active(self) -> bool:
        """Whether to note request origins: the engine sends its answer whenever it changes."""
        return self._tracing

    # ---- inference -----------------------------------------------------------------------------

    def submit(self, request: InferRequest) -> RemoteHandle:
        """Hand the request to the engine; never blocks. Raises UNAVAILABLE once shutting down."""
        if self._exiting:
            raise ServerError.unavailable("Server exiting")
        if self._lost or self._channel is None:
            raise ServerError.unavailable(ENGINE_GONE)
        # The request's block is freed when the engine releases it (a "release" message).
        descriptor, _ = pack_request(request, self._writer)
        rid = next(self._ids)
        future: asyncio.Future[InferResponse] = asyncio.get_running_loop().create_future()
        self._pending[rid] = future
        self._channel.send(("infer", rid, descriptor))
        self._in_flight += 1
        self._idle.clear()
        return RemoteHandle(self, request, rid, future)

    def complete(self, handle: RemoteHandle) -> InferResponse:
        """The response of a done request. Raises its ServerError, or CancelledError if withdrawn."""
        try:
            return handle._future.result()
        finally:
            self._in_flight -= 1
            if self._in_flight == 0:
                self._idle.set()

    async def infer(self, request: InferRequest) -> InferResponse:
        return await submit_and_wait(self.submit, self.complete, request)

    def _withdraw(self, rid: int) -> None:
        if self._channel is not None and rid in self._pending:
            self._channel.send(("cancel", rid))

    # ---- messages from the engine --------------------------------------------------------------

    def _on_message(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "done":
            self._finished(message[1], message[2])
        elif kind == "release":
            self._writer.free(message[1])
        elif kind == "result":
            future = self._calls.pop(message[1], None)
            if future is not None and not future.done():
                ok, value = message[2], message[3]
                future.set_result(value) if ok else future.set_exception(error_from_wire(value))
        elif kind == "tracing":
            self._tracing = message[1]
        elif kind == "stop":
            self.on_stop()

    def _finished(self, rid: int, outcome: tuple[Any, ...]) -> None:
        future = self._pending.pop(rid)
        if outcome[0] == "ok":
            response = unpack_response(outcome[1], self._response_arena, self._free_response)
            if not future.done():
                future.set_result(response)
        elif future.done():
            return
        elif outcome[0] == "error":
            future.set_exception(error_from_wire(outcome[1]))
        else:
            future.cancel()

    def _free_response(self, offset: int) -> None:
        if self._channel is not None:
            self._channel.send(("free", offset))

    def _on_lost(self) -> None:
        self._lost = True
        for future in self._pending.values():
            if not future.done():
                future.set_exception(ServerError.unavailable(ENGINE_GONE))
        for call in self._calls.values():
            if not call.done():
                call.set_exception(ServerError.unavailable(ENGINE_GONE))
        self.on_engine_lost()

    # ---- forwarded methods ---------------------------------------------------------------------

    def _call(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        """A plain method, answered by the engine's loop. Blocks this loop for the round trip."""
        if self._lost:
            raise ServerError.unavailable(ENGINE_GONE)
        sequence = next(self._ids)
        try:
            send_blocking(self._control, ("call", sequence, name, args, kwargs))
            while True:  # skip late answers to calls that timed out
                answer = receive_blocking(self._control)
                if answer[0] == sequence:
                    break
        except TimeoutError:
            raise ServerError.unavailable(f"the inference engine did not answer '{name}' within {self._call_timeout_secs}s") from None
        except (EOFError, OSError):
            raise ServerError.unavailable(ENGINE_GONE) from None
        ok, value = answer[1], answer[2]
        if not ok:
            raise error_from_wire(value)
        return value

    async def _call_async(self, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        if self._lost or self._channel is None:
            raise ServerError.unavailable(ENGINE_GONE)
        call_id = next(self._ids)
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self._calls[call_id] = future
        self._channel.send(("call", call_id, name, args, kwargs))
        try:
            return await future
        finally:
            self._calls.pop(call_id, None)


def _forward_sync(name: str) -> Callable[..., Any]:
    def forward(self: RemoteService, *args: Any, **kwargs: Any) -> Any:
        return self._call(name, args, kwargs)

    forward.__name__ = name
    return forward


def _forward_async(name: str) -> Callable[..., Any]:
    async def forward(self: RemoteService, *args: Any, **kwargs: Any) -> Any:
        return await self._call_async(name, args, kwargs)

    forward.__name__ = name
    return forward


def _install_forwarders() -> None:
    from server.service import InferenceService

    methods = service_methods(InferenceService)
    for name in methods.synchronous:
        setattr(RemoteService, name, _forward_sync(name))
    for name in methods.asynchronous:
        setattr(RemoteService, name, _forward_async(name))
    for name in methods.properties:
        setattr(RemoteService, name, property(_forward_sync(name)))
    for name in methods.static:
        setattr(RemoteService, name, staticmethod(getattr(InferenceService, name)))


_install_forwarders()
