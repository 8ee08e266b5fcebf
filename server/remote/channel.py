"""One end of a framed message channel on the running event loop.

Messages sent during one loop turn leave in one write at the end of it (``call_soon``), which
is what batches completions per wake-up: a formed batch answers all its requests in one turn.
"""

from __future__ import annotations

import asyncio
import logging
import socket
from collections.abc import Callable
from typing import Any

from server.remote.frames import FrameReader, encode

log = logging.getLogger(__name__)


class Channel(asyncio.Protocol):
    def __init__(self, on_message: Callable[[Any], None], on_lost: Callable[[], None]) -> None:
        self._on_message, self._on_lost = on_message, on_lost
        self._reader = FrameReader()
        self._outbox: list[Any] = []
        self._transport: asyncio.Transport | None = None
        self._loop = asyncio.get_running_loop()
        self.closed = False

    @classmethod
    async def open(cls, sock: socket.socket, on_message: Callable[[Any], None], on_lost: Callable[[], None]) -> Channel:
        """Serve a connected socket (one end of a socketpair) on the running loop."""
        sock.setblocking(False)
        _, channel = await asyncio.get_running_loop().create_unix_connection(lambda: cls(on_message, on_lost), sock=sock)
        return channel

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._transport = transport  # type: ignore[assignment]  # a stream transport for a stream socket

    def data_received(self, data: bytes) -> None:
        for message in self._reader.feed(data):
            try:
                self._on_message(message)
            except Exception:  # a bug must cost one message, never the channel
                log.exception("unexpected error handling a %r message", message[0] if isinstance(message, tuple) and message else message)

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self._on_lost()

    def send(self, message: Any) -> None:
        """Queue ``message``; it is written at the end of this loop turn. Never blocks."""
        if self.closed:
            return
        if not self._outbox:
            self._loop.call_soon(self._flush)
        self._outbox.append(message)

    def _flush(self) -> None:
        messages, self._outbox = self._outbox, []
        if self._transport is not None and not self.closed and messages:
            self._transport.write(encode(messages))

    def close(self) -> None:
        self._flush()
        if self._transport is not None:
            self._transport.close()
