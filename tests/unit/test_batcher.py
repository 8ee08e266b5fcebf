"""The DynamicBatcher on real ONNX Runtime instances: merging, isolation of failures, cancellation."""

from __future__ import annotations

import asyncio
from time import monotonic_ns

import numpy as np
import onnxruntime as ort
import pytest

from scripts import onnx_models
from server.errors import ErrorCode, ServerError
from server.observability.statistics import ModelStats, RequestTiming
from server.runtime.instance import ModelInstance
from server.scheduling.batch_policy import BatchingRule
from server.scheduling.batcher import DynamicBatcher
from server.scheduling.execution import BatchLayout
from server.scheduling.job import InferenceJob
from server.scheduling.queue_policy import PriorityPolicy, QueuePolicy


def add_instances(count: int, constant: float = 1.0) -> list[ModelInstance]:
    model = onnx_models.add_constant("FP32", ["batch", 4], constant).SerializeToString()
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return [
        ModelInstance(f"add_{i}", ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]), "cpu") for i in range(count)
    ]


def job_for(rows: np.ndarray, **kwargs: int) -> InferenceJob:
    now = monotonic_ns()
    return InferenceJob(
        feeds={"INPUT0": rows},
        rows=rows.shape[0],
        output_names=("OUTPUT0",),
        future=asyncio.get_running_loop().create_future(),
        timing=RequestTiming(received_ns=now, enqueued_ns=now),
        shape_key=(("INPUT0", rows.shape[1:]),),
        **kwargs,
    )


def batcher(instances: list[ModelInstance], stats: ModelStats, rule: BatchingRule, **kwargs: object) -> DynamicBatcher:
    return DynamicBatcher(rule, PriorityPolicy((QueuePolicy(),)), instances, BatchLayout(("OUTPUT0",)), stats, **kwargs)  # type: ignore[arg-type]


def run(coroutine: object) -> None:
    asyncio.run(coroutine)  # type: ignore[arg-type]


def test_queued_requests_merge_and_each_gets_its_own_rows() -> None:
    async def scenario() -> None:
        stats = ModelStats()
        scheduler = batcher(add_instances(1), stats, BatchingRule(16, (16,), max_queue_delay_ns=20_000_000))
        jobs = [job_for(np.full((1 + i % 2, 4), i, np.float32)) for i in range(12)]
        for job in jobs:
            scheduler.submit(job)
        results = await asyncio.gather(*(job.future for job in jobs))
        for i, (job, outputs) in enumerate(zip(jobs, results)):
            np.testing.assert_array_equal(outputs["OUTPUT0"], np.full((1 + i % 2, 4), i + 1, np.float32))
            assert outputs["OUTPUT0"].shape[0] == job.rows
        assert stats.execution_count < len(jobs)
        assert sum(size * s.compute_infer.count for size, s in stats.batch_stats.items()) == sum(job.rows for job in jobs)
        await scheduler.close(1)

    run(scenario())


def test_a_failing_batch_fails_only_its_own_requests() -> None:
    async def scenario() -> None:
        stats = ModelStats()
        scheduler = batcher(add_instances(1), stats, BatchingRule(0))
        good_before = job_for(np.ones((1, 4), np.float32))
        # Wrong dtype for the graph: ONNX Runtime itself raises inside the batch.
        bad = job_for(np.ones((1, 4), np.float64))
        good_after = job_for(np.ones((1, 4), np.float32))
        for job in (good_before, bad, good_after):
            scheduler.submit(job)
        outcomes = await asyncio.gather(good_before.future, bad.future, good_after.future, return_exceptions=True)
        assert isinstance(outcomes[1], ServerError) and outcomes[1].code is ErrorCode.INTERNAL
        assert "INVALID_ARGUMENT" in outcomes[1].message or "type" in outcomes[1].message
        np.testing.assert_array_equal(outcomes[0]["OUTPUT0"], np.full((1, 4), 2, np.float32))
        np.testing.assert_array_equal(outcomes[2]["OUTPUT0"], np.full((1, 4), 2, np.float32))
        await scheduler.close(1)

    run(scenario())


def test_cancelled_requests_are_never_executed() -> None:
    async def scenario() -> None:
        stats = ModelStats()
        # A long delay keeps everything queued until the test has cancelled half of it.
        scheduler = batcher(add_instances(1), stats, BatchingRule(64, (64,), max_queue_delay_ns=200_000_000))
        jobs = [job_for(np.ones((1, 4), np.float32)) for _ in range(8)]
        for job in jobs:
            scheduler.submit(job)
        for job in jobs[::2]:
            job.future.cancel()
        await asyncio.gather(*(job.future for job in jobs[1::2]))
        assert stats.execution_count == 1
        assert stats.batch_stats.keys() == {4}
        await scheduler.close(1)

    run(scenario())


def test_several_instances_run_batches_at_once() -> None:
    async def scenario() -> None:
        stats = ModelStats()
        instances = add_instances(3)
        scheduler = batcher(instances, stats, BatchingRule(0))
        jobs = [job_for(np.full((1, 4), i, np.float32)) for i in range(30)]
        for job in jobs:
            scheduler.submit(job)
        results = await asyncio.gather(*(job.future for job in jobs))
        assert [float(r["OUTPUT0"][0, 0]) for r in results] == [i + 1.0 for i in range(30)]
        assert stats.execution_count == 30
        await scheduler.close(1)

    run(scenario())


def test_close_drains_queued_work_then_refuses() -> None:
    async def scenario() -> None:
        scheduler = batcher(add_instances(1), ModelStats(), BatchingRule(8, (8,), max_queue_delay_ns=5_000_000_000))
        jobs = [job_for(np.ones((1, 4), np.float32)) for _ in range(3)]
        for job in jobs:
            scheduler.submit(job)
        await scheduler.close(5)  # closing ignores the 5 s delay: queued work runs now
        assert all(job.future.done() and not job.future.exception() for job in jobs)
        with pytest.raises(ServerError) as caught:
            scheduler.submit(job_for(np.ones((1, 4), np.float32)))
        assert caught.value.code is ErrorCode.UNAVAILABLE

    run(scenario())


def test_preserve_ordering_answers_in_arrival_order() -> None:
    async def scenario() -> None:
        scheduler = batcher(add_instances(3), ModelStats(), BatchingRule(0), preserve_ordering=True)
        jobs = [job_for(np.full((1 + (i % 3) * 200, 4), i, np.float32)) for i in range(12)]
        order: list[int] = []
        for i, job in enumerate(jobs):
            job.future.add_done_callback(lambda _, i=i: order.append(i))
            scheduler.submit(job)
        await asyncio.gather(*(job.future for job in jobs))
        assert order == list(range(12))
        await scheduler.close(1)

    run(scenario())
