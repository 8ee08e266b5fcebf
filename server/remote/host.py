"""The engine's side of one frontend: answers its requests and calls from the real service.

Each frontend process has a ``FrontendLink``: its data channel (requests in, outcomes out,
several to a write), its control channel (blocking calls from the frontend, answered on this
loop turn) and its two arenas (the frontend writes requests into one, the engine writes
responses into the other).

A request's block in the request arena is released once nothing in the engine refers to it
(``tensors.py``); that can happen on an instance thread, so the release is handed to the loop.
If the frontend goes away, its requests are withdrawn (counted as CANCELED, as a client that
went away) and nothing is sent any more.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import threading
from typing import Any

from server.errors import ServerError
from server.remote.arena import Arena
from server.remote.channel import Channel
from server.remote.methods import service_methods
from server.remote.tensors import ArenaWriter, pack_response, unpack_request
from server.remote.wire_errors import error_to_wire
from server.security.audit import AuditCounts
from server.service import InferenceHandle, InferenceService

log = logging.getLogger(__name__)


class FrontendLink:
    def __init__(self, service: InferenceService, name: str, request_arena: Arena, response_arena: Arena) -> None:
        self._service, self.name = service, name
        self._request_arena = request_arena
        self._writer = ArenaWriter(response_arena)
        self._handles: dict[int, InferenceHandle] = {}
        self._forwarded = service_methods(type(service)).forwarded()
        self._loop = asyncio.get_running_loop()
        self._loop_thread = threading.get_ident()
        self._data: Channel | None = None
        self._control: Channel | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        # What this frontend was last told of tracing_active (it notes request origins only then).
        self._told_tracing: bool | None = None
        # Inference requests this frontend handed over, and its audit counters as it last reported them (for /metrics).
        self.submitted = 0
        self.audit: AuditCounts | None = None
        self.lost = asyncio.Event()
        # The frontend's report once it listens: None, or why it cannot (it exits then).
        self.started: asyncio.Future[str | None] = self._loop.create_future()

    async def open(self, data: socket.socket, control: socket.socket) -> None:
        self._data = await Channel.open(data, self._on_data, self._on_lost)
        self._control = await Channel.open(control, self._on_control, self._on_lost)
        self._tell_tracing()

    @property
    def pending_count(self) -> int:
        return len(self._handles)

    def stop(self) -> None:
        """Ask the frontend to drain and exit (it keeps its channel until it has)."""
        if self._data is not None:
            self._data.send(("stop",))

    # ---- requests ----------------------------------------------------------------------------

    def _on_data(self, message: tuple[Any, ...]) -> None:
        kind = message[0]
        if kind == "infer":
            self._submit(message[1], message[2])
        elif kind == "cancel":
            handle = self._handles.get(message[1])
            if handle is not None:
                handle.cancel()
        elif kind == "free":
            self._writer.free(message[1])
        elif kind == "call":
            task = asyncio.ensure_future(self._answer_call(*message[1:]))
            self._tasks.add(task)
            task.add_done_callback(self._tasks.discard)
        elif kind == "audit":
            self.audit = message[1]
        elif kind == "started" and not self.started.done():
            self.started.set_result(message[1])

    def _submit(self, rid: int, descriptor: Any) -> None:
        self.submitted += 1
        try:
            request = unpack_request(descriptor, self._request_arena, self._released)
            handle = self._service.submit(request)
        except Exception as error:  # ServerError, or a bug that must cost one request only
            if not isinstance(error, ServerError):
                log.exception("unexpected error submitting a request from %s", self.name)
            self._send(("done", rid, ("error", error_to_wire(error))))
            return
        self._handles[rid] = handle
        handle.add_done_callback(lambda done: self._finished(rid, done))

    def _finished(self, rid: int, handle: InferenceHandle) -> None:
        self._handles.pop(rid, None)
        try:
            response = self._service.complete(handle)
            if self.lost.is_set():
                return
            descriptor, _ = pack_response(response, self._writer)
            outcome: tuple[Any, ...] = ("ok", descriptor)
            if response.trace is not None:  # its send instant: the response leaves for the frontend
                response.trace.finish()
        except asyncio.CancelledError:
            outcome = ("cancelled",)
        except Exception as error:
            if not isinstance(error, ServerError):
                log.exception("unexpected error answering a request from %s", self.name)
            outcome = ("error", error_to_wire(error))
        self._send(("done", rid, outcome))
        self._tell_tracing()

    def _tell_tracing(self) -> None:
        """Send the service's tracing_active when it differs from what this frontend knows: a trace
        setting changed (through any frontend) or a trace count ran out. Checked after every
        answer and forwarded call, so a change reaches a busy frontend within one request."""
        active = self._service.tracing_active()
        if active != self._told_tracing:
            self._told_tracing = active
            self._send(("tracing", active))

    def _released(self, offset: int) -> None:
        """A request block nothing refers to any more (called on any thread)."""
        if threading.get_ident() == self._loop_thread:
            self._send(("release", offset))
        else:
            with contextlib.suppress(RuntimeError):  # the loop is closed: the process is exiting
                self._loop.call_soon_threadsafe(self._send, ("release", offset))

    def _send(self, message: tuple[Any, ...]) -> None:
        if self._data is not None and not self.lost.is_set():
            self._data.send(message)

    # ---- forwarded calls ---------------------------------------------------------------------

    async def _answer_call(self, call_id: int, name: str, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        try:
            result = await self._method(name)(*args, **kwargs)
        except asyncio.CancelledError:  # the engine is going away: the caller must not wait for ever
            self._send(("result", call_id, False, error_to_wire(ServerError.unavailable("Server exiting"))))
            raise
        except Exception as error:
            self._send(("result", call_id, False, error_to_wire(error)))
        else:
            self._send(("result", call_id, True, result))
        self._tell_tracing()

    def _on_control(self, message: tuple[Any, ...]) -> None:
        _, sequence, name, args, kwargs = message
        try:
            value = self._method(name)
            result = value(*args, **kwargs) if callable(value) else value
            answer: tuple[Any, ...] = (sequence, True, result)
        except Exception as error:
            answer = (sequence, False, error_to_wire(error))
        if self._control is not None:
            self._control.send(answer)
        self._tell_tracing()

    def _method(self, name: str) -> Any:
        if name not in self._forwarded:
            raise ServerError.internal(f"'{name}' is not a method a frontend may call")
        return getattr(self._service, name)

    # ---- the frontend going away -------------------------------------------------------------

    def _on_lost(self) -> None:
        if self.lost.is_set():
            return
        self.lost.set()
        if not self.started.done():
            self.started.set_result("the frontend process exited while starting")
        for handle in list(self._handles.values()):
            handle.cancel()  # counted as CANCELED by complete(), as a client that went away
        for channel in (self._data, self._control):
            if channel is not None:
                channel.close()
