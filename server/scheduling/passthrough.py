"""A scheduler that runs each job on its own: FIFO queue, one worker per instance, no merging."""

from __future__ import annotations

import asyncio
import logging

from server.errors import ServerError
from server.observability.statistics import FailureReason, ModelStats
from server.runtime.instance import ModelInstance
from server.scheduling.base import Scheduler
from server.scheduling.execution import execute_batch
from server.scheduling.job import InferenceJob

log = logging.getLogger(__name__)


class PassThroughScheduler(Scheduler):
    def __init__(self, instances: list[ModelInstance], model_outputs: tuple[str, ...], stats: ModelStats) -> None:
        self._queue: asyncio.Queue[InferenceJob] = asyncio.Queue()
        self._model_outputs = model_outputs
        self._stats = stats
        self._closing = False
        self._workers = [asyncio.create_task(self._serve(instance)) for instance in instances]

    @property
    def pending_count(self) -> int:
        return self._queue.qsize()

    def submit(self, job: InferenceJob) -> None:
        if self._closing:
            raise ServerError.unavailable("model is being unloaded")
        self._queue.put_nowait(job)

    async def close(self, drain_timeout_secs: float | None) -> None:
        self._closing = True
        try:
            await asyncio.wait_for(self._queue.join(), drain_timeout_secs)
        except TimeoutError:
            log.warning("drain timed out with %d queued requests", self._queue.qsize())
        for worker in self._workers:
            worker.cancel()
        await asyncio.gather(*self._workers, return_exceptions=True)
        while not self._queue.empty():
            self._queue.get_nowait().fail(ServerError.unavailable("model was unloaded"), FailureReason.OTHER)

    async def _serve(self, instance: ModelInstance) -> None:
        while True:
            job = await self._queue.get()
            try:
                if not job.abandoned():
                    await self._run(instance, job)
            finally:
                self._queue.task_done()

    async def _run(self, instance: ModelInstance, job: InferenceJob) -> None:
        try:
            await instance.call(execute_batch, [job], self._model_outputs)
        except Exception as exc:  # an ORT failure fails this job only; the worker lives on
            job.fail(ServerError.internal(str(exc)), FailureReason.BACKEND)
            return
        self._stats.record_execution(job.batch_size, job.timing)
        job.succeed()
