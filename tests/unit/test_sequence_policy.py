"""The direct and oldest sequence-batching rules with a fake clock."""

from __future__ import annotations

from server.scheduling.batch_policy import BatchingRule, WaitUntil
from server.scheduling.sequence_policy import Head, SlotBatch, direct_batch, oldest_batch
from tests.fake_clock import FakeClock

DELAY_NS = 1_000_000


def test_direct_nothing_waiting_is_no_decision() -> None:
    assert direct_batch([], slots=4, now_ns=0) is None


def test_direct_rows_are_slots_with_not_ready_rows_in_the_gaps() -> None:
    heads = [Head(0, 10), Head(2, 5)]
    assert direct_batch(heads, slots=4, now_ns=20) == SlotBatch((0, None, 2))


def test_direct_a_slot_whose_shapes_differ_waits_for_the_next_batch() -> None:
    heads = [Head(0, 10, shape_key="a"), Head(1, 10, shape_key="b"), Head(2, 10, shape_key="a")]
    assert direct_batch(heads, slots=4, now_ns=20) == SlotBatch((0, None, 2))


def test_direct_runs_at_once_without_both_delay_and_utilization() -> None:
    heads = [Head(3, 0)]
    assert direct_batch(heads, slots=4, now_ns=0, max_queue_delay_ns=DELAY_NS) == SlotBatch((None, None, None, 3))
    assert direct_batch(heads, slots=4, now_ns=0, minimum_slot_utilization=0.5) == SlotBatch((None, None, None, 3))


def test_direct_waits_for_utilization_until_the_oldest_has_waited_the_delay() -> None:
    clock = FakeClock()
    start = clock.now_ns()
    heads = [Head(0, start)]
    decision = direct_batch(heads, 4, clock.now_ns(), DELAY_NS, minimum_slot_utilization=0.5)
    assert decision == WaitUntil(start + DELAY_NS + 1)
    two = [Head(0, start), Head(1, start)]
    assert direct_batch(two, 4, clock.now_ns(), DELAY_NS, 0.5) == SlotBatch((0, 1))
    clock.advance_us(DELAY_NS / 1000 + 0.001)
    assert direct_batch(heads, 4, clock.now_ns(), DELAY_NS, 0.5) == SlotBatch((0,))


def test_oldest_takes_the_oldest_slots_first_up_to_max_batch_size() -> None:
    heads = [Head(0, 30), Head(1, 10), Head(2, 20), Head(3, 40)]
    assert oldest_batch(heads, 50, BatchingRule(max_batch_size=3)) == SlotBatch((1, 2, 0))


def test_oldest_stops_at_a_shape_change_and_waits_for_a_preferred_size() -> None:
    heads = [Head(0, 10, "a"), Head(1, 20, "b")]
    assert oldest_batch(heads, 30, BatchingRule(max_batch_size=4)) == SlotBatch((0,))
    waiting = oldest_batch([Head(0, 10)], 30, BatchingRule(4, (2,), max_queue_delay_ns=DELAY_NS))
    assert waiting == WaitUntil(10 + DELAY_NS)
    assert oldest_batch([Head(0, 10), Head(1, 11)], 30, BatchingRule(4, (2,), DELAY_NS)) == SlotBatch((0, 1))


def test_oldest_without_batching_runs_one_slot_at_a_time() -> None:
    assert oldest_batch([Head(4, 20), Head(2, 10)], 30, BatchingRule(max_batch_size=0)) == SlotBatch((2,))
