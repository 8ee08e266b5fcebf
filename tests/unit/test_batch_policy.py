"""The batch-formation rule with a fake clock: no sleeps, exact instants."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass

import pytest

from server.proto import model_config_pb2 as mc
from server.scheduling.batch_policy import BatchingRule, Dispatch, WaitUntil, form_batch
from tests.fake_clock import FakeClock

SHAPE_A = (("x", (4,)),)
SHAPE_B = (("x", (8,)),)


@dataclass
class Queued:
    rows: int
    enqueued_ns: int
    shape_key: Hashable = SHAPE_A


def queue_at(clock: FakeClock, *rows: int, gap_us: float = 0, shape: Hashable = SHAPE_A) -> list[Queued]:
    items = []
    for count in rows:
        items.append(Queued(count, clock.now_ns(), shape))
        clock.advance_us(gap_us)
    return items


def rule(max_batch: int = 8, preferred: tuple[int, ...] = (), delay_us: int = 0) -> BatchingRule:
    return BatchingRule(max_batch_size=max_batch, preferred_batch_sizes=preferred, max_queue_delay_ns=delay_us * 1000)


def test_empty_queue_has_nothing_to_do() -> None:
    assert form_batch([], 0, rule()) is None


def test_without_merging_each_request_runs_alone() -> None:
    clock = FakeClock()
    assert form_batch(queue_at(clock, 1, 1, 1), clock.now_ns(), BatchingRule(0)) == Dispatch(1)


def test_zero_delay_dispatches_whatever_is_queued_at_once() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 1, 1, 1)
    assert form_batch(queue, clock.now_ns(), rule(delay_us=0)) == Dispatch(3)


def test_zero_delay_still_cuts_at_a_preferred_size() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 1, 1, 1)
    assert form_batch(queue, clock.now_ns(), rule(preferred=(2,), delay_us=0)) == Dispatch(2)


def test_waits_for_the_oldest_requests_delay_then_dispatches() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 1, 1, gap_us=10)
    head_deadline = queue[0].enqueued_ns + 100_000
    assert form_batch(queue, clock.now_ns(), rule(delay_us=100)) == WaitUntil(head_deadline)
    clock.advance_us(79)  # queue_at left the clock 20 µs after the head: now 99 µs
    assert form_batch(queue, clock.now_ns(), rule(delay_us=100)) == WaitUntil(head_deadline)
    clock.advance_us(1)  # exactly the delay
    assert form_batch(queue, clock.now_ns(), rule(delay_us=100)) == Dispatch(2)


def test_reaching_max_batch_size_closes_the_batch_before_the_delay() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 2, 2, 2, 2, 1)
    assert form_batch(queue, clock.now_ns(), rule(max_batch=8, delay_us=10_000)) == Dispatch(4)


def test_exactly_max_batch_size_with_nothing_behind_is_dispatched_at_once() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 4, 4)
    assert form_batch(queue, clock.now_ns(), rule(max_batch=8, delay_us=10_000)) == Dispatch(2)


def test_preferred_size_closes_the_batch_at_once_with_the_largest_reached() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 1, 1, 1, 1, 1)
    decision = form_batch(queue, clock.now_ns(), rule(max_batch=16, preferred=(2, 4), delay_us=10_000))
    assert decision == Dispatch(4)


def test_preferred_size_not_reached_waits() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 1, 1, 1)
    decision = form_batch(queue, clock.now_ns(), rule(max_batch=16, preferred=(4, 8), delay_us=500))
    assert decision == WaitUntil(queue[0].enqueued_ns + 500_000)


def test_a_single_request_above_the_largest_preferred_size_runs_at_once() -> None:
    # Triton: a batch that already reached the largest preferred size cannot get any better.
    clock = FakeClock()
    queue = queue_at(clock, 7)
    assert form_batch(queue, clock.now_ns(), rule(max_batch=8, preferred=(2, 6), delay_us=10_000_000)) == Dispatch(1)


def test_a_request_that_would_pass_the_largest_preferred_size_cuts_the_batch_before_it() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 3, 4)
    assert form_batch(queue, clock.now_ns(), rule(max_batch=16, preferred=(2, 6), delay_us=10_000)) == Dispatch(1)


def test_once_the_delay_is_over_the_batch_may_grow_past_the_largest_preferred_size() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 3, 4, gap_us=20)
    decision = form_batch(queue, clock.now_ns(), rule(max_batch=16, preferred=(2, 6), delay_us=10))
    assert decision == Dispatch(2)


def test_requests_with_batch_dims_above_one_count_their_rows() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 3, 4, 2)
    assert form_batch(queue, clock.now_ns(), rule(max_batch=8, delay_us=0)) == Dispatch(2)


def test_a_request_that_would_overflow_sends_the_batch_at_once_and_heads_the_next() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 6, 4, 1)
    long_delay = rule(max_batch=8, delay_us=10_000_000)
    assert form_batch(queue, clock.now_ns(), long_delay) == Dispatch(1)
    # The next batch (4 + 1 rows) could still grow, so it waits for its head's delay.
    assert form_batch(queue[1:], clock.now_ns(), long_delay) == WaitUntil(queue[1].enqueued_ns + 10_000_000_000)


def test_a_different_shape_sends_the_batch_at_once_and_heads_the_next() -> None:
    clock = FakeClock()
    queue = [*queue_at(clock, 1), *queue_at(clock, 1, shape=SHAPE_B), *queue_at(clock, 1, 1)]
    long_delay = rule(max_batch=8, delay_us=10_000_000)
    assert form_batch(queue, clock.now_ns(), long_delay) == Dispatch(1)
    assert queue[1].shape_key == SHAPE_B
    assert form_batch(queue[1:], clock.now_ns(), long_delay) == Dispatch(1)
    assert isinstance(form_batch(queue[2:], clock.now_ns(), long_delay), WaitUntil)


def test_empty_requests_count_as_one_row() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 0, 0)
    assert form_batch(queue, clock.now_ns(), rule(max_batch=8, preferred=(2,), delay_us=10_000)) == Dispatch(2)


def test_delay_counts_from_the_head_not_the_newest_request() -> None:
    clock = FakeClock()
    queue = queue_at(clock, 1, gap_us=300)
    queue += queue_at(clock, 1)
    # The head has waited 300 µs of a 250 µs delay: dispatch, even though the second just arrived.
    assert form_batch(queue, clock.now_ns(), rule(delay_us=250)) == Dispatch(2)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "max_batch_size: 8 dynamic_batching { preferred_batch_size: [4, 2, 4] max_queue_delay_microseconds: 50 }",
            BatchingRule(8, (2, 4), 50_000),
        ),
        ("max_batch_size: 8", BatchingRule(0)),
        ("max_batch_size: 0 dynamic_batching {}", BatchingRule(0)),
    ],
    ids=["dynamic", "no-dynamic-batching", "no-batching"],
)
def test_rule_from_config(text: str, expected: BatchingRule) -> None:
    from google.protobuf import text_format

    assert BatchingRule.from_config(text_format.Parse(text, mc.ModelConfig())) == expected
