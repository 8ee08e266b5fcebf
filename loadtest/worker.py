"""A load-generating worker process: one asyncio loop (uvloop), one gRPC channel, its share of the load.

The parent sends a StepPlan per step through a pipe and gets WorkerSamples back. Requests are
pre-serialized bytes sent through grpc.aio with no serializer, and unary responses are not even
parsed (a gRPC OK status is the success): per request the client does as little Python as it can,
so the server, not the client, is what a step measures. Streaming responses are parsed, because
their ``id`` says which request they answer.

Timestamps are ``time.monotonic_ns()``, which on Linux is one clock for every process, so the
parent can give all workers the same start and measurement window.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection

import grpc
import numpy as np
import uvloop

from loadtest.inputs import with_id
from loadtest.samples import WorkerSamples
from server.proto import grpc_service_pb2 as pb

INFER_METHOD = "/inference.GRPCInferenceService/ModelInfer"
STREAM_METHOD = "/inference.GRPCInferenceService/ModelStreamInfer"
CHANNEL_OPTIONS = [("grpc.max_send_message_length", -1), ("grpc.max_receive_message_length", -1)]
IN_STREAM_ERROR = "IN_STREAM"  # a stream response with error_message (Triton sends no code for those)


@dataclass(frozen=True)
class WorkerConfig:
    url: str
    request: bytes  # a serialized ModelInferRequest without id
    streaming: bool
    streams: int  # streaming: streams per process; slot k uses stream k % streams
    request_timeout_s: float
    drain_s: float  # how long requests still in flight after the window may take before they are cancelled
    cpus: tuple[int, ...] = ()  # pin this process to these CPUs (empty: inherit the parent's)


@dataclass(frozen=True)
class StepPlan:
    start_ns: int  # monotonic: when this worker starts sending
    warmup_s: float
    duration_s: float
    concurrency: int  # closed loop: requests this worker keeps in flight (0 in rate mode)
    rate: float  # open loop: this worker's requests per second (0 in concurrency mode)
    phase_s: float  # open loop: delay of this worker's first send, so workers' schedules interleave
    poisson: bool
    max_in_flight: int
    seed: int

    @property
    def window_start_ns(self) -> int:
        return self.start_ns + int(self.warmup_s * 1e9)

    @property
    def window_end_ns(self) -> int:
        return self.window_start_ns + int(self.duration_s * 1e9)


class Recorder:
    """Keeps the outcomes that fall inside the measurement window (by completion time)."""

    def __init__(self, plan: StepPlan) -> None:
        self.samples = WorkerSamples()
        self._begin, self._end = plan.window_start_ns, plan.window_end_ns

    def begin(self) -> None:
        self.samples.started += 1

    def outcome(self, start_ns: int, end_ns: int, error: str | None) -> None:
        if error is None:
            self.samples.succeeded += 1
        if self._begin <= end_ns <= self._end:
            if error is None:
                self.samples.latencies_ns.append(end_ns - start_ns)
            else:
                self.samples.errors[error] += 1

    def sent(self, scheduled_ns: int, sent_ns: int) -> None:
        if self._begin <= scheduled_ns <= self._end:
            self.samples.send_lag_ns.append(sent_ns - scheduled_ns)

    def skip(self, scheduled_ns: int) -> None:
        if self._begin <= scheduled_ns <= self._end:
            self.samples.skipped += 1


class UnarySender:
    """ModelInfer calls; returns None on success or the gRPC code's name."""

    def __init__(self, channel: grpc.aio.Channel, request: bytes, timeout_s: float) -> None:
        self._call = channel.unary_unary(INFER_METHOD, request_serializer=None, response_deserializer=None)
        self._request, self._timeout_s = request, timeout_s

    async def send(self, slot: int) -> str | None:
        try:
            await self._call(self._request, timeout=self._timeout_s)
        except grpc.aio.AioRpcError as error:
            return error.code().name
        return None

    async def close(self) -> None:
        pass


class StreamSender:
    """One ModelStreamInfer stream; responses are matched to requests by ``id``. Writes go straight
    to the call (one at a time, as gRPC allows), with no queue or request iterator in between. A
    broken stream fails its pending requests with the stream's code and is reopened by the next
    send. No per-request deadline: the step's drain bound ends stuck ones."""

    def __init__(self, channel: grpc.aio.Channel, request: bytes) -> None:
        self._method = channel.stream_stream(
            STREAM_METHOD, request_serializer=None, response_deserializer=pb.ModelStreamInferResponse.FromString
        )
        self._request = request
        self._pending: dict[str, asyncio.Future[str | None]] = {}
        self._call: grpc.aio.StreamStreamCall | None = None
        self._reader: asyncio.Task[None] | None = None
        self._write_lock = asyncio.Lock()
        self._next_id = 0

    async def send(self) -> str | None:
        call = self._call if self._call is not None and not self._call.done() else self._open()
        self._next_id += 1
        request_id = str(self._next_id)
        future: asyncio.Future[str | None] = asyncio.get_running_loop().create_future()
        self._pending[request_id] = future
        try:
            async with self._write_lock:
                await call.write(with_id(self._request, request_id))
        except (grpc.aio.AioRpcError, asyncio.InvalidStateError) as error:
            # The stream ended under us; the reader may already have failed the pending requests.
            self._pending.pop(request_id, None)
            if not future.done():
                return error.code().name if isinstance(error, grpc.aio.AioRpcError) else "STREAM_CLOSED"
        return await future

    def _open(self) -> grpc.aio.StreamStreamCall:
        call = self._call = self._method()
        self._reader = asyncio.create_task(self._read(call))
        return call

    async def _read(self, call: grpc.aio.StreamStreamCall) -> None:
        code = "STREAM_CLOSED"  # the server ended the stream with requests pending
        try:
            while (response := await call.read()) is not grpc.aio.EOF:
                future = self._pending.pop(response.infer_response.id, None)
                if future is not None and not future.done():
                    future.set_result(IN_STREAM_ERROR if response.error_message else None)
        except grpc.aio.AioRpcError as error:
            code = error.code().name
        finally:
            pending, self._pending = self._pending, {}
            for future in pending.values():
                if not future.done():
                    future.set_result(code)

    async def close(self) -> None:
        if self._call is not None and not self._call.done():
            with contextlib.suppress(grpc.aio.AioRpcError, asyncio.InvalidStateError):
                await self._call.done_writing()  # half-close: the server finishes and ends the stream
        if self._reader is not None:
            with contextlib.suppress(TimeoutError, asyncio.CancelledError):
                await asyncio.wait_for(self._reader, 5.0)


class StreamPool:
    """Several streams on one channel; slot k always uses stream k % count. One stream carrying
    every slot pipelines on the server; one stream per slot is how perf_analyzer --streaming lays out
    its load (one stream per concurrency context, one request in flight on each)."""

    def __init__(self, channel: grpc.aio.Channel, request: bytes, count: int) -> None:
        self._streams = [StreamSender(channel, request) for _ in range(max(1, count))]

    async def send(self, slot: int) -> str | None:
        return await self._streams[slot % len(self._streams)].send()

    async def close(self) -> None:
        await asyncio.gather(*(stream.close() for stream in self._streams))


Sender = UnarySender | StreamPool


async def sleep_until(deadline_ns: int) -> None:
    delay = deadline_ns - time.monotonic_ns()
    if delay > 0:
        await asyncio.sleep(delay / 1e9)


async def closed_loop(sender: Sender, plan: StepPlan, recorder: Recorder) -> None:
    """``plan.concurrency`` slots, each sending its next request when the last one is answered."""

    async def slot(index: int) -> None:
        while (start := time.monotonic_ns()) < plan.window_end_ns:
            recorder.begin()
            error = await sender.send(index)
            recorder.outcome(start, time.monotonic_ns(), error)

    await sleep_until(plan.start_ns)
    await asyncio.gather(*(slot(index) for index in range(plan.concurrency)))


def schedule(plan: StepPlan) -> Iterator[int]:
    """Send times (monotonic ns) from the start to the end of the window, at ``plan.rate`` per second:
    evenly spaced, or exponential gaps (a Poisson process) with ``plan.poisson``."""
    rng = np.random.default_rng(plan.seed)
    at = plan.start_ns + plan.phase_s * 1e9
    gap = 1e9 / plan.rate
    while at < plan.window_end_ns:
        yield int(at)
        at += rng.exponential(gap) if plan.poisson else gap


async def open_loop(sender: Sender, plan: StepPlan, recorder: Recorder) -> None:
    """Requests go out on schedule whether or not earlier ones were answered, and latency runs from
    the scheduled time, so a slow server cannot slow the load down and hide its own latency
    (coordinated omission)."""
    in_flight: set[asyncio.Task[None]] = set()

    async def one(scheduled_ns: int, index: int) -> None:
        recorder.sent(scheduled_ns, time.monotonic_ns())
        recorder.begin()
        error = await sender.send(index)
        recorder.outcome(scheduled_ns, time.monotonic_ns(), error)

    for index, scheduled_ns in enumerate(schedule(plan)):
        await sleep_until(scheduled_ns)
        if len(in_flight) >= plan.max_in_flight:
            recorder.skip(scheduled_ns)
            continue
        task = asyncio.create_task(one(scheduled_ns, index))
        in_flight.add(task)
        task.add_done_callback(in_flight.discard)
    if in_flight:
        await asyncio.gather(*in_flight)


async def cpu_window(plan: StepPlan, samples: WorkerSamples) -> None:
    """This process's CPU time over the window (every thread: gRPC's own count too)."""
    await sleep_until(plan.window_start_ns)
    cpu, wall = time.process_time(), time.monotonic()
    await sleep_until(plan.window_end_ns)
    samples.cpu_s, samples.wall_s = time.process_time() - cpu, time.monotonic() - wall


async def run_step(sender: Sender, plan: StepPlan, drain_s: float) -> WorkerSamples:
    recorder = Recorder(plan)
    if plan.concurrency <= 0 and plan.rate <= 0:
        return recorder.samples  # no share of this step's load
    load = closed_loop(sender, plan, recorder) if plan.concurrency > 0 else open_loop(sender, plan, recorder)
    budget_s = (plan.window_end_ns - time.monotonic_ns()) / 1e9 + drain_s
    work = asyncio.gather(load, cpu_window(plan, recorder.samples))
    # Requests stuck past the drain bound are cancelled; they end after the window, so count nowhere.
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(work, budget_s)
    return recorder.samples


async def serve(conn: Connection, config: WorkerConfig) -> None:
    """Answer the parent's plans until it sends None. Runs on this process's only event loop."""
    loop = asyncio.get_running_loop()
    async with grpc.aio.insecure_channel(config.url, options=CHANNEL_OPTIONS) as channel:
        await asyncio.wait_for(channel.channel_ready(), 30.0)
        sender: Sender = (
            StreamPool(channel, config.request, config.streams)
            if config.streaming
            else UnarySender(channel, config.request, config.request_timeout_s)
        )
        conn.send(("ready", None))
        while (plan := await loop.run_in_executor(None, conn.recv)) is not None:
            conn.send(("samples", await run_step(sender, plan, config.drain_s)))
        await sender.close()


def main(conn: Connection, config: WorkerConfig) -> None:
    """Process entry point; any failure goes back to the parent as text instead of a silent exit."""
    try:
        if config.cpus:
            os.sched_setaffinity(0, config.cpus)
        uvloop.run(serve(conn, config))
    except BaseException:  # the parent must learn why, whatever it was
        with contextlib.suppress(OSError):
            conn.send(("error", traceback.format_exc()))
    finally:
        conn.close()
