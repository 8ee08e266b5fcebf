"""Queue admission, priorities, timeouts (REJECT/DELAY), deadlines and cancellation, on a fake clock."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator

import numpy as np
import pytest
from google.protobuf import text_format

from server.errors import ErrorCode, FailureReason, ServerError
from server.observability.statistics import RequestTiming
from server.proto import model_config_pb2 as mc
from server.scheduling.job import InferenceJob
from server.scheduling.ordering import OrderedRelease
from server.scheduling.queue_policy import PriorityPolicy, QueuePolicy, TimeoutAction
from server.scheduling.request_queue import RequestQueue
from tests.fake_clock import FakeClock


@pytest.fixture
def loop() -> Iterator[asyncio.AbstractEventLoop]:
    event_loop = asyncio.new_event_loop()
    yield event_loop
    event_loop.close()


class Failures:
    """Collects what the queue fails, in order."""

    def __init__(self) -> None:
        self.items: list[tuple[InferenceJob, ServerError, FailureReason]] = []

    def __call__(self, job: InferenceJob, error: ServerError) -> None:
        self.items.append((job, error, error.reason))
        job.fail(error)


def make_job(loop: asyncio.AbstractEventLoop, clock: FakeClock, name: str, **kwargs: int) -> InferenceJob:
    job = InferenceJob(
        feeds={"x": np.zeros((1, 1), np.float32)},
        rows=1,
        output_names=("y",),
        future=loop.create_future(),
        timing=RequestTiming(received_ns=clock.now_ns(), enqueued_ns=clock.now_ns()),
        **kwargs,
    )
    job.outputs = {"name": name}  # type: ignore[dict-item]  # a label to read the order back
    return job


def names(jobs: list[InferenceJob]) -> list[str]:
    return [job.outputs["name"] for job in jobs]  # type: ignore[misc]


def policy(text: str) -> PriorityPolicy:
    return PriorityPolicy.from_config(text_format.Parse(text, mc.ModelConfig()))


def test_fifo_without_priorities(loop: asyncio.AbstractEventLoop) -> None:
    clock, queue = FakeClock(), RequestQueue(policy("max_batch_size: 8 dynamic_batching {}"))
    for name in "abc":
        queue.admit(make_job(loop, clock, name), clock.now_ns())
    assert names(queue.ordered(clock.now_ns(), Failures())) == ["a", "b", "c"]
    assert len(queue) == 3


def test_higher_priority_level_goes_first_and_default_level_applies(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    queue = RequestQueue(policy("max_batch_size: 8 dynamic_batching { priority_levels: 3 default_priority_level: 2 }"))
    queue.admit(make_job(loop, clock, "default"), clock.now_ns())
    queue.admit(make_job(loop, clock, "low", priority=3), clock.now_ns())
    queue.admit(make_job(loop, clock, "high", priority=1), clock.now_ns())
    queue.admit(make_job(loop, clock, "out_of_range", priority=9), clock.now_ns())
    assert names(queue.ordered(clock.now_ns(), Failures())) == ["high", "default", "out_of_range", "low"]


def test_full_level_rejects_at_once(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    queue = RequestQueue(policy("max_batch_size: 8 dynamic_batching { default_queue_policy { max_queue_size: 2 } }"))
    queue.admit(make_job(loop, clock, "a"), clock.now_ns())
    queue.admit(make_job(loop, clock, "b"), clock.now_ns())
    with pytest.raises(ServerError) as caught:
        queue.admit(make_job(loop, clock, "c"), clock.now_ns())
    assert (caught.value.code, caught.value.message) == (ErrorCode.UNAVAILABLE, "Exceeds maximum queue size")
    assert caught.value.reason is FailureReason.REJECTED  # counted like a queue timeout, as Triton does
    assert len(queue) == 2


def test_per_level_policy_bounds_only_its_level(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    queue = RequestQueue(
        policy(
            "max_batch_size: 8 dynamic_batching { priority_levels: 2 default_priority_level: 2 "
            "priority_queue_policy { key: 1 value { max_queue_size: 1 } } }"
        )
    )
    queue.admit(make_job(loop, clock, "p1", priority=1), clock.now_ns())
    with pytest.raises(ServerError):
        queue.admit(make_job(loop, clock, "p1-again", priority=1), clock.now_ns())
    for index in range(5):
        queue.admit(make_job(loop, clock, f"p2-{index}", priority=2), clock.now_ns())
    assert len(queue) == 6


def test_reject_timeout_fails_with_tritons_message(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    queue = RequestQueue(policy("max_batch_size: 8 dynamic_batching { default_queue_policy { default_timeout_microseconds: 100 } }"))
    early, late = make_job(loop, clock, "early"), None
    queue.admit(early, clock.now_ns())
    clock.advance_us(50)
    late = make_job(loop, clock, "late")
    queue.admit(late, clock.now_ns())
    failures = Failures()
    clock.advance_us(49)
    assert names(queue.ordered(clock.now_ns(), failures)) == ["early", "late"]
    clock.advance_us(1)
    assert names(queue.ordered(clock.now_ns(), failures)) == ["late"]
    [(job, error, reason)] = failures.items
    assert job is early and reason is FailureReason.REJECTED
    assert (error.code, error.message) == (ErrorCode.UNAVAILABLE, "Request timeout expired")
    assert len(queue) == 1


def test_delay_timeout_moves_the_request_behind_its_level(loop: asyncio.AbstractEventLoop) -> None:
    clock = FakeClock()
    queue = RequestQueue(
        policy("max_batch_size: 8 dynamic_batching { default_queue_policy { default_timeout_microseconds: 100 timeout_action: DELAY } }")
    )
    queue.admit(make_job(loop, clock, "slow"), clock.now_ns())
    clock.advance_us(60)
    queue.admit(make_job(loop, clock, "fresh"), clock.now_ns())
    clock.advance_us(40)
    failures = Failures()
    assert names(queue.ordered(clock.now_ns(), failures)) == ["fresh", "slow"]
    assert failures.items == []
    clock.advance_us(1000)  # both are delayed now, in the order their timeouts ran out; none is rejected
    assert names(queue.ordered(clock.now_ns(), failures)) == ["slow", "fresh"]
    assert failures.items == []


def test_request_timeout_applies_only_with_override_and_only_lower() -> None:
    assert QueuePolicy(default_timeout_ns=100_000).timeout_ns(requested_us=5) == 100_000
    override = QueuePolicy(default_timeout_ns=100_000, allow_timeout_override=True)
    assert override.timeout_ns(requested_us=5) == 5_000
    assert override.timeout_ns(requested_us=500) == 100_000
    assert QueuePolicy(allow_timeout_override=True).timeout_ns(requested_us=7) == 7_000
    assert QueuePolicy().timeout_ns(requested_us=7) == 0
    assert QueuePolicy.from_config(mc.ModelQueuePolicy(timeout_action=mc.ModelQueuePolicy.DELAY)).timeout_action is TimeoutAction.DELAY


def test_cancelled_requests_leave_silently(loop: asyncio.AbstractEventLoop) -> None:
    clock, queue = FakeClock(), RequestQueue(policy("max_batch_size: 8 dynamic_batching {}"))
    jobs = [make_job(loop, clock, name) for name in "abc"]
    for job in jobs:
        queue.admit(job, clock.now_ns())
    jobs[1].future.cancel()
    failures = Failures()
    assert names(queue.ordered(clock.now_ns(), failures)) == ["a", "c"]
    assert failures.items == [] and len(queue) == 2


def test_caller_deadline_caps_queue_time(loop: asyncio.AbstractEventLoop) -> None:
    clock, queue = FakeClock(), RequestQueue(policy("max_batch_size: 8 dynamic_batching {}"))
    job = make_job(loop, clock, "a", deadline_ns=clock.now_ns() + 1_000)
    queue.admit(job, clock.now_ns())
    assert queue.next_expiry_ns() == job.deadline_ns
    clock.advance_us(1)
    failures = Failures()
    assert queue.ordered(clock.now_ns(), failures) == []
    [(_, error, reason)] = failures.items
    assert error.code is ErrorCode.DEADLINE_EXCEEDED and reason is FailureReason.CANCELED


def test_remove_and_drain(loop: asyncio.AbstractEventLoop) -> None:
    clock, queue = FakeClock(), RequestQueue(policy("max_batch_size: 8 dynamic_batching {}"))
    jobs = [make_job(loop, clock, name) for name in "abcd"]
    for job in jobs:
        queue.admit(job, clock.now_ns())
    queue.remove([jobs[0], jobs[2]])
    assert names(queue.ordered(clock.now_ns(), Failures())) == ["b", "d"]
    assert names(queue.drain_all()) == ["b", "d"] and len(queue) == 0


def test_preserve_ordering_holds_later_responses(loop: asyncio.AbstractEventLoop) -> None:
    clock, release = FakeClock(), OrderedRelease()
    jobs = [make_job(loop, clock, name) for name in "abc"]
    for job in jobs:
        release.track(job)
    settled: list[str] = []
    release.complete(jobs[2], lambda: settled.append("c"))
    release.complete(jobs[1], lambda: settled.append("b"))
    assert settled == []
    jobs[0].future.cancel()  # an earlier request that went away does not hold the others
    release.flush()
    assert settled == ["b", "c"]
