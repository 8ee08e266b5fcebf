"""The ensemble scheduler: runs one request's steps as soon as their inputs exist.

A request's ensemble tensors live in a dict of numpy arrays; a step whose inputs are all there is
submitted at once to its member's own scheduler (so each member keeps its own batcher, and
independent branches run in parallel), as an InferenceJob like a client's, checked like one, with
the request's priority, timeout, deadline and sequence flags. Nothing is copied or encoded
between steps. A member is looked up per step (a reloaded member serves the next step; an
unloaded one fails it with the lookup's error). The request ends when every step has answered,
or at the first failure, whose message Triton prefixes with "in ensemble '<name>', ".

Each member records the step's request in its own statistics, the ensemble records per-step
figures (``ModelStats.steps``), and the ensemble's own queue and compute durations are the sums
of its steps' (as Triton's ensemble statistics are).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from time import monotonic_ns
from typing import Protocol

from server.errors import FailureReason, ServerError
from server.model_config.ensemble_config import EnsemblePlan, EnsembleStep
from server.model_config.spec import ModelSpec
from server.observability.statistics import ModelStats, RequestTiming, StepStat
from server.scheduling.base import Scheduler
from server.scheduling.job import InferenceJob
from server.scheduling.step_inputs import EnsembleTensor, step_feeds, step_outputs

log = logging.getLogger(__name__)


class Member(Protocol):
    """What a step needs of the member version it runs on (a lifecycle Servable has it all)."""

    name: str
    version_str: str
    spec: ModelSpec
    stats: ModelStats
    scheduler: Scheduler


# (model name, version string or "" for the latest) → the READY member, or ServerError.
MemberLookup = Callable[[str, str], Member]


class EnsembleScheduler(Scheduler):
    def __init__(self, name: str, spec: ModelSpec, plan: EnsemblePlan, lookup: MemberLookup, stats: ModelStats) -> None:
        self.name = name
        self.spec = spec
        self.plan = plan
        self.lookup = lookup
        self.stats = stats
        self.steps = stats.steps = [StepStat(step.model_name) for step in plan.steps]
        self._runs: set[_Run] = set()
        self._closing = False
        self._idle = asyncio.Event()
        self._idle.set()

    @property
    def pending_count(self) -> int:
        return 0

    @property
    def executing_count(self) -> int:
        return len(self._runs)

    def check_capacity(self, priority: int) -> None:
        if self._closing:
            raise ServerError.unavailable("model version is being unloaded")

    def submit(self, job: InferenceJob) -> None:
        """Start the request's pipeline; its future resolves with the ensemble outputs or the
        first step failure. Raises UNAVAILABLE only when closing."""
        self.check_capacity(job.priority)
        run = _Run(self, job)
        self._runs.add(run)
        self._idle.clear()
        run.start()

    def finished(self, run: _Run) -> None:
        self._runs.discard(run)
        if not self._runs:
            self._idle.set()

    async def close(self, drain_timeout_secs: float | None) -> None:
        self._closing = True
        if not self._idle.is_set():
            waiter = asyncio.ensure_future(self._idle.wait())
            done, _ = await asyncio.wait({waiter}, timeout=drain_timeout_secs)
            if not done:
                waiter.cancel()
        for run in list(self._runs):
            run.fail(ServerError.unavailable("model version was unloaded"))


class _Run:
    """One request's way through the steps (on the event loop, driven by member callbacks)."""

    __slots__ = ("_compute", "_done", "_in_flight", "_job", "_missing", "_owner", "_queue_ns", "_tensors")

    def __init__(self, owner: EnsembleScheduler, job: InferenceJob) -> None:
        self._owner, self._job = owner, job
        batch = job.rows if owner.spec.batching else 0
        self._tensors: dict[str, EnsembleTensor | None] = {name: EnsembleTensor(array, batch) for name, array in job.feeds.items()}
        # Optional ensemble inputs left out: the steps that read them go without.
        self._tensors.update({name: None for name in owner.spec.inputs if name not in job.feeds})
        self._missing = {step.index: {tensor for _, tensor in step.inputs if tensor not in self._tensors} for step in owner.plan.steps}
        self._in_flight: dict[int, InferenceJob] = {}
        self._done = False
        self._queue_ns = 0
        self._compute = [0, 0, 0]

    def start(self) -> None:
        self._job.future.add_done_callback(self._on_caller_done)
        for index in [i for i, missing in self._missing.items() if not missing]:
            self._launch(self._owner.plan.steps[index])

    def _launch(self, step: EnsembleStep) -> None:
        del self._missing[step.index]
        owner, parent = self._owner, self._job
        try:
            member = owner.lookup(step.model_name, step.version_str)
            inputs = {name: tensor for name, tensor in ((n, self._tensors[t]) for n, t in step.inputs) if tensor is not None}
            prepared = step_feeds(member.spec, inputs)
            now = monotonic_ns()
            job = InferenceJob(
                feeds=prepared.feeds,
                rows=prepared.rows,
                output_names=tuple(name for name, _ in step.outputs),
                future=asyncio.get_running_loop().create_future(),
                timing=RequestTiming(received_ns=now, enqueued_ns=now),
                shape_key=prepared.shape_key,
                priority=parent.priority,
                timeout_us=parent.timeout_us,
                deadline_ns=parent.deadline_ns,
                source_shapes=prepared.source_shapes,
                correlation=parent.correlation,
            )
            member.scheduler.submit(job)
        except ServerError as error:
            owner.steps[step.index].failures += 1
            self.fail(self._step_error(step, error))
            return
        self._in_flight[step.index] = job
        job.future.add_done_callback(lambda _: self._step_done(step, member, job))

    def _step_done(self, step: EnsembleStep, member: Member, job: InferenceJob) -> None:
        self._in_flight.pop(step.index, None)
        done_ns = monotonic_ns()
        stat = self._owner.steps[step.index]
        if job.future.cancelled():
            member.stats.record_failure(FailureReason.CANCELED, job.timing.received_ns, done_ns)
            return
        error = job.future.exception()
        if error is not None:
            reason = error.reason if isinstance(error, ServerError) else FailureReason.OTHER
            member.stats.record_failure(reason, job.timing.received_ns, done_ns)
            stat.failures += 1
            server_error = error if isinstance(error, ServerError) else ServerError.internal(str(error))
            self.fail(self._step_error(step, server_error))
            return
        member.stats.record_success(job.timing, job.rows, done_ns)
        stat.success.add(done_ns - job.timing.received_ns)
        self._add_timing(job.timing)
        if self._done:
            return
        produced = step_outputs(member.spec, job.future.result(), job.rows)
        for name, tensor in step.outputs:
            self._tensors[tensor] = produced[name]
        self._advance([tensor for _, tensor in step.outputs])

    def _advance(self, produced: list[str]) -> None:
        ready = []
        for tensor in produced:
            for index in self._owner.plan.consumers.get(tensor, ()):
                missing = self._missing.get(index)
                if missing is not None:
                    missing.discard(tensor)
                    if not missing:
                        ready.append(index)
        for index in ready:
            if not self._done:
                self._launch(self._owner.plan.steps[index])
        if not self._missing and not self._in_flight and not self._done:
            self._succeed()

    def _succeed(self) -> None:
        spec, job = self._owner.spec, self._job
        outputs = {}
        for name in job.output_names:
            tensor = self._tensors[name]
            assert tensor is not None  # validated: every ensemble output is written
            array = tensor.array
            if spec.batching and tensor.batch_size == 0:
                array = array.reshape((1, *array.shape))  # an unbatched member fed a batching ensemble output
            outputs[name] = array
        job.outputs = outputs
        timing = job.timing
        timing.exec_start_ns = timing.enqueued_ns + self._queue_ns
        timing.input_done_ns = timing.exec_start_ns + self._compute[0]
        timing.infer_done_ns = timing.input_done_ns + self._compute[1]
        timing.output_done_ns = timing.infer_done_ns + self._compute[2]
        self._finish()
        job.succeed()

    def fail(self, error: ServerError) -> None:
        if self._done:
            return
        self._finish()
        for member_job in self._in_flight.values():
            member_job.future.cancel()
        self._job.fail(error)

    def _finish(self) -> None:
        self._done = True
        self._owner.finished(self)

    def _on_caller_done(self, _: object) -> None:
        if self._job.future.cancelled() and not self._done:
            self._finish()
            for member_job in self._in_flight.values():
                member_job.future.cancel()

    def _add_timing(self, timing: RequestTiming) -> None:
        self._queue_ns += max(0, timing.exec_start_ns - timing.enqueued_ns)
        self._compute[0] += max(0, timing.input_done_ns - timing.exec_start_ns)
        self._compute[1] += max(0, timing.infer_done_ns - timing.input_done_ns)
        self._compute[2] += max(0, timing.output_done_ns - timing.infer_done_ns)

    def _step_error(self, step: EnsembleStep, error: ServerError) -> ServerError:
        """Triton's prefix; a member's own failure (ONNX Runtime) also names the step and model."""
        message = error.message
        if error.reason is FailureReason.BACKEND:
            message = f"step {step.index} (model '{step.model_name}') failed: {message}"
        return ServerError(error.code, f"in ensemble '{self._owner.name}', {message}", error.reason)
