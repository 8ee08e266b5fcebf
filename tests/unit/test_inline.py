"""The inline-execution guard (pure, fed timings) and the batcher that follows it on real instances."""

from __future__ import annotations

import asyncio
import threading

import numpy as np

from server.observability.statistics import ModelStats
from server.runtime.instance import ModelInstance
from server.scheduling.batch_policy import BatchingRule
from server.scheduling.inline import LIMIT_NS, SAMPLES, WINDOW, InlineGuard
from tests.unit.test_batcher import add_instances, batcher, job_for, run

FAST, SLOW = LIMIT_NS // 2, LIMIT_NS * 2


def qualified(guard: InlineGuard, input_bytes: int = 64) -> InlineGuard:
    for _ in range(guard.window):
        guard.record(FAST, input_bytes, inline=False)
    return guard


def test_a_batcher_starts_on_its_threads_and_qualifies_after_a_window_of_fast_executions() -> None:
    guard = InlineGuard()
    for _ in range(WINDOW - 1):
        guard.record(FAST, 64, inline=False)
    assert not guard.allows(64)
    guard.record(FAST, 64, inline=False)
    assert guard.allows(64)


def test_it_does_not_qualify_while_most_executions_are_slow() -> None:
    guard = InlineGuard()
    for index in range(4 * WINDOW):
        guard.record(SLOW if index % 3 else FAST, 64, inline=False)
    assert not guard.inline


def test_inline_it_never_takes_more_bytes_than_it_qualified_with() -> None:
    guard = qualified(InlineGuard(), input_bytes=64)
    assert guard.allows(64) and not guard.allows(65)


def test_the_second_slow_inline_execution_sends_it_back_and_doubles_the_window() -> None:
    guard = qualified(InlineGuard())
    guard.record(SLOW, 64, inline=True)
    assert guard.inline  # one outlier is not a p99
    guard.record(SLOW, 64, inline=True)
    assert not guard.allows(64)
    assert guard.window == 2 * WINDOW
    qualified(guard)
    assert guard.inline


def test_a_window_of_good_inline_executions_halves_the_window_again() -> None:
    guard = InlineGuard(window=4 * WINDOW)
    qualified(guard)
    for _ in range(guard.window):
        guard.record(FAST, 64, inline=True)
    assert guard.inline and guard.window == 2 * WINDOW


def test_old_slow_samples_age_out_of_the_p99() -> None:
    guard = qualified(InlineGuard())
    guard.record(SLOW, 64, inline=True)
    for _ in range(SAMPLES):
        guard.record(FAST, 64, inline=True)
    guard.record(SLOW, 64, inline=True)
    assert guard.inline


def test_reports_from_the_other_mode_are_ignored() -> None:
    guard = qualified(InlineGuard())
    for _ in range(SAMPLES):
        guard.record(SLOW, 64, inline=False)  # hand-overs that were on a thread when it switched
    assert guard.inline


class RecordingInstance(ModelInstance):
    """A real instance that notes which thread ran each execution."""

    ran_on: list[int]

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
        self.ran_on.append(threading.get_ident())
        return super().run(feeds, output_names)


def recording_instance() -> RecordingInstance:
    instance = add_instances(1)[0]
    instance.__class__ = RecordingInstance
    instance.ran_on = []  # type: ignore[attr-defined]
    return instance  # type: ignore[return-value]


async def answer_one_by_one(scheduler: object, count: int) -> None:
    for index in range(count):
        job = job_for(np.full((1, 4), index, np.float32))
        scheduler.submit(job)  # type: ignore[attr-defined]
        outputs = await job.future
        np.testing.assert_array_equal(outputs["OUTPUT0"], np.full((1, 4), index + 1, np.float32))


def test_a_batcher_whose_guard_qualifies_runs_on_the_loop_with_the_same_answers() -> None:
    async def scenario() -> None:
        instance = recording_instance()
        stats = ModelStats()
        scheduler = batcher([instance], stats, BatchingRule(0), inline=InlineGuard(limit_ns=10**12, window=2))
        await answer_one_by_one(scheduler, 6)
        loop_thread = threading.get_ident()
        assert loop_thread not in instance.ran_on[:2]  # qualifying, on the instance's thread
        assert instance.ran_on[2:] == [loop_thread] * 4
        assert stats.execution_count == 6 and scheduler.executing_count == 0
        await scheduler.close(1)

    run(scenario())


def test_a_batcher_whose_executions_are_over_the_limit_stays_on_its_thread() -> None:
    async def scenario() -> None:
        instance = recording_instance()
        scheduler = batcher([instance], ModelStats(), BatchingRule(0), inline=InlineGuard(limit_ns=0, window=1))
        await answer_one_by_one(scheduler, 4)
        assert threading.get_ident() not in instance.ran_on
        await scheduler.close(1)

    run(scenario())


def test_an_inline_batch_that_fails_fails_only_its_own_requests() -> None:
    async def scenario() -> None:
        instance = recording_instance()
        scheduler = batcher([instance], ModelStats(), BatchingRule(0), inline=InlineGuard(limit_ns=10**12, window=1))
        await answer_one_by_one(scheduler, 1)
        bad = job_for(np.ones((1, 4), np.int32))  # as many bytes as the good ones; ONNX Runtime refuses the dtype
        scheduler.submit(bad)
        await asyncio.wait({bad.future})
        assert bad.future.exception() is not None
        assert instance.ran_on[-1] == threading.get_ident()
        await answer_one_by_one(scheduler, 2)
        await scheduler.close(1)

    run(scenario())
