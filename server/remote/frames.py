"""Framed messages between the processes of one server: a 4-byte length, then a pickled list.

Pickle is safe here only because both ends are this server's own processes, joined by a
socketpair the engine made (nothing listens on a path or a port). Each frame carries every
message queued during one loop turn, so a burst of completions costs one write and one read.
"""

from __future__ import annotations

import pickle
import socket
import struct
from typing import Any

_HEADER = struct.Struct("!I")


def encode(messages: list[Any]) -> bytes:
    payload = pickle.dumps(messages, protocol=pickle.HIGHEST_PROTOCOL)
    return _HEADER.pack(len(payload)) + payload


class FrameReader:
    """Bytes in as they arrive, complete frames' messages out."""

    def __init__(self) -> None:
        self._buffer = bytearray()

    def feed(self, data: bytes | bytearray | memoryview) -> list[Any]:
        self._buffer += data
        messages: list[Any] = []
        start, size = 0, len(self._buffer)
        while size - start >= _HEADER.size:
            (length,) = _HEADER.unpack_from(self._buffer, start)
            end = start + _HEADER.size + length
            if end > size:
                break
            messages.extend(pickle.loads(memoryview(self._buffer)[start + _HEADER.size : end]))
            start = end
        if start:
            del self._buffer[:start]
        return messages


def send_blocking(sock: socket.socket, message: Any) -> None:
    """Send one message as its own frame; blocks until the kernel took it."""
    sock.sendall(encode([message]))


def receive_blocking(sock: socket.socket) -> Any:
    """Read one frame holding one message. Blocks; raises EOFError when the peer has gone and
    TimeoutError past the socket's timeout."""
    (length,) = _HEADER.unpack(_read_exactly(sock, _HEADER.size))
    (message,) = pickle.loads(_read_exactly(sock, length))
    return message


def _read_exactly(sock: socket.socket, count: int) -> bytes:
    chunks, remaining = [], count
    while remaining:
        chunk = sock.recv(min(remaining, 1 << 20))
        if not chunk:
            raise EOFError("the other process closed the channel")
        chunks.append(chunk)
        remaining -= len(chunk)
    return b"".join(chunks)
