"""The dynamic batcher: one per model version, on the event loop, feeding every instance.

Requests are admitted to a RequestQueue (bounded, prioritised, with timeouts). Whenever the
queue or the set of free instances changes, ``_schedule`` asks ``form_batch`` (a pure rule)
what to run now, hands batches to free instances, and arms one timer for the next instant a
decision could change (a batching delay or a queue timeout). There is no batcher task: work is
driven by submissions, batch completions (posted back by instance threads) and that timer, so
an idle model costs nothing and a busy one pays no task switches per request.

Without merging (max_batch_size 0, or no dynamic_batching) each request is its own execution,
but a free instance takes its share of the backlog in one hand-over and runs it request by
request: the thread hand-over, not ONNX Runtime, dominates tiny models.

Observable state (for /metrics): ``pending_count`` jobs wait in the queue and ``executing_count``
jobs are on an instance, counted from the hand-over until each is answered or skipped.

Every job gets exactly one outcome: success, its batch's failure (INTERNAL, other batches
continue), a queue rejection/timeout, or nothing at all if its caller cancelled before it ran.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import logging
import math
from collections import deque
from dataclasses import replace
from time import monotonic_ns, thread_time_ns

from server.errors import ErrorCode, FailureReason, ServerError
from server.observability.statistics import ModelStats
from server.runtime.instance import ModelInstance
from server.scheduling.base import Scheduler
from server.scheduling.batch_policy import BatchingRule, Dispatch, WaitUntil, form_batch
from server.scheduling.clock import Clock, MonotonicClock
from server.scheduling.delay_controller import DelayController, wait_joins
from server.scheduling.execution import BatchLayout, execute_batches
from server.scheduling.inline import InlineGuard, execution_bytes
from server.scheduling.job import InferenceJob
from server.scheduling.ordering import OrderedRelease
from server.scheduling.queue_policy import PriorityPolicy
from server.scheduling.request_queue import RequestQueue
from server.scheduling.wakeup import EarliestTimer

log = logging.getLogger(__name__)

# Without merging, the most requests one hand-over gives an instance: enough to amortise the
# thread wake-up, few enough that the queue (timeouts, pending count) still sees the rest.
MAX_RUN_LIST = 8


class DynamicBatcher(Scheduler):
    def __init__(
        self,
        rule: BatchingRule,
        priority: PriorityPolicy,
        instances: list[ModelInstance],
        layout: BatchLayout,
        stats: ModelStats,
        preserve_ordering: bool = False,
        clock: Clock | None = None,
        delay: DelayController | None = None,
        inline: InlineGuard | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._rule = rule
        self._queue = RequestQueue(priority)
        self._idle: deque[ModelInstance] = deque(instances)
        self._instance_count = len(instances)
        self._layout = layout
        self._stats = stats
        self._clock = clock or MonotonicClock()
        self._release = OrderedRelease() if preserve_ordering else None
        self._sequence = itertools.count()
        self._timer = EarliestTimer(self._loop, self._clock, self._schedule)
        self._drained = asyncio.Event()
        self._closing = False
        self._executing = 0
        # Batching to a latency target: the controller owns the queue delay (None: the config's).
        self._delay = delay
        # The head an idle instance is held back for: (job, when the wait began, its deadline).
        self._held: tuple[InferenceJob, int, int] | None = None
        if delay is not None:
            self._rule = replace(rule, max_queue_delay_ns=delay.delay_ns)
        stats.batch_delay_ns = self._rule.max_queue_delay_ns if rule.merges else None
        # Whether executions are tiny enough to run on the loop (scheduling/inline.py).
        self._inline = inline or InlineGuard()

    @property
    def pending_count(self) -> int:
        return len(self._queue)

    @property
    def executing_count(self) -> int:
        return self._executing

    def check_capacity(self, priority: int) -> None:
        if self._closing:
            raise ServerError.unavailable("model version is being unloaded")
        self._queue.check_capacity(priority)

    def submit(self, job: InferenceJob) -> None:
        if self._closing:
            raise ServerError.unavailable("model version is being unloaded")
        if self._idle and not self._queue and not self._release and not self._rule.max_queue_delay_ns:
            # Nothing waits and nothing could join it: run at once, skipping the queue's bookkeeping.
            job.sequence = next(self._sequence)
            self._dispatch(self._idle.popleft(), [[job]], job.enqueued_ns)
            return
        self._queue.admit(job, self._clock.now_ns())
        job.sequence = next(self._sequence)
        if self._release is not None:
            self._release.track(job)
        if self._idle:
            self._schedule()
        elif job.timeout_at_ns or job.deadline_ns:
            self._arm_timer(self._queue.next_expiry_ns())

    async def close(self, drain_timeout_secs: float | None) -> None:
        self._closing = True
        self._schedule()
        if not self._drained.is_set():
            # asyncio.wait, not wait_for: a zero timeout must still see an already drained queue.
            drained = asyncio.ensure_future(self._drained.wait())
            done, _ = await asyncio.wait({drained}, timeout=drain_timeout_secs)
            if not done:
                drained.cancel()
                log.warning("drain timed out with %d queued requests", len(self._queue))
        for job in self._queue.drain_all():
            job.fail(ServerError.unavailable("model version was unloaded"))
        self._timer.cancel()

    # ---- decisions ---------------------------------------------------------------------------

    def _schedule(self) -> None:
        """Dispatch what the rule allows now and arm the timer for the next decision."""
        try:
            self._arm_timer(self._step())
        except Exception:  # a bug in one decision must not stall the model: try again shortly
            log.exception("batch scheduling failed")
            self._arm_timer(self._clock.now_ns() + 1_000_000)
        if self._closing and not self._queue and len(self._idle) == self._instance_count:
            self._drained.set()

    def _step(self) -> int | None:
        """Dispatch every batch allowed now; return the monotonic ns of the next decision, if any."""
        if not self._queue:
            return None
        now = self._clock.now_ns()
        rule = BatchingRule(self._rule.max_batch_size) if self._closing else self._rule
        jobs = self._queue.ordered(now, InferenceJob.fail)
        wait_until = None
        while self._idle and jobs:
            if not rule.merges:
                share = min(MAX_RUN_LIST, math.ceil(len(jobs) / len(self._idle)))
                taken, jobs = jobs[:share], jobs[share:]
                self._queue.remove(taken)
                self._dispatch(self._idle.popleft(), [[job] for job in taken], now)
                continue
            decision = form_batch(jobs, now, rule)
            if isinstance(decision, WaitUntil):
                wait_until = decision.deadline_ns
                if self._delay is not None and (self._held is None or self._held[0] is not jobs[0]):
                    self._held = (jobs[0], now, wait_until)
                break
            if not isinstance(decision, Dispatch):
                break
            batch, jobs = jobs[: decision.count], jobs[decision.count :]
            self._queue.remove(batch)
            if self._held is not None and self._held[0] is batch[0]:
                self._end_wait(batch, now)
            self._dispatch(self._idle.popleft(), [batch], now)
        if self._release is not None:
            self._release.flush()
        wakeups = [t for t in (wait_until, self._queue.next_expiry_ns()) if t]
        return min(wakeups) if wakeups else None

    def _end_wait(self, batch: list[InferenceJob], now: int) -> None:
        assert self._delay is not None and self._held is not None
        _, wait_start, deadline = self._held
        self._held = None
        self._delay.wait_ended(*wait_joins([job.enqueued_ns for job in batch[1:]], wait_start, deadline, now))

    def _observe_latencies(self, jobs: list[InferenceJob]) -> None:
        """Feed the delay controller one executed batch's queue + compute times."""
        assert self._delay is not None
        done = jobs[0].timing.output_done_ns
        if self._delay.batch_done([done - job.timing.enqueued_ns for job in jobs], self._clock.now_ns()):
            self._rule = replace(self._rule, max_queue_delay_ns=self._delay.delay_ns)
            self._stats.batch_delay_ns = self._delay.delay_ns

    def _arm_timer(self, at_ns: int | None) -> None:
        """Keep one timer at the earliest instant a decision could change (None = no timer)."""
        if at_ns is None:
            self._timer.cancel()
        else:
            self._timer.arm(at_ns)

    # ---- execution ---------------------------------------------------------------------------

    def _dispatch(self, instance: ModelInstance, batches: list[list[InferenceJob]], formed_ns: int) -> None:
        """Hand ``batches`` (formed at ``formed_ns``) to ``instance``'s thread."""
        loop, layout = self._loop, self._layout
        handed = sum(len(batch) for batch in batches)
        self._executing += handed
        input_bytes = execution_bytes(batches)
        if self._inline.allows(input_bytes):
            self._run_inline(instance, batches, handed, input_bytes, formed_ns)
            return
        answered = executions = 0  # written and read on the instance thread only

        def report(jobs: list[InferenceJob], error: Exception | None) -> None:
            nonlocal answered, executions
            answered += len(jobs)
            executions += 1
            # RuntimeError: the loop is gone (process exiting) and nobody waits any more.
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._batch_done, instance, jobs, error, formed_ns)

        def work() -> None:
            start = thread_time_ns()
            execute_batches(instance, batches, layout, report)
            per_execution_ns = (thread_time_ns() - start) // max(1, executions)
            with contextlib.suppress(RuntimeError):
                # Jobs abandoned while they waited in the hand-over were skipped, never reported.
                loop.call_soon_threadsafe(self._hand_over_done, instance, handed - answered, per_execution_ns, input_bytes, False)

        instance.post(work)

    def _run_inline(
        self, instance: ModelInstance, batches: list[list[InferenceJob]], handed: int, input_bytes: int, formed_ns: int
    ) -> None:
        """Execute on the loop (the guard found this model's executions tiny); the outcomes are
        delivered on the next loop turn, as the thread's would be, so no decision re-enters."""
        reports: list[tuple[list[InferenceJob], Exception | None]] = []
        start = monotonic_ns()
        execute_batches(instance, batches, self._layout, lambda jobs, error: reports.append((jobs, error)))
        per_execution_ns = (monotonic_ns() - start) // max(1, len(reports))
        for jobs, error in reports:
            self._loop.call_soon(self._batch_done, instance, jobs, error, formed_ns)
        skipped = handed - sum(len(jobs) for jobs, _ in reports)
        self._loop.call_soon(self._hand_over_done, instance, skipped, per_execution_ns, input_bytes, True)

    def _hand_over_done(self, instance: ModelInstance, skipped: int, per_execution_ns: int, input_bytes: int, inline: bool) -> None:
        self._inline.record(per_execution_ns, input_bytes, inline)
        self._instance_free(instance, skipped)

    def _batch_done(self, instance: ModelInstance, jobs: list[InferenceJob], error: Exception | None, formed_ns: int) -> None:
        """On the loop: answer the jobs of one executed batch."""
        self._executing -= len(jobs)
        rows = sum(job.rows for job in jobs)
        if error is None:
            self._stats.record_execution(rows, jobs[0].timing, instance.name)
            if self._delay is not None:
                self._observe_latencies(jobs)
            for job in jobs:
                if job.trace is not None:
                    job.trace.batched(formed_ns, rows, jobs)
                self._settle(job, None)
        else:
            log.warning("batch of %d failed on %s: %s", len(jobs), instance.name, error)
            for job in jobs:
                if job.trace is not None:
                    job.trace.batched(formed_ns, rows, jobs)
                self._settle(job, ServerError(ErrorCode.INTERNAL, str(error), FailureReason.BACKEND))

    def _instance_free(self, instance: ModelInstance, skipped: int) -> None:
        """On the loop: the instance finished its hand-over; decide what it runs next."""
        self._executing -= skipped
        self._idle.append(instance)
        self._schedule()

    def _settle(self, job: InferenceJob, error: ServerError | None) -> None:
        if self._release is None:
            _resolve(job, error)
        else:
            self._release.complete(job, lambda: _resolve(job, error))


def _resolve(job: InferenceJob, error: ServerError | None) -> None:
    if error is None:
        job.succeed()
    else:
        job.fail(error)
