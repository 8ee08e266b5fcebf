"""One inference request's way through the core: admission (check, reserve, decode, queue), the
opaque handle its frontend holds while it runs, and the response built from its outputs.

For a version with a response cache, admission computes the request's cache key from the data
as it arrived and leaves decoding to the scheduler: a request the cache answers is never decoded.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from time import monotonic_ns

import numpy as np

from server.errors import FailureReason, ServerError
from server.lifecycle.servable import Servable
from server.observability.statistics import RequestTiming
from server.observability.tracing import RequestTrace
from server.scheduling.job import InferenceJob
from server.service.cache_key import request_key
from server.service.classification import top_classes
from server.service.inflight import InflightBudget
from server.service.request_inputs import decode_inputs, requested_output_names, validate_inputs
from server.service.request_parameters import scheduling_parameters
from server.service.sample_capture import SampleCapture
from server.service.shared_memory_io import SharedMemoryOutputs
from server.types import InferOutput, InferRequest, InferResponse


class InferenceHandle:
    """A submitted request, as its frontend sees it: wait for it, withdraw it, or be told when it
    is done. What it holds inside (the servable, the queued job) stays the core's business, so
    the same handle can stand for a request in this process or behind a channel."""

    __slots__ = ("_job", "_request", "_servable", "_shared_outputs")

    def __init__(self, servable: Servable, request: InferRequest, job: InferenceJob, shared_outputs: SharedMemoryOutputs | None) -> None:
        self._servable, self._request, self._job = servable, request, job
        # Outputs to be written into shared memory once the request succeeds.
        self._shared_outputs = shared_outputs

    @property
    def request(self) -> InferRequest:
        return self._request

    def done(self) -> bool:
        return self._job.future.done()

    def cancel(self) -> None:
        """Withdraw the request: if it has not run yet it never will."""
        self._job.future.cancel()

    def add_done_callback(self, callback: Callable[[InferenceHandle], None]) -> None:
        """Call ``callback(handle)`` on the event loop once the request has an outcome."""
        self._job.future.add_done_callback(lambda _: callback(self))

    async def wait(self) -> None:
        """Return once the request has an outcome (success, failure or cancellation).

        Raises CancelledError only when the waiting task itself is cancelled (which also
        withdraws the request).
        """
        future = self._job.future
        if future.done():
            return
        # Awaiting the future itself: asyncio.wait would cost a waiter, a set and two callbacks
        # per request (measured 6 us of 9). The outcome is read by ``outcome``, not here.
        try:
            await future
        except asyncio.CancelledError:
            task = asyncio.current_task()
            if task is not None and task.cancelling():
                raise
        except Exception:  # the request's own failure
            return


def admit(
    servable: Servable,
    request: InferRequest,
    budget: InflightBudget,
    received_ns: int,
    shared_outputs: SharedMemoryOutputs | None = None,
    capture: SampleCapture | None = None,
    trace: RequestTrace | None = None,
) -> InferenceHandle:
    """Check, then reserve, then decode, then queue: a request that is refused (bad, too large a
    batch, full queue, over the in-flight budget) costs no tensor decoding. Raises ServerError."""
    params = scheduling_parameters(request.parameters)
    output_names = requested_output_names(servable.spec, request)
    plan = validate_inputs(servable.spec, request)
    scheduler = servable.scheduler
    token = scheduler.cache_token
    scheduler.check_capacity(params.priority)
    budget.reserve(request.size_bytes)
    try:
        job = InferenceJob(
            feeds={} if token else decode_inputs(servable.spec, request, plan),
            rows=plan.batch_size,
            output_names=output_names,
            future=asyncio.get_running_loop().create_future(),
            timing=RequestTiming(received_ns=received_ns, enqueued_ns=monotonic_ns()),
            shape_key=plan.shape_key,
            priority=params.priority,
            timeout_us=params.timeout_us,
            deadline_ns=int(request.deadline * 1e9) if request.deadline is not None else 0,
            source_shapes=plan.source_shapes,
            correlation=params.correlation,
            trace=trace,
        )
        if token:
            job.cache_key = request_key(token, request, plan, output_names)
            job.decode_feeds = functools.partial(decode_inputs, servable.spec, request, plan)
        scheduler.submit(job)
        if capture is not None:  # --sample-capture-dir: keep this request's inputs (bounded, never blocks)
            capture.offer(servable.name, servable.config, job.feeds)
    except BaseException:
        budget.release(request.size_bytes)
        raise
    return InferenceHandle(servable, request, job, shared_outputs)


def outcome(handle: InferenceHandle) -> InferResponse:
    """The response of a done request, recording its statistics. Raises its ServerError, or
    CancelledError if it was withdrawn. A traced request's response carries its trace, for the
    frontend to finish once encoded; a failed one's trace is finished here."""
    servable, request, job = handle._servable, handle._request, handle._job
    stats = servable.stats
    if job.future.cancelled():
        stats.record_failure(FailureReason.CANCELED, job.timing.received_ns, monotonic_ns())
        if job.trace is not None:
            end_trace(job.trace, job.timing, "request cancelled")
        raise asyncio.CancelledError()
    error = job.future.exception()
    if error is not None:
        reason = error.reason if isinstance(error, ServerError) else FailureReason.OTHER
        stats.record_failure(reason, job.timing.received_ns, monotonic_ns())
        if job.trace is not None:
            end_trace(job.trace, job.timing, error.message if isinstance(error, ServerError) else str(error))
        raise error
    response = build_response(servable, request, job.output_names, job.future.result(), job.rows)
    if handle._shared_outputs is not None:
        try:
            handle._shared_outputs.write(response)
        except ServerError as write_error:
            stats.record_failure(write_error.reason, job.timing.received_ns, monotonic_ns())
            if job.trace is not None:
                end_trace(job.trace, job.timing, write_error.message)
            raise
    if job.from_cache:
        stats.record_cache_hit(job.timing, job.cache_lookup_ns, monotonic_ns())
    else:
        stats.record_success(job.timing, job.rows, monotonic_ns())
    if job.trace is not None:
        job.trace.request_ended(job.timing)
        response.trace = job.trace
    return response


def end_trace(trace: RequestTrace, timing: RequestTiming, error: str) -> None:
    """A traced request failed: its trace ends now, without a response to encode."""
    trace.request_ended(timing, error)
    trace.finish()


def build_response(
    servable: Servable, request: InferRequest, output_names: tuple[str, ...], outputs: dict[str, np.ndarray], batch_size: int
) -> InferResponse:
    spec = servable.spec
    class_counts = {output.name: output.class_count for output in request.outputs if output.class_count}
    items: list[InferOutput] = []
    for name in output_names:
        tensor = spec.outputs[name]
        array = outputs[name]
        if tensor.reshape is not None:
            array = array.reshape(((batch_size,) if spec.batching else ()) + tensor.dims)
        if name in class_counts:
            classes = top_classes(array, class_counts[name], spec.batching, spec.labels.get(name, ()))
            items.append(InferOutput(name, "BYTES", classes.shape, classes))
        else:
            items.append(InferOutput(name, tensor.datatype, array.shape, array))
    return InferResponse(servable.name, servable.version_str, request.id, items)
