"""The server-wide response cache (Triton's ``--cache-config local,size=N``): one byte budget
shared by every model version whose config has ``response_cache { enable: true }``.

Entries are a request's outputs (name → array), stored as read-only copies that own their
memory (a fixed-size output is backed by an immutable ``bytes``), so an answer handed out any
number of times can never be changed, and a cached row of a batch does not keep the whole
batch's output alive. Each model version gets its own partition and token: the token seeds
every key, so a reloaded version never sees its predecessor's entries, and the partition is
dropped when the version unloads.
"""

from __future__ import annotations

import itertools
import struct
from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic_ns

import numpy as np

from server.scheduling.lru import ByteBudgetLRU, Partition

Outputs = dict[str, np.ndarray]

# What an entry costs beyond its arrays: the key, the dicts and the array headers.
ENTRY_OVERHEAD_BYTES = 512
# A Python str element of an object array, beyond its characters.
_STR_OVERHEAD_BYTES = 56


@dataclass(frozen=True, slots=True)
class CacheSettings:
    capacity_bytes: int
    # Entries older than this are not answered (0 = they live until evicted).
    ttl_secs: float = 0.0


@dataclass(frozen=True, slots=True, eq=False)
class CachePartition:
    """One model version's share of the cache."""

    token: bytes
    partition: Partition


class ResponseCache:
    def __init__(self, settings: CacheSettings, clock: Callable[[], int] = monotonic_ns) -> None:
        self.settings = settings
        self._lru: ByteBudgetLRU[Outputs] = ByteBudgetLRU(settings.capacity_bytes, int(settings.ttl_secs * 1e9), clock)
        self._generation = itertools.count(1)

    # ---- what /metrics shows -------------------------------------------------------------

    @property
    def capacity_bytes(self) -> int:
        return self._lru.capacity_bytes

    @property
    def used_bytes(self) -> int:
        return self._lru.used_bytes

    @property
    def entries(self) -> int:
        return len(self._lru)

    @property
    def evictions(self) -> int:
        return self._lru.evictions

    # ---- partitions, lookups, insertions ---------------------------------------------------

    def partition(self, model: str, version: int) -> CachePartition:
        """A new share for one loaded version; its token is unique for the life of the process."""
        name = model.encode("utf-8")
        token = struct.pack("<QQI", next(self._generation), version, len(name)) + name
        return CachePartition(token, Partition())

    def get(self, key: bytes) -> Outputs | None:
        return self._lru.get(key)

    def put(self, share: CachePartition, key: bytes, outputs: Outputs) -> Outputs:
        """Store read-only copies of ``outputs``; returns what later hits will be given (the
        copies), or ``outputs`` itself when they do not fit in the budget."""
        frozen = {name: frozen_copy(array) for name, array in outputs.items()}
        size = ENTRY_OVERHEAD_BYTES + sum(array_bytes(array) for array in frozen.values())
        return frozen if self._lru.put(key, frozen, size, share.partition) else outputs

    def drop(self, share: CachePartition) -> int:
        """Forget every entry of a version that unloads; returns how many there were."""
        return self._lru.drop(share.partition)


def frozen_copy(array: np.ndarray) -> np.ndarray:
    """A read-only copy that owns its memory: fixed-size data in an immutable ``bytes``; text
    (an object or unicode array of immutable strings) as a copy marked read-only."""
    if array.dtype.kind in "OU":
        copy = np.array(array, copy=True)
    else:
        contiguous = np.ascontiguousarray(array)
        copy = np.frombuffer(contiguous.tobytes(), dtype=contiguous.dtype).reshape(contiguous.shape)
    copy.flags.writeable = False
    return copy


def array_bytes(array: np.ndarray) -> int:
    """What an array holds in memory, counting the strings of an object array."""
    if array.dtype.kind == "O":
        return array.nbytes + sum(len(str(element)) + _STR_OVERHEAD_BYTES for element in array.flat)
    return array.nbytes
