"""Slow work sized from this machine's measured speed, and a blocker that holds a model's instance.

Scheduler tests need an instance to stay busy while something else happens (requests queue, a
timeout or deadline passes, a model unloads). How long slow_echo takes depends on the CPU and on
whatever else runs, so nothing here assumes a duration:

- ``seconds_for_rows`` / ``rows_lasting`` time slow_echo in this process and size work for a
  target duration (only a starting point: the server may run slower or faster than we measured);
- ``Blocker`` sends one such request and returns once the server's /metrics shows it executing;
- ``Blocker.running`` reads from the server's counters whether it is still executing, so a test
  can check its *premise* (the blocker outlasted what it had to) after the fact;
- ``until_premise_holds`` repeats an attempt with twice the work whenever the premise failed, so
  a test's assertions only ever run on a premise that held.
"""

from __future__ import annotations

import functools
import math
import threading
import time
from collections.abc import Callable
from types import TracebackType

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient

from scripts import onnx_models
from scripts.harness import Metrics, ServerProcess, wait_until

# Every slow_echo model config carries this, so the server runs it as it was measured here.
ONE_THREAD = 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }'
# A Blocker needs its model to have exactly one instance.
ONE_INSTANCE = f"instance_group [ {{ kind: KIND_CPU, count: 1 }} ]\n{ONE_THREAD}"
# Blocker models are configured with this max_batch_size (or none), so any sized request fits.
MAX_ROWS = 4096
# The gauges that say where a model's requests are: queued, or on an instance.
PENDING = "nv_inference_pending_request_count"
EXECUTING = "ortserve_inference_executing_request_count"
# A difference in run time shorter than this is mostly noise; longer ones cost test time.
MEASURE_SECS = 0.25


@functools.cache
def _session() -> ort.InferenceSession:
    # One thread, as the server's slow_echo instances run (ONE_THREAD): also far less disturbed
    # by other processes than a pool whose threads wait for each other.
    options = ort.SessionOptions()
    options.intra_op_num_threads = 1
    return ort.InferenceSession(onnx_models.slow_echo().SerializeToString(), options, providers=["CPUExecutionProvider"])


@functools.cache
def seconds_for_rows(rows: int) -> float:
    """The faster of two slow_echo runs of ``rows`` rows in this process, in seconds."""
    session, feed = _session(), {"x": np.ones((rows, 1), np.float32)}
    times = []
    for _ in range(2):
        started = time.perf_counter()
        session.run(None, feed)
        times.append(time.perf_counter() - started)
    return min(times)


@functools.cache
def _cost_per_row() -> tuple[float, float]:
    """(fixed seconds, seconds per row) of slow_echo here, from one row and a batch that takes
    at least MEASURE_SECS longer than one row (so timing noise hardly moves the slope)."""
    one, rows = seconds_for_rows(1), 8
    while seconds_for_rows(rows) - one < MEASURE_SECS and rows < MAX_ROWS:
        rows *= 2
    per_row = max((seconds_for_rows(rows) - one) / (rows - 1), 1e-6)
    return max(one - per_row, 0.0), per_row


def rows_lasting(secs: float) -> int:
    """Rows of one slow_echo request measured to take about ``secs`` here (at most MAX_ROWS)."""
    fixed, per_row = _cost_per_row()
    return min(MAX_ROWS, max(1, math.ceil((secs - fixed) / per_row)))


def executions_lasting(secs: float, rows: int = 1) -> int:
    """How many slow_echo runs of ``rows`` rows were measured to take ``secs`` in all here."""
    return max(1, math.ceil(secs / seconds_for_rows(rows)))


def echo_input(values: np.ndarray) -> list[grpcclient.InferInput]:
    """slow_echo's input ``x`` [rows, 1] FP32 (its output ``y`` echoes it)."""
    item = grpcclient.InferInput("x", list(values.shape), "FP32")
    item.set_data_from_numpy(values.astype(np.float32))
    return [item]


def until_premise_holds(attempt: Callable[[int], bool], first: int, what: str, attempts: int = 5, most: int = MAX_ROWS) -> None:
    """Call ``attempt(size)`` with ``size`` doubling (up to ``most``) until it returns True.

    ``attempt`` returns False when its premise (``what``) did not hold, as the server's counters
    or log show it (a premise that fails before the assertions skips them); True once it held
    and the assertions passed. Fails the test when the premise
    never held: even 2**(attempts-1) times the measured work was not enough.
    """
    sizes = [min(most, first * 2**number) for number in range(attempts)]
    for number, size in enumerate(sizes, start=1):
        if attempt(size):
            return
        print(f"premise '{what}' did not hold with size {size} (attempt {number} of {attempts})")
    pytest.fail(f"premise '{what}' never held, with sizes {sizes}")


class Blocker:
    """One slow_echo request of ``rows`` rows on its own thread and connection.

    For a model with one instance and nothing else in flight. Entering returns once /metrics
    shows the request executing (or already answered: then ``running`` is False at once);
    leaving waits for its answer and checks that it echoes its input.
    """

    def __init__(self, server: ServerProcess, model: str, rows: int, timeout: float = 300.0) -> None:
        self.server, self.model, self.rows, self.timeout = server, model, rows, timeout
        self.values = np.arange(rows, dtype=np.float32).reshape(rows, 1) % 97
        self.executions_before = 0.0
        self.result: grpcclient.InferResult | None = None
        self.failure: BaseException | None = None
        self._thread = threading.Thread(target=self._send, name=f"blocker-{model}", daemon=True)

    def executions(self, metrics: Metrics) -> float:
        return metrics.model(self.model, "nv_inference_exec_count")

    def running(self, metrics: Metrics | None = None) -> bool:
        """True while the blocker is unanswered: the only instance has finished no execution since."""
        return self.executions(metrics or self.server.metrics()) == self.executions_before

    def wait_queued(self, count: int) -> bool:
        """Until ``count`` requests are queued on the model; True if they all queued behind the
        still running blocker (then none of them can have run yet)."""
        wait_until(
            lambda: self.server.metrics().model(self.model, PENDING) >= count or not self.running(),
            60,
            f"{count} request(s) queued on '{self.model}'",
        )
        metrics = self.server.metrics()
        return self.running(metrics) and metrics.model(self.model, PENDING) == count

    def __enter__(self) -> Blocker:
        self.executions_before = self.executions(self.server.metrics())
        self._thread.start()

        def on_instance() -> bool:
            metrics = self.server.metrics()
            return self.failure is not None or not self.running(metrics) or metrics.model(self.model, EXECUTING) >= 1

        wait_until(on_instance, 60, f"a {self.rows}-row request executing on '{self.model}'")
        if self.failure is not None:
            raise self.failure
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self._thread.join(self.timeout)
        if kind is not None:
            return
        assert not self._thread.is_alive(), f"the blocker on '{self.model}' was not answered within {self.timeout}s"
        if self.failure is not None:
            raise self.failure
        assert self.result is not None
        np.testing.assert_allclose(self.result.as_numpy("y"), self.values, rtol=1e-5)

    def _send(self) -> None:
        try:
            with grpcclient.InferenceServerClient(self.server.grpc_url) as client:
                self.result = client.infer(self.model, echo_input(self.values), client_timeout=self.timeout)
        except BaseException as exc:  # reported on the test's thread
            self.failure = exc
