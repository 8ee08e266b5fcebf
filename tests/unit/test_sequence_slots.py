"""The sequence-slot table with a fake clock: assignment, backlog, END, idle release, failures."""

from __future__ import annotations

import pytest

from server.scheduling.sequence_slots import SequenceSlots, SlotRef, UnknownSequenceError
from tests.fake_clock import FakeClock

IDLE_NS = 1_000_000_000


def table(instances: int = 2, slots: int = 2) -> SequenceSlots[str]:
    return SequenceSlots[str](instances, slots, IDLE_NS)


def test_starts_take_the_lowest_slot_spreading_over_instances_first() -> None:
    slots, now = table(), FakeClock().now_ns()
    refs = [slots.admit(f"s{i}", True, False, f"s{i}-0", now) for i in range(4)]
    assert refs == [SlotRef(0, 0), SlotRef(0, 1), SlotRef(1, 0), SlotRef(1, 1)]
    assert slots.active_count == 4


def test_later_requests_go_to_their_sequences_slot_in_order() -> None:
    slots, now = table(), 0
    first = slots.admit(7, True, False, "a", now)
    slots.admit(8, True, False, "x", now)
    assert slots.admit(7, False, False, "b", now) == first
    assert list(slots.slot(first).queue) == ["a", "b"]  # type: ignore[arg-type]


def test_a_request_of_an_unknown_sequence_without_start_is_refused() -> None:
    with pytest.raises(UnknownSequenceError):
        table().admit("never-started", False, False, "a", 0)


def test_end_releases_the_slot_after_the_request_ran_and_forgets_the_id() -> None:
    slots = table(instances=1, slots=1)
    ref = slots.admit(1, True, True, "only", 0)
    assert ref is not None
    with pytest.raises(UnknownSequenceError):
        slots.admit(1, False, False, "after end", 0)
    assert slots.take(ref) == "only"
    assert slots.active_count == 1  # still running
    assert slots.finish(ref) is None
    assert slots.active_count == 0


def test_sequences_wait_in_the_backlog_and_get_the_first_released_slot_in_arrival_order() -> None:
    slots = table(instances=1, slots=1)
    ref = slots.admit("a", True, False, "a0", 0)
    assert ref is not None
    assert slots.admit("b", True, False, "b0", 0) is None
    assert slots.admit("c", True, False, "c0", 0) is None
    assert slots.admit("b", False, True, "b1", 0) is None  # b's whole sequence is backlogged
    assert slots.backlog_count == 2
    slots.admit("a", False, True, "a1", 0)
    slots.take(ref)
    slots.finish(ref)
    slots.take(ref)
    assert slots.finish(ref) == ref  # went to b
    assert list(slots.slot(ref).queue) == ["b0", "b1"]
    assert slots.slot(ref).corrid == "b"
    slots.take(ref)
    slots.finish(ref)
    slots.take(ref)
    assert slots.finish(ref) == ref  # b had ended: the slot went straight to c
    assert slots.slot(ref).corrid == "c"
    assert slots.backlog_count == 0


def test_a_start_for_a_running_sequence_continues_in_its_slot() -> None:
    slots = table()
    ref = slots.admit("s", True, False, "a", 0)
    assert slots.admit("s", True, False, "restart", 0) == ref


def test_idle_sequences_are_released_once_what_they_queued_ran() -> None:
    clock = FakeClock()
    slots = table(instances=1, slots=1)
    ref = slots.admit("slow", True, False, "a", clock.now_ns())
    assert ref is not None
    assert slots.admit("next", True, False, "n0", clock.now_ns()) is None
    assert slots.next_idle_ns() == clock.now_ns() + IDLE_NS
    clock.advance_us(IDLE_NS / 1000 - 1)
    assert slots.release_idle(clock.now_ns()) == ([], [])
    clock.advance_us(1)
    idle, reassigned = slots.release_idle(clock.now_ns())
    assert idle == ["slow"] and reassigned == []  # "a" still has to run
    with pytest.raises(UnknownSequenceError):
        slots.admit("slow", False, False, "too late", clock.now_ns())
    slots.take(ref)
    assert slots.finish(ref) == ref
    assert slots.slot(ref).corrid == "next"


def test_an_idle_sequence_with_nothing_queued_frees_its_slot_at_once() -> None:
    slots = table(instances=1, slots=1)
    ref = slots.admit("s", True, False, "a", 0)
    assert ref is not None
    slots.take(ref)
    slots.finish(ref)
    assert slots.release_idle(IDLE_NS) == (["s"], [])
    assert slots.active_count == 0 and slots.next_idle_ns() is None


def test_backlogged_sequences_time_out_with_their_request_timeout() -> None:
    slots = table(instances=1, slots=1)
    slots.admit("a", True, False, "a0", 0)
    slots.admit("b", True, False, "b0", 0, timeout_ns=500)
    slots.admit("b", False, False, "b1", 100, timeout_ns=1000)
    assert slots.next_backlog_expiry_ns() == 500
    assert slots.expire_backlog(499) == []
    assert slots.expire_backlog(500) == ["b0", "b1"]
    assert slots.backlog_count == 0
    with pytest.raises(UnknownSequenceError):
        slots.admit("b", False, False, "b2", 600)


def test_abort_ends_the_sequence_and_hands_back_what_it_queued() -> None:
    slots = table(instances=1, slots=1)
    ref = slots.admit("s", True, False, "a", 0)
    assert ref is not None
    slots.admit("s", False, False, "b", 0)
    slots.admit("w", True, False, "w0", 0)
    slots.take(ref)
    dropped, reassigned = slots.abort(ref)
    assert dropped == ["b"] and reassigned == ref
    assert slots.slot(ref).corrid == "w"
    with pytest.raises(UnknownSequenceError):
        slots.admit("s", False, False, "c", 0)


def test_prune_drops_abandoned_heads_and_keeps_the_sequence() -> None:
    slots = table(instances=1, slots=1)
    ref = slots.admit("s", True, False, "gone", 0)
    assert ref is not None
    slots.admit("s", False, False, "kept", 0)
    assert slots.prune(ref, lambda item: item == "gone") is None
    assert list(slots.slot(ref).queue) == ["kept"]
    assert slots.admit("s", False, False, "more", 0) == ref


def test_drain_all_returns_every_queued_request() -> None:
    slots = table(instances=1, slots=1)
    slots.admit("a", True, False, "a0", 0)
    slots.admit("b", True, False, "b0", 0)
    assert sorted(slots.drain_all()) == ["a0", "b0"]
    assert slots.queued_count() == 0


def test_ready_slots_are_those_with_a_request_and_none_running() -> None:
    slots = table(instances=1, slots=3)
    first = slots.admit("a", True, False, "a0", 0)
    second = slots.admit("b", True, False, "b0", 0)
    assert first is not None and second is not None
    slots.admit("a", False, False, "a1", 0)
    assert [slot.ref for slot in slots.ready_slots(0)] == [first, second]
    slots.take(first)
    assert [slot.ref for slot in slots.ready_slots(0)] == [second]  # a runs; its next request waits
    slots.finish(first)
    slots.take(second)
    slots.finish(second)
    assert [slot.ref for slot in slots.ready_slots(0)] == [first]
