"""The CachingScheduler in front of a real DynamicBatcher on real ONNX Runtime instances: hits
skip the batcher, identical misses run once, failures and cancellations are handled per kind."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from time import monotonic_ns

import numpy as np
import onnxruntime as ort
import pytest

from scripts import onnx_models
from server.errors import ErrorCode, FailureReason, ServerError
from server.observability.statistics import ModelStats, RequestTiming
from server.proto import model_config_pb2 as mc
from server.runtime.instance import ModelInstance
from server.scheduling.batch_policy import BatchingRule
from server.scheduling.batcher import DynamicBatcher
from server.scheduling.caching_scheduler import CachingScheduler
from server.scheduling.execution import BatchLayout
from server.scheduling.factory import create_scheduler
from server.scheduling.job import InferenceJob
from server.scheduling.queue_policy import PriorityPolicy, QueuePolicy
from server.scheduling.response_cache import CacheSettings, ResponseCache

# Long enough that submissions made right after one another all find the first still queued.
HOLD_NS = 200_000_000


def instance(model: bytes, name: str) -> ModelInstance:
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ModelInstance(name, ort.InferenceSession(model, options, providers=["CPUExecutionProvider"]), "cpu")


class Harness:
    """A CachingScheduler on a one-instance batcher that adds 1 (or gathers rows: ``gather``)."""

    def __init__(self, capacity: int = 1 << 20, delay_ns: int = 0, gather: bool = False) -> None:
        model = onnx_models.gather_rows() if gather else onnx_models.add_constant("FP32", ["batch", 4], 1.0)
        self.input, self.output = ("index", "row") if gather else ("INPUT0", "OUTPUT0")
        self.instance = instance(model.SerializeToString(), "m_0")
        self.stats = ModelStats()
        self.cache = ResponseCache(CacheSettings(capacity))
        rule = BatchingRule(8, (8,), max_queue_delay_ns=delay_ns)
        batcher = DynamicBatcher(rule, PriorityPolicy((QueuePolicy(),)), [self.instance], BatchLayout((self.output,)), self.stats)
        self.scheduler = CachingScheduler(batcher, self.cache, self.cache.partition("m", 1), self.stats)
        self.decoded = 0

    def job(self, values: np.ndarray, key: bytes) -> InferenceJob:
        def decode() -> dict[str, np.ndarray]:
            self.decoded += 1
            return {self.input: values}

        now = monotonic_ns()
        return InferenceJob(
            feeds={},
            rows=values.shape[0],
            output_names=(self.output,),
            future=asyncio.get_running_loop().create_future(),
            timing=RequestTiming(received_ns=now, enqueued_ns=now),
            shape_key=((self.input, values.shape[1:]),),
            cache_key=key,
            decode_feeds=decode,
        )

    def close(self) -> None:
        self.instance.close()


def run(scenario: Callable[[Harness], Awaitable[None]], **options: object) -> Harness:
    """Run ``scenario`` on a fresh harness (built on the loop: the batcher binds to it)."""

    async def main() -> Harness:
        harness = Harness(**options)  # type: ignore[arg-type]
        try:
            await scenario(harness)
        finally:
            harness.close()
        return harness

    return asyncio.run(main())


ROWS = np.arange(8, dtype=np.float32).reshape(2, 4)


def test_a_repeated_request_is_answered_from_the_cache_without_decoding_or_executing() -> None:
    async def scenario(h: Harness) -> None:
        first = h.job(ROWS, b"k1")
        h.scheduler.submit(first)
        await first.future
        second = h.job(ROWS, b"k1")
        h.scheduler.submit(second)
        assert second.future.done() and second.from_cache
        np.testing.assert_array_equal(second.future.result()[h.output], ROWS + 1)
        assert not second.future.result()[h.output].flags.writeable

    h = run(scenario)
    assert (h.decoded, h.stats.execution_count, h.stats.cache_miss.count) == (1, 1, 1)
    assert h.cache.entries == 1


def test_identical_misses_at_the_same_time_run_once_and_all_get_the_answer() -> None:
    async def scenario(h: Harness) -> None:
        jobs = [h.job(ROWS, b"same") for _ in range(5)]
        for job in jobs:
            h.scheduler.submit(job)
        assert h.scheduler.pending_count == 5  # the leader queued (the delay holds it), four waiting for it
        results = await asyncio.gather(*(job.future for job in jobs))
        for result in results:
            np.testing.assert_array_equal(result[h.output], ROWS + 1)
        assert [job.from_cache for job in jobs] == [False, True, True, True, True]
        assert h.scheduler.pending_count == 0

    h = run(scenario, delay_ns=HOLD_NS)
    assert (h.decoded, h.stats.execution_count, h.stats.cache_miss.count) == (1, 1, 1)


def test_different_keys_are_computed_apart() -> None:
    async def scenario(h: Harness) -> None:
        jobs = [h.job(ROWS * i, f"k{i}".encode()) for i in range(3)]
        for job in jobs:
            h.scheduler.submit(job)
        results = await asyncio.gather(*(job.future for job in jobs))
        for i, result in enumerate(results):
            np.testing.assert_array_equal(result[h.output], ROWS * i + 1)

    h = run(scenario)
    assert (h.decoded, h.stats.cache_miss.count, h.cache.entries) == (3, 3, 3)


def test_a_model_failure_fails_the_waiting_identical_requests_too_and_stores_nothing() -> None:
    async def scenario(h: Harness) -> None:
        bad = np.array([[99]], np.int64)  # outside gather_rows' table: ONNX Runtime fails
        jobs = [h.job(bad, b"bad") for _ in range(3)]
        for job in jobs:
            h.scheduler.submit(job)
        outcomes = await asyncio.gather(*(job.future for job in jobs), return_exceptions=True)
        assert all(isinstance(o, ServerError) and o.reason is FailureReason.BACKEND for o in outcomes), outcomes

    h = run(scenario, delay_ns=HOLD_NS, gather=True)
    assert (h.decoded, h.cache.entries) == (1, 0)


def test_a_cancelled_leader_hands_the_computation_to_a_waiting_request() -> None:
    async def scenario(h: Harness) -> None:
        leader, follower = h.job(ROWS, b"k"), h.job(ROWS, b"k")
        h.scheduler.submit(leader)
        h.scheduler.submit(follower)
        leader.future.cancel()  # its caller went away while it was queued
        result = await follower.future
        np.testing.assert_array_equal(result[h.output], ROWS + 1)
        assert not follower.from_cache  # it ran itself
        again = h.job(ROWS, b"k")
        h.scheduler.submit(again)
        await again.future
        assert again.from_cache

    h = run(scenario, delay_ns=HOLD_NS)
    assert (h.decoded, h.stats.execution_count) == (2, 1)


def test_an_answer_too_large_for_the_budget_is_given_but_not_stored() -> None:
    async def scenario(h: Harness) -> None:
        jobs = [h.job(ROWS, b"k") for _ in range(2)]
        for job in jobs:
            h.scheduler.submit(job)
        for job in jobs:
            np.testing.assert_array_equal((await job.future)[h.output], ROWS + 1)
        third = h.job(ROWS, b"k")
        h.scheduler.submit(third)
        await third.future
        assert not third.from_cache

    h = run(scenario, capacity=100, delay_ns=HOLD_NS)
    assert (h.cache.entries, h.cache.used_bytes, h.stats.execution_count) == (0, 0, 2)


def test_a_full_queue_refuses_a_miss_but_not_a_hit() -> None:
    async def scenario(h: Harness) -> None:
        first = h.job(ROWS, b"hit")
        h.scheduler.submit(first)
        await first.future
        h.scheduler._inner.check_capacity = _refuse  # type: ignore[attr-defined,method-assign]
        hit = h.job(ROWS, b"hit")
        h.scheduler.submit(hit)
        assert hit.from_cache
        with pytest.raises(ServerError) as refused:
            h.scheduler.submit(h.job(ROWS, b"miss"))
        assert refused.value.code is ErrorCode.UNAVAILABLE

    h = run(scenario)
    assert h.decoded == 1  # the refused miss was never decoded


def _refuse(priority: int) -> None:
    raise ServerError.unavailable("Exceeds maximum queue size")


def test_closing_drains_then_drops_the_versions_entries_and_refuses_new_jobs() -> None:
    async def scenario(h: Harness) -> None:
        other = h.cache.partition("other", 1)
        h.cache.put(other, b"theirs", {"y": np.zeros(2, np.float32)})
        job = h.job(ROWS, b"k")
        h.scheduler.submit(job)
        await job.future
        assert h.cache.entries == 2
        await h.scheduler.close(5.0)
        assert h.cache.entries == 1 and h.cache.get(b"theirs") is not None
        with pytest.raises(ServerError) as refused:
            h.scheduler.submit(h.job(ROWS, b"k"))
        assert refused.value.code is ErrorCode.UNAVAILABLE

    run(scenario)


def test_the_factory_puts_the_cache_in_front_only_when_both_server_and_config_enable_it() -> None:
    async def scenario() -> None:
        instances = [instance(onnx_models.add_constant("FP32", ["batch", 4], 1.0).SerializeToString(), "m_0")]
        enabled, disabled = mc.ModelConfig(name="m", max_batch_size=8), mc.ModelConfig(name="m", max_batch_size=8)
        enabled.response_cache.enable = True
        cache = ResponseCache(CacheSettings(1024))
        try:
            assert isinstance(create_scheduler(enabled, instances, ModelStats(), cache=cache, version=1), CachingScheduler)
            assert isinstance(create_scheduler(disabled, instances, ModelStats(), cache=cache, version=1), DynamicBatcher)
            assert isinstance(create_scheduler(enabled, instances, ModelStats(), cache=None, version=1), DynamicBatcher)
        finally:
            instances[0].close()

    asyncio.run(scenario())
