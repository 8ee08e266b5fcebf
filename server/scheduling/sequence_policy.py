"""Which sequence requests one free instance runs together, as pure functions of its slots' first
requests and the clock (Triton 2.41's DirectSequenceBatch and OldestSequenceBatch).

**direct**: batch row *i* is slot *i*. The batch spans slot 0 to the highest slot with a request;
a slot with none, or whose request's shapes differ from the first one's, gets a "not ready" row
(READY false, its state untouched). With both ``max_queue_delay`` and ``minimum_slot_utilization``
set, a batch whose ready share is below the utilisation waits until its oldest request has waited
the delay; otherwise it runs at once.

**oldest**: the slots' first requests, oldest first, go through the dynamic batcher's rule
(batch_policy.form_batch) with the oldest strategy's preferred sizes and delay; no padding.
"""

from __future__ import annotations

from collections.abc import Hashable, Sequence
from dataclasses import dataclass

from server.scheduling.batch_policy import BatchingRule, Dispatch, WaitUntil, form_batch


@dataclass(frozen=True, slots=True)
class Head:
    """The first queued request of one slot that is not running."""

    slot: int
    enqueued_ns: int
    shape_key: Hashable = ()
    rows: int = 1


@dataclass(frozen=True, slots=True)
class SlotBatch:
    """Run these slots' first requests now; for direct, row i is ``rows[i]`` (None: not ready)."""

    rows: tuple[int | None, ...]


def direct_batch(
    heads: Sequence[Head], slots: int, now_ns: int, max_queue_delay_ns: int = 0, minimum_slot_utilization: float = 0.0
) -> SlotBatch | WaitUntil | None:
    """Triton's direct rule for one instance with ``slots`` slots; None when nothing waits."""
    if not heads:
        return None
    by_slot = {head.slot: head for head in heads}
    if max_queue_delay_ns and minimum_slot_utilization:
        oldest = min(head.enqueued_ns for head in heads)
        waited = now_ns - oldest
        if waited <= max_queue_delay_ns and len(heads) / slots < minimum_slot_utilization:
            return WaitUntil(oldest + max_queue_delay_ns + 1)
    representative = by_slot[min(by_slot)]
    highest = max(by_slot)
    rows = tuple(slot if slot in by_slot and by_slot[slot].shape_key == representative.shape_key else None for slot in range(highest + 1))
    return SlotBatch(rows)


def oldest_batch(heads: Sequence[Head], now_ns: int, rule: BatchingRule) -> SlotBatch | WaitUntil | None:
    """The oldest rule: the slots whose first requests run now, oldest first."""
    ordered = sorted(heads, key=lambda head: (head.enqueued_ns, head.slot))
    decision = form_batch(ordered, now_ns, rule)
    if isinstance(decision, Dispatch):
        return SlotBatch(tuple(head.slot for head in ordered[: decision.count]))
    return decision
