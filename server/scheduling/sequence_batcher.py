"""The sequence batcher: one per version of a model with ``sequence_batching``, on the event loop.

Each request names its sequence (correlation ID, START, END). A sequence holds one batch slot of
one instance from its START to its END (sequence_slots.py), so it always runs on that instance,
and ortserve keeps its implicit state there between requests: each batch stacks the states of
the slots it runs, feeds the control inputs (START, END, READY, CORRID), and stores the state
outputs back into the slots. Which slots run together is the strategy's pure rule
(sequence_policy.py). Each instance runs one batch at a time, so a slot's state is written back
before its next request is batched.

Like the dynamic batcher it has no task: decisions run on submit, on batch completion and on
one timer (batching delay, idle sequences, backlog timeouts). Every request gets exactly one
outcome; when a batch fails on its instance, the sequences in it end: their queued requests
fail too, and their next requests are refused as not started.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from time import monotonic_ns

import numpy as np

from server.errors import ErrorCode, FailureReason, ServerError
from server.model_config.sequence_config import SequenceSettings
from server.observability.statistics import ModelStats, RequestTiming, SequenceCounters
from server.runtime.instance import ModelInstance
from server.scheduling.base import Scheduler
from server.scheduling.batch_policy import BatchingRule, WaitUntil
from server.scheduling.clock import Clock, MonotonicClock
from server.scheduling.execution import BatchLayout, batch_output_names
from server.scheduling.job import InferenceJob
from server.scheduling.sequence_policy import Head, SlotBatch, direct_batch, oldest_batch
from server.scheduling.sequence_slots import SequenceSlots, SlotRef, UnknownSequenceError
from server.scheduling.sequence_tensors import Row, control_feeds, merge_rows, split_states
from server.scheduling.wakeup import EarliestTimer

log = logging.getLogger(__name__)

State = dict[str, np.ndarray]


class SequenceBatcher(Scheduler):
    def __init__(
        self,
        model_name: str,
        settings: SequenceSettings,
        instances: list[ModelInstance],
        layout: BatchLayout,
        stats: ModelStats,
        initial_states: State,
        clock: Clock | None = None,
    ) -> None:
        self._loop = asyncio.get_running_loop()
        self._model = model_name
        self._settings = settings
        self._instances = instances
        self._busy = [False] * len(instances)
        self._slots = SequenceSlots[InferenceJob](len(instances), settings.slots_per_instance, settings.idle_ns)
        self._states: dict[SlotRef, State] = {}
        self._initial = initial_states
        # With no variable state dim, every state of a slot has one shape and need not be compared.
        self._state_shapes_vary = any(-1 in spec.dims for spec in settings.states)
        self._layout = layout
        self._stats = stats
        self._counters = stats.sequences = SequenceCounters()
        self._rule = BatchingRule(settings.max_batch_size, settings.preferred_batch_sizes, settings.max_queue_delay_ns)
        self._clock = clock or MonotonicClock()
        self._timer = EarliestTimer(self._loop, self._clock, self._on_timer)
        self._closing = False
        self._drained = asyncio.Event()
        self._executing = 0

    @property
    def pending_count(self) -> int:
        return self._slots.queued_count()

    @property
    def executing_count(self) -> int:
        return self._executing

    def check_capacity(self, priority: int) -> None:
        if self._closing:
            raise ServerError.unavailable("model version is being unloaded")

    def submit(self, job: InferenceJob) -> None:
        """Queue ``job`` in its sequence's slot or backlog. Raises INVALID_ARG with Triton's words
        for a batch of more than one, a missing correlation ID or a sequence never started."""
        self.check_capacity(job.priority)
        if self._settings.batching and job.rows > 1:
            raise ServerError.invalid_arg(
                f"inference request to model '{self._model}' must specify batch-size 1 due to requirements of sequence batcher"
            )
        correlation = job.correlation
        if correlation is None:
            raise ServerError.invalid_arg(f"inference request to model '{self._model}' must specify a non-zero or non-empty correlation ID")
        now = self._clock.now_ns()
        try:
            ref = self._slots.admit(correlation.id, correlation.start, correlation.end, job, now, job.timeout_us * 1000)
        except UnknownSequenceError:
            raise ServerError.invalid_arg(
                f"inference request for sequence {correlation.id} to model '{self._model}' must specify the START flag "
                "on the first request of the sequence"
            ) from None
        self._count()
        batch_wait = None
        if ref is not None and not self._busy[ref.instance]:
            batch_wait = self._schedule_instance(ref.instance)
        self._rearm(batch_wait, backlog_timeout=ref is None and job.timeout_us > 0)

    async def close(self, drain_timeout_secs: float | None) -> None:
        self._closing = True
        self._check_drained()
        if not self._drained.is_set():
            drained = asyncio.ensure_future(self._drained.wait())
            done, _ = await asyncio.wait({drained}, timeout=drain_timeout_secs)
            if not done:
                drained.cancel()
                log.warning("model '%s': drain timed out with %d queued sequence requests", self._model, self.pending_count)
        for job in self._slots.drain_all():
            job.fail(ServerError.unavailable("model version was unloaded"))
        self._timer.cancel()

    # ---- decisions ---------------------------------------------------------------------------

    def _schedule_all(self) -> int | None:
        """Form a batch on every free instance; the earliest instant a waiting batch may run."""
        waits = [self._schedule_instance(index) for index, busy in enumerate(self._busy) if not busy]
        return min((w for w in waits if w is not None), default=None)

    def _schedule_instance(self, instance: int) -> int | None:
        """Dispatch what the strategy allows on a free instance now, or say when to look again."""
        heads = self._heads(instance)
        now = self._clock.now_ns()
        if self._settings.strategy == "direct":
            decision = direct_batch(
                heads, self._settings.slots_per_instance, now, self._settings.max_queue_delay_ns, self._settings.minimum_slot_utilization
            )
        else:
            decision = oldest_batch(heads, now, self._rule)
        if isinstance(decision, SlotBatch):
            self._dispatch(instance, decision.rows)
            return None
        if isinstance(decision, WaitUntil):
            return decision.deadline_ns
        return None

    def _heads(self, instance: int) -> list[Head]:
        heads = []
        for slot in self._slots.ready_slots(instance):
            if slot.queue[0].abandoned():
                self._slots.prune(slot.ref, InferenceJob.abandoned)
            if not slot.queue or slot.in_flight:
                continue
            job = slot.queue[0]
            key = job.shape_key
            if self._state_shapes_vary:
                key = (key, tuple((name, array.shape) for name, array in self._state_for(slot.ref, job).items()))
            heads.append(Head(slot.ref.slot, job.enqueued_ns, key, max(1, job.rows)))
        return heads

    def _state_for(self, ref: SlotRef, job: InferenceJob) -> State:
        """The state a slot's next request runs with: the initial one at a START."""
        if job.correlation is not None and job.correlation.start:
            return self._initial
        return self._states.get(ref, self._initial)

    def _next_wakeup(self, batch_wait: int | None) -> int | None:
        times = [t for t in (batch_wait, self._slots.next_idle_ns(), self._slots.next_backlog_expiry_ns()) if t is not None]
        return min(times) if times else None

    def _rearm(self, batch_wait: int | None, backlog_timeout: bool = False) -> None:
        """Arm the timer for what may have changed. An armed timer is never later than a new idle
        deadline (now + idle), so only a batching delay or a backlog timeout can need an earlier
        one; with neither, an armed timer stands (and the idle scan is skipped)."""
        if not self._timer.armed or batch_wait is not None or backlog_timeout:
            self._arm_timer(self._next_wakeup(batch_wait))

    def _arm_timer(self, at_ns: int | None) -> None:
        if at_ns is not None:
            self._timer.arm(at_ns)

    def _on_timer(self) -> None:
        now = self._clock.now_ns()
        idle, _ = self._slots.release_idle(now)
        if idle:
            self._counters.idle_released += len(idle)
            log.debug("model '%s': released %d idle sequence(s): %s", self._model, len(idle), idle)
        for job in self._slots.expire_backlog(now):
            job.fail(ServerError(ErrorCode.UNAVAILABLE, "timeout of the corresponding sequence has been expired", FailureReason.REJECTED))
        self._count()
        self._arm_timer(self._next_wakeup(self._schedule_all()))
        self._check_drained()

    # ---- execution ---------------------------------------------------------------------------

    def _dispatch(self, instance: int, slots: tuple[int | None, ...]) -> None:
        refs = [None if slot is None else SlotRef(slot, instance) for slot in slots]
        jobs = [None if ref is None else self._slots.take(ref) for ref in refs]
        rows = [
            Row(None, None, None) if job is None or ref is None else Row(job.feeds, self._state_for(ref, job), job.correlation)
            for ref, job in zip(refs, jobs)
        ]
        self._busy[instance] = True
        live = [job for job in jobs if job is not None]
        self._executing += len(live)
        model_instance, loop = self._instances[instance], self._loop

        def work() -> None:
            try:
                new_states: list[State | None] | Exception = self._run(model_instance, rows, jobs)
            except Exception as exc:  # ORT's own failure: this batch fails and its sequences end
                new_states = exc
            with contextlib.suppress(RuntimeError):  # the loop is gone: nobody waits any more
                loop.call_soon_threadsafe(self._batch_done, instance, refs, jobs, new_states)

        model_instance.post(work)

    def _run(self, instance: ModelInstance, rows: list[Row], jobs: list[InferenceJob | None]) -> list[State | None]:
        """Blocking, on the instance thread: merge, run, split outputs and new states."""
        settings = self._settings
        live = [job for job in jobs if job is not None]
        start = monotonic_ns()
        feeds = merge_rows(rows, settings.states, settings.batching)
        feeds.update(control_feeds(settings.controls, rows, settings.batching))
        names = batch_output_names(live, self._layout.model_outputs)
        names += [spec.output_name for spec in settings.states if spec.output_name not in names]
        input_done = monotonic_ns()
        outputs = dict(zip(names, instance.run(feeds, names)))
        infer_done = monotonic_ns()
        new_states: list[State | None] = []
        for row, job in enumerate(jobs):
            if job is None:
                new_states.append(None)
                continue
            job.outputs = {name: outputs[name][row : row + 1] if settings.batching else outputs[name] for name in job.output_names}
            new_states.append(split_states(settings.states, outputs, row, settings.batching))
        output_done = monotonic_ns()
        for job in live:
            _stamp(job.timing, start, input_done, infer_done, output_done)
        return new_states

    def _batch_done(
        self, instance: int, refs: list[SlotRef | None], jobs: list[InferenceJob | None], result: list[State | None] | Exception
    ) -> None:
        """On the loop: store the new states, answer the requests, free the instance."""
        self._busy[instance] = False
        live = [(ref, job) for ref, job in zip(refs, jobs) if ref is not None and job is not None]
        self._executing -= len(live)
        if isinstance(result, Exception):
            self._fail_batch(instance, live, result)
        else:
            self._stats.record_execution(len(live), live[0][1].timing, self._instances[instance].name)
            for ref, job, state in zip(refs, jobs, result):
                if ref is None or job is None or state is None:
                    continue  # a not-ready row
                if job.correlation is not None and job.correlation.end:
                    self._states.pop(ref, None)
                else:
                    self._states[ref] = state
                self._slots.finish(ref)
                job.succeed()
        self._count()
        self._rearm(self._schedule_all())
        self._check_drained()

    def _fail_batch(self, instance: int, live: list[tuple[SlotRef, InferenceJob]], error: Exception) -> None:
        name = self._instances[instance].name
        log.warning("model '%s': sequence batch of %d failed on %s: %s; its sequences are ended", self._model, len(live), name, error)
        failure = ServerError(ErrorCode.INTERNAL, str(error), FailureReason.BACKEND)
        for ref, job in live:
            job.fail(failure)
            self._states.pop(ref, None)
            dropped, _ = self._slots.abort(ref)
            self._counters.ended_by_failure += 1
            sequence = job.correlation.id if job.correlation is not None else "?"
            ended = ServerError(
                ErrorCode.INTERNAL,
                f"sequence {sequence} of model '{self._model}' was ended: its batch failed on instance {name}: {error}",
                FailureReason.BACKEND,
            )
            for queued in dropped:
                queued.fail(ended)

    def _count(self) -> None:
        self._counters.active = self._slots.active_count
        self._counters.backlog = self._slots.backlog_count

    def _check_drained(self) -> None:
        if self._closing and not any(self._busy) and not self._slots.queued_count():
            self._drained.set()


def _stamp(timing: RequestTiming, start: int, input_done: int, infer_done: int, output_done: int) -> None:
    timing.exec_start_ns = start
    timing.input_done_ns = input_done
    timing.infer_done_ns = infer_done
    timing.output_done_ns = output_done
