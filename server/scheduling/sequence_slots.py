"""Which sequence holds which batch slot: Triton's sequence-slot bookkeeping as a pure structure.

Every instance has ``slots_per_instance`` slots. A START request takes the free slot with the
lowest index (spreading sequences over instances before filling any one), or waits in the
backlog, in arrival order, when none is free. Later requests of the sequence go to its slot (or
its backlog queue); a request for a sequence that holds neither must carry START. A sequence
ends with its END request, after ``idle_ns`` without a request (its slot is then released once
what it queued has run), or when its instance fails. A released slot goes to the oldest
backlogged sequence.

Driven by the caller's clock and never touches the event loop, so it is tested with a fake clock.
Items are opaque (the batcher's jobs).
"""

from __future__ import annotations

import heapq
from collections import deque
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Generic, NamedTuple, TypeVar

T = TypeVar("T")
CorrelationId = int | str


class UnknownSequenceError(Exception):
    """A request without START for a sequence that holds no slot and is not backlogged."""


class SlotRef(NamedTuple):
    """A batch slot of one instance. Ordered by slot first: the lowest free slot index across
    instances is taken first. (A tuple: it is hashed and compared on every request.)"""

    slot: int
    instance: int


@dataclass(slots=True)
class Slot(Generic[T]):
    ref: SlotRef
    corrid: CorrelationId | None = None
    queue: deque[T] = field(default_factory=deque)
    # The sequence ended (END queued, idle, failed): release once its queue ran and nothing runs.
    closing: bool = False
    in_flight: bool = False

    @property
    def free(self) -> bool:
        return self.corrid is None


@dataclass(slots=True)
class _Backlogged(Generic[T]):
    corrid: CorrelationId
    queue: deque[T] = field(default_factory=deque)
    ended: bool = False
    # Monotonic ns at which its requests fail ("timeout of the corresponding sequence has been expired"); 0 = never.
    expires_ns: int = 0


class SequenceSlots(Generic[T]):
    def __init__(self, instances: int, slots_per_instance: int, idle_ns: int) -> None:
        self._slots = {SlotRef(s, i): Slot[T](SlotRef(s, i)) for i in range(instances) for s in range(slots_per_instance)}
        self._by_instance = [[self._slots[SlotRef(s, i)] for s in range(slots_per_instance)] for i in range(instances)]
        # Per instance, the slots with a request to run and none running (kept as they change, so a
        # decision looks at those only, not at every slot).
        self._ready: list[set[int]] = [set() for _ in range(instances)]
        self._free = sorted(self._slots)
        self._idle_ns = idle_ns
        self._by_corrid: dict[CorrelationId, SlotRef] = {}
        self._backlog: deque[_Backlogged[T]] = deque()
        self._backlog_by_corrid: dict[CorrelationId, _Backlogged[T]] = {}
        self._last_seen: dict[CorrelationId, int] = {}

    # ---- what is there ---------------------------------------------------------------------

    @property
    def active_count(self) -> int:
        """Sequences holding a slot (ending ones included until their slot is released)."""
        return len(self._slots) - len(self._free)

    @property
    def backlog_count(self) -> int:
        return len(self._backlog)

    def slot(self, ref: SlotRef) -> Slot[T]:
        return self._slots[ref]

    def slots_of(self, instance: int) -> list[Slot[T]]:
        """The instance's slots in index order."""
        return self._by_instance[instance]

    def ready_slots(self, instance: int) -> list[Slot[T]]:
        """The instance's slots that have a request to run and none running, in index order."""
        slots = self._by_instance[instance]
        return [slots[index] for index in sorted(self._ready[instance])]

    def queued_count(self) -> int:
        return sum(len(slot.queue) for slot in self._slots.values()) + sum(len(entry.queue) for entry in self._backlog)

    # ---- requests arrive ---------------------------------------------------------------------

    def admit(self, corrid: CorrelationId, start: bool, end: bool, item: T, now_ns: int, timeout_ns: int = 0) -> SlotRef | None:
        """Queue ``item`` for its sequence: the slot it now waits in, or None if backlogged.

        Raises UnknownSequenceError for a request without START whose sequence holds nothing.
        """
        ref = self._by_corrid.get(corrid)
        backlogged = self._backlog_by_corrid.get(corrid)
        if not start and ref is None and backlogged is None:
            raise UnknownSequenceError(corrid)
        self._last_seen[corrid] = now_ns
        if ref is None and backlogged is None and self._free:
            ref = heapq.heappop(self._free)
            slot = self._slots[ref]
            slot.corrid, slot.closing = corrid, False
            self._by_corrid[corrid] = ref
        if ref is not None:
            slot = self._slots[ref]
            slot.queue.append(item)
            self._track(slot)
            if end:  # later requests with this id start a new sequence
                del self._by_corrid[corrid]
                slot.closing = True
            return ref
        if backlogged is None:
            backlogged = _Backlogged[T](corrid)
            self._backlog.append(backlogged)
            self._backlog_by_corrid[corrid] = backlogged
        backlogged.queue.append(item)
        if timeout_ns:
            expiry = now_ns + timeout_ns
            backlogged.expires_ns = min(backlogged.expires_ns, expiry) if backlogged.expires_ns else expiry
        if end:
            backlogged.ended = True
            del self._backlog_by_corrid[corrid]
        return None

    # ---- requests run ----------------------------------------------------------------------

    def take(self, ref: SlotRef) -> T:
        """Hand the slot's next request to an instance; the slot is busy until ``finish``."""
        slot = self._slots[ref]
        slot.in_flight = True
        item = slot.queue.popleft()
        self._track(slot)
        return item

    def finish(self, ref: SlotRef) -> SlotRef | None:
        """The slot's request was answered. Returns the slot when it went to a backlogged
        sequence (which now has requests to run)."""
        slot = self._slots[ref]
        slot.in_flight = False
        self._track(slot)
        return self._release_if_done(ref)

    def prune(self, ref: SlotRef, abandoned: Callable[[T], bool]) -> SlotRef | None:
        """Drop the requests at the head of the slot whose callers went away (their sequence goes
        on). Returns the slot if that released it and it went to a backlogged sequence."""
        slot = self._slots[ref]
        while slot.queue and abandoned(slot.queue[0]):
            slot.queue.popleft()
        self._track(slot)
        return self._release_if_done(ref)

    def abort(self, ref: SlotRef) -> tuple[list[T], SlotRef | None]:
        """End the slot's sequence now (its instance failed): its queued requests, to be failed,
        and the slot if it went to a backlogged sequence."""
        slot = self._slots[ref]
        dropped = list(slot.queue)
        slot.queue.clear()
        if slot.corrid is not None and self._by_corrid.get(slot.corrid) == ref:
            del self._by_corrid[slot.corrid]
        slot.closing, slot.in_flight = True, False
        self._track(slot)
        return dropped, self._release_if_done(ref)

    # ---- time passes -------------------------------------------------------------------------

    def release_idle(self, now_ns: int) -> tuple[list[CorrelationId], list[SlotRef]]:
        """End the sequences with a slot that saw no request for ``idle_ns``. Returns their ids
        and the slots that went to backlogged sequences."""
        idle: list[CorrelationId] = []
        reassigned: list[SlotRef] = []
        for corrid, seen in list(self._last_seen.items()):
            if now_ns - seen < self._idle_ns:
                continue
            ref = self._by_corrid.pop(corrid, None)
            if ref is not None:
                del self._last_seen[corrid]
                idle.append(corrid)
                self._slots[ref].closing = True
                if (taken := self._release_if_done(ref)) is not None:
                    reassigned.append(taken)
            elif corrid not in self._backlog_by_corrid:
                del self._last_seen[corrid]  # ended or dropped: nothing left to release
        return idle, reassigned

    def next_idle_ns(self) -> int | None:
        """When the next sequence holding a slot would go idle (None: none holds one)."""
        times = [seen for corrid, seen in self._last_seen.items() if corrid in self._by_corrid]
        return min(times) + self._idle_ns if times else None

    def expire_backlog(self, now_ns: int) -> list[T]:
        """Drop the backlogged sequences whose request timeout passed; their requests, to fail."""
        expired: list[T] = []
        for entry in [e for e in self._backlog if e.expires_ns and e.expires_ns <= now_ns]:
            self._backlog.remove(entry)
            if self._backlog_by_corrid.get(entry.corrid) is entry:
                del self._backlog_by_corrid[entry.corrid]
            expired.extend(entry.queue)
        return expired

    def next_backlog_expiry_ns(self) -> int | None:
        times = [entry.expires_ns for entry in self._backlog if entry.expires_ns]
        return min(times) if times else None

    def drain_all(self) -> list[T]:
        """Remove every queued request, in slots and backlog (the version is unloaded)."""
        items = [item for slot in self._slots.values() for item in slot.queue]
        items += [item for entry in self._backlog for item in entry.queue]
        for slot in self._slots.values():
            slot.queue.clear()
            self._track(slot)
        self._backlog.clear()
        self._backlog_by_corrid.clear()
        return items

    # ---- internals -------------------------------------------------------------------------

    def _track(self, slot: Slot[T]) -> None:
        ready = self._ready[slot.ref.instance]
        if slot.queue and not slot.in_flight:
            ready.add(slot.ref.slot)
        else:
            ready.discard(slot.ref.slot)

    def _release_if_done(self, ref: SlotRef) -> SlotRef | None:
        slot = self._slots[ref]
        if not slot.closing or slot.queue or slot.in_flight:
            return None
        slot.corrid, slot.closing = None, False
        if not self._backlog:
            heapq.heappush(self._free, ref)
            return None
        entry = self._backlog.popleft()
        slot.corrid, slot.queue = entry.corrid, entry.queue
        self._track(slot)
        if entry.ended:
            slot.closing = True
        else:
            del self._backlog_by_corrid[entry.corrid]
            self._by_corrid[entry.corrid] = ref
        return ref
