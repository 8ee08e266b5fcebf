"""The DynamicBatcher consulting its delay controller, on real ONNX Runtime instances.

What each scenario asserts follows from the order of events on the loop, not from how fast the
machine is: jobs submitted in one loop iteration are all queued before an instance can report
back, and the targets are far above anything the machine could take.
"""

from __future__ import annotations

import asyncio
from time import monotonic_ns

import numpy as np

from server.observability.statistics import ModelStats
from server.scheduling.batch_policy import BatchingRule
from server.scheduling.delay_controller import DelayController, DelayTarget
from server.scheduling.job import InferenceJob
from tests.unit.test_batcher import add_instances, batcher, job_for, run

MS = 1_000_000
RULE = BatchingRule(16)


def controller(window_requests: int, delay_ns: int = 0, ceiling_ns: int = 500 * MS) -> DelayController:
    target = DelayTarget(target_ns=60_000 * MS, ceiling_ns=ceiling_ns, step_ns=1 * MS, window_requests=window_requests, window_ns=10**12)
    return DelayController(target, started_ns=monotonic_ns(), delay_ns=delay_ns)


def one_row() -> InferenceJob:
    return job_for(np.ones((1, 4), np.float32))


def test_requests_queued_behind_a_busy_instance_raise_the_delay() -> None:
    async def scenario() -> None:
        stats = ModelStats()
        scheduler = batcher(add_instances(1), stats, RULE, delay=controller(window_requests=12))
        assert stats.batch_delay_ns == 0
        jobs = [one_row() for _ in range(12)]
        for job in jobs:  # the first runs at once; the other 11 queue behind it and run as one batch
            scheduler.submit(job)
        await asyncio.gather(*(job.future for job in jobs))
        assert stats.execution_count == 2
        assert stats.batch_delay_ns == 1 * MS
        await scheduler.close(1)

    run(scenario())


def test_a_lone_caller_keeps_no_delay_and_skips_the_queue() -> None:
    async def scenario() -> None:
        stats = ModelStats()
        delay = controller(window_requests=4)
        scheduler = batcher(add_instances(1), stats, RULE, delay=delay)
        for _ in range(24):
            job = one_row()
            scheduler.submit(job)
            await job.future
        assert stats.execution_count == 24
        assert stats.batch_delay_ns == 0 and delay.delay_ns == 0
        await scheduler.close(1)

    run(scenario())


def test_a_wait_after_a_pair_that_arrived_together_halves_the_delay() -> None:
    async def scenario() -> None:
        stats = ModelStats()
        # The pair is queued within one loop iteration, long before the wait's midpoint (100 ms).
        scheduler = batcher(add_instances(1), stats, RULE, delay=controller(window_requests=2, delay_ns=200 * MS))
        assert stats.batch_delay_ns == 200 * MS
        pair = [one_row(), one_row()]
        for job in pair:
            scheduler.submit(job)
        await asyncio.gather(*(job.future for job in pair))
        assert stats.execution_count == 1
        assert stats.batch_delay_ns == 100 * MS
        await scheduler.close(1)

    run(scenario())
