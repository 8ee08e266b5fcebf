"""A least-recently-used map with a byte budget, an optional time to live and partitions.

Every operation is O(1) (an OrderedDict keeps the recency order; eviction pops its oldest end),
except dropping a partition, which is O(its entries). There is no lock: the response cache
lives on the event loop, where every lookup and insertion runs.

A partition is one owner's share (a model version): its entries can be dropped together and
it counts its own entries, bytes and evictions. Keys are unique across partitions (the caller
derives them from the partition), so the map itself is one flat dictionary.
"""

from __future__ import annotations

from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass, field
from time import monotonic_ns
from typing import Generic, TypeVar

V = TypeVar("V")


@dataclass(slots=True, eq=False)
class Partition:
    """One owner's entries and what they hold."""

    keys: set[bytes] = field(default_factory=set)
    bytes: int = 0
    evictions: int = 0

    @property
    def entries(self) -> int:
        return len(self.keys)


@dataclass(slots=True)
class _Entry(Generic[V]):
    value: V
    size: int
    partition: Partition
    # Monotonic ns after which the entry is stale (0 = never).
    expires_ns: int


class ByteBudgetLRU(Generic[V]):
    def __init__(self, capacity_bytes: int, ttl_ns: int = 0, clock: Callable[[], int] = monotonic_ns) -> None:
        self.capacity_bytes = capacity_bytes
        self._ttl_ns = ttl_ns
        self._clock = clock
        self._entries: OrderedDict[bytes, _Entry[V]] = OrderedDict()
        self.used_bytes = 0
        self.evictions = 0

    def __len__(self) -> int:
        return len(self._entries)

    def get(self, key: bytes) -> V | None:
        """The value stored under ``key`` (now the most recently used), or None when it is absent
        or its time to live has passed (then it is removed)."""
        entry = self._entries.get(key)
        if entry is None:
            return None
        if entry.expires_ns and self._clock() >= entry.expires_ns:
            self._remove(key, entry)
            return None
        self._entries.move_to_end(key)
        return entry.value

    def put(self, key: bytes, value: V, size: int, partition: Partition) -> bool:
        """Store ``value`` (``size`` bytes) as the most recently used entry, evicting the least
        recently used ones until it fits. A value larger than the whole budget is not stored
        (and evicts nothing); returns whether it was stored."""
        if size > self.capacity_bytes:
            return False
        old = self._entries.get(key)
        if old is not None:
            self._remove(key, old)
        while self.used_bytes + size > self.capacity_bytes:
            evicted_key, evicted = self._entries.popitem(last=False)
            self._account_removal(evicted_key, evicted)
            evicted.partition.evictions += 1
            self.evictions += 1
        expires_ns = self._clock() + self._ttl_ns if self._ttl_ns else 0
        self._entries[key] = _Entry(value, size, partition, expires_ns)
        partition.keys.add(key)
        partition.bytes += size
        self.used_bytes += size
        return True

    def drop(self, partition: Partition) -> int:
        """Remove every entry of ``partition``; returns how many there were."""
        keys = list(partition.keys)
        for key in keys:
            self._remove(key, self._entries[key])
        return len(keys)

    def _remove(self, key: bytes, entry: _Entry[V]) -> None:
        del self._entries[key]
        self._account_removal(key, entry)

    def _account_removal(self, key: bytes, entry: _Entry[V]) -> None:
        entry.partition.keys.discard(key)
        entry.partition.bytes -= entry.size
        self.used_bytes -= entry.size
