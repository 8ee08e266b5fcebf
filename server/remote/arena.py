"""Shared memory for tensors between a frontend and the engine: one memfd per direction.

The writer of an arena allocates from it with a ring allocator (requests finish roughly in the
order they start, so blocks are freed roughly in order; one that lives long only holds back the
space behind it). The reader maps the same memfd and sees the bytes without a copy. A block is
freed by its writer when the reader says it is done with it.

memfd (``os.memfd_create``) has no name in the filesystem, so nothing is left behind when a
process dies; its pages are allocated when first written, so a large arena costs only what
is used at its busiest.
"""

from __future__ import annotations

import mmap
import os
from collections import deque
from dataclasses import dataclass

import numpy as np

# Blocks start at multiples of this (cache lines; numpy is happy with any alignment up to 64).
ALIGN = 64


@dataclass(slots=True)
class _Block:
    offset: int
    end: int
    freed: bool = False


class RingAllocator:
    """Offsets within ``capacity`` bytes, allocated at a moving head and reclaimed at the tail.

    ``allocate`` returns None when no contiguous run of the size is free (the caller then sends
    the bytes another way). Pure bookkeeping: no memory is touched.
    """

    def __init__(self, capacity: int) -> None:
        self.capacity = capacity
        self._blocks: deque[_Block] = deque()
        self._live: dict[int, _Block] = {}
        self._head = 0

    @property
    def used_blocks(self) -> int:
        return len(self._live)

    def allocate(self, size: int) -> int | None:
        size = max(ALIGN, -(-size // ALIGN) * ALIGN)
        if not self._blocks:
            self._head = 0
            offset: int | None = 0 if size <= self.capacity else None
        else:
            tail = self._blocks[0].offset
            if self._head > tail:  # live blocks in [tail, head): free at the end, then at the start
                offset = self._head if self.capacity - self._head >= size else (0 if tail >= size else None)
            else:  # wrapped: the free run is between the head and the oldest live block
                offset = self._head if tail - self._head >= size else None
        if offset is None:
            return None
        block = _Block(offset, offset + size)
        self._blocks.append(block)
        self._live[offset] = block
        self._head = block.end
        return offset

    def free(self, offset: int) -> None:
        """Give back a block (any order). Raises KeyError for an offset that is not allocated."""
        self._live.pop(offset).freed = True
        while self._blocks and self._blocks[0].freed:
            self._blocks.popleft()


class Arena:
    """A memfd mapped into this process; ``fd`` can be handed to a child process."""

    def __init__(self, fd: int, size: int) -> None:
        self.fd, self.size = fd, size
        self.mapping = mmap.mmap(fd, size)
        self._bytes = np.frombuffer(self.mapping, dtype=np.uint8)

    @classmethod
    def create(cls, name: str, size: int) -> Arena:
        """A new, zero-length-in-use arena of ``size`` bytes (Linux only: memfd)."""
        fd = os.memfd_create(name, os.MFD_CLOEXEC)
        os.ftruncate(fd, size)
        return cls(fd, size)

    def close_fd(self) -> None:
        """Close the descriptor once it was handed on; the mapping stays."""
        os.close(self.fd)

    def region(self, offset: int, nbytes: int) -> np.ndarray:
        """The bytes at ``offset`` as a uint8 array that views the shared memory (no copy)."""
        return self._bytes[offset : offset + nbytes]
