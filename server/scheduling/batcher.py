"""The dynamic batcher: one per model version, on the event loop, feeding every instance.

Requests are admitted to a RequestQueue (bounded, prioritised, with timeouts). Whenever an
instance is free, ``form_batch`` decides from the queue and the clock whether to dispatch a
batch now or wait; a dispatched batch runs on that instance's thread while the loop keeps
admitting. Models without dynamic batching use the same loop with merging off.

Every job gets exactly one outcome: success, its batch's failure (INTERNAL, the other batches
continue), a queue rejection/timeout, or nothing at all if the caller cancelled before it ran.
"""

from __future__ import annotations

import asyncio
import itertools
import logging
from collections import deque

from server.errors import ServerError
from server.observability.statistics import FailureReason, ModelStats
from server.runtime.instance import ModelInstance
from server.scheduling.base import Scheduler
from server.scheduling.batch_policy import BatchingRule, Dispatch, WaitUntil, form_batch
from server.scheduling.clock import Clock, MonotonicClock
from server.scheduling.execution import execute_batch
from server.scheduling.job import InferenceJob
from server.scheduling.ordering import OrderedRelease
from server.scheduling.queue_policy import PriorityPolicy
from server.scheduling.request_queue import RequestQueue

log = logging.getLogger(__name__)


class DynamicBatcher(Scheduler):
    def __init__(
        self,
        rule: BatchingRule,
        priority: PriorityPolicy,
        instances: list[ModelInstance],
        model_outputs: tuple[str, ...],
        stats: ModelStats,
        preserve_ordering: bool = False,
        clock: Clock | None = None,
    ) -> None:
        self._rule = rule
        self._queue = RequestQueue(priority)
        self._idle: deque[ModelInstance] = deque(instances)
        self._instance_count = len(instances)
        self._model_outputs = model_outputs
        self._stats = stats
        self._clock = clock or MonotonicClock()
        self._release = OrderedRelease() if preserve_ordering else None
        self._sequence = itertools.count()
        self._wake = asyncio.Event()
        self._drained = asyncio.Event()
        self._closing = False
        self._running: set[asyncio.Task[None]] = set()
        self._loop_task = asyncio.create_task(self._run(), name="batcher")

    @property
    def pending_count(self) -> int:
        return len(self._queue)

    def submit(self, job: InferenceJob) -> None:
        if self._closing:
            raise ServerError.unavailable("model version is being unloaded")
        self._queue.admit(job, self._clock.now_ns())
        job.sequence = next(self._sequence)
        if self._release is not None:
            self._release.track(job)
        self._wake.set()

    async def close(self, drain_timeout_secs: float | None) -> None:
        self._closing = True
        self._wake.set()
        try:
            await asyncio.wait_for(self._drained.wait(), drain_timeout_secs)
        except TimeoutError:
            log.warning("drain timed out with %d queued requests", len(self._queue))
        for job in self._queue.drain_all():
            job.fail(ServerError.unavailable("model version was unloaded"), FailureReason.OTHER)
        if self._running:
            await asyncio.gather(*self._running, return_exceptions=True)
        self._loop_task.cancel()
        await asyncio.gather(self._loop_task, return_exceptions=True)

    # ---- the loop ------------------------------------------------------------------------

    async def _run(self) -> None:
        loop = asyncio.get_running_loop()
        while True:
            try:
                sleep_ns = self._step()
            except Exception:  # the loop must outlive any bug in one step
                log.exception("batcher step failed")
                sleep_ns = 1_000_000
            if self._closing and not self._queue and len(self._idle) == self._instance_count:
                self._drained.set()
            timer = loop.call_later(sleep_ns / 1e9, self._wake.set) if sleep_ns is not None else None
            await self._wake.wait()
            self._wake.clear()
            if timer is not None:
                timer.cancel()

    def _step(self) -> int | None:
        """Dispatch every batch the rule allows now; return ns until the next decision (None = idle)."""
        now = self._clock.now_ns()
        rule = BatchingRule(self._rule.max_batch_size) if self._closing else self._rule
        jobs = self._queue.ordered(now, self._fail)
        wait_until = None
        while self._idle and jobs:
            decision = form_batch(jobs, now, rule)
            if isinstance(decision, WaitUntil):
                wait_until = decision.deadline_ns
                break
            if not isinstance(decision, Dispatch):
                break
            batch = [jobs[position] for position in decision.positions]
            self._queue.remove(batch)
            self._dispatch(self._idle.popleft(), batch)
            jobs = [job for job in jobs if job not in batch] if len(batch) < len(jobs) else []
        if self._release is not None:
            self._release.flush()
        wakeups = [t for t in (wait_until, self._queue.next_expiry_ns()) if t]
        return max(0, min(wakeups) - now) if wakeups else None

    def _dispatch(self, instance: ModelInstance, batch: list[InferenceJob]) -> None:
        task = asyncio.create_task(self._execute(instance, batch))
        self._running.add(task)
        task.add_done_callback(self._running.discard)

    async def _execute(self, instance: ModelInstance, batch: list[InferenceJob]) -> None:
        try:
            await instance.call(execute_batch, batch, self._model_outputs)
        except Exception as exc:  # an ORT failure fails this batch only
            log.warning("batch of %d failed on %s: %s", len(batch), instance.name, exc)
            for job in batch:
                self._settle(job, ServerError.internal(str(exc)))
        else:
            self._stats.record_execution(sum(job.rows for job in batch), batch[0].timing)
            for job in batch:
                self._settle(job, None)
        finally:
            self._idle.append(instance)
            self._wake.set()

    def _settle(self, job: InferenceJob, error: ServerError | None) -> None:
        def settle() -> None:
            if error is None:
                job.succeed()
            else:
                job.fail(error, FailureReason.BACKEND)

        if self._release is None:
            settle()
        else:
            self._release.complete(job, settle)

    def _fail(self, job: InferenceJob, error: ServerError, reason: FailureReason) -> None:
        job.fail(error, reason)
