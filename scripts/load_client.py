"""A closed-loop load generator for tests and benchmarks: C asyncio tasks calling ModelInfer.

Each of ``concurrency`` tasks sends its next request as soon as the previous one is answered,
through one ``tritonclient.grpc.aio`` client on a background thread, until ``stop()`` or
``max_secs``. Every request's outcome is recorded: start and end (``time.monotonic()``), the
``model_version`` of the response, ``value`` = mean(OUTPUT - INPUT) (for an ``add_constant``
model that is its constant, so it tells which weights answered), or the error.

    with LoadClient(server.grpc_url, "model", concurrency=32) as load:
        ...  # change the repository
        outcomes = load.stop()
"""

from __future__ import annotations

import asyncio
import itertools
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import tritonclient.grpc.aio as grpcaio
from tritonclient.utils import InferenceServerException


@dataclass(frozen=True, slots=True)
class Outcome:
    start: float
    end: float
    version: str = ""  # the response's model_version; "" for an error
    value: float | None = None  # mean(output - input); None for an error
    error: str | None = None  # "StatusCode.X: message"

    @property
    def ok(self) -> bool:
        return self.error is None


class LoadClient:
    """Closed-loop gRPC load on a background thread; bounded by ``max_secs`` whatever happens."""

    def __init__(
        self,
        url: str,
        model: str,
        concurrency: int = 32,
        shape: tuple[int, ...] = (1, 4),
        input_name: str = "INPUT0",
        output_name: str = "OUTPUT0",
        max_secs: float = 120.0,
        request_timeout_secs: float = 30.0,
        pause_secs: float = 0.0,
    ) -> None:
        self.url, self.model, self.concurrency = url, model, concurrency
        self.shape, self.input_name, self.output_name = shape, input_name, output_name
        self.max_secs, self.request_timeout_secs, self.pause_secs = max_secs, request_timeout_secs, pause_secs
        self._outcomes: list[Outcome] = []  # appended by the load thread only
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._failure: BaseException | None = None

    # ---- control (test thread) -----------------------------------------------------------

    def start(self) -> LoadClient:
        self._thread = threading.Thread(target=self._run, name=f"load-{self.model}", daemon=True)
        self._thread.start()
        return self

    def stop(self) -> list[Outcome]:
        """Stop sending, wait for requests in flight (bounded), return every outcome."""
        self._stop.set()
        if self._thread is not None:
            self._thread.join(self.request_timeout_secs + 5)
            if self._thread.is_alive():
                raise RuntimeError("load client did not stop")
        if self._failure is not None:
            raise RuntimeError("load client failed") from self._failure
        return list(self._outcomes)

    def outcomes(self) -> list[Outcome]:
        return list(self._outcomes)

    def wait_for(self, predicate: Callable[[Outcome], bool], since: float = 0.0, timeout: float = 20.0) -> Outcome:
        """The first outcome that started at or after ``since`` and satisfies ``predicate``.

        Raises TimeoutError (with the last outcomes seen) if none comes within ``timeout``.
        """
        deadline = time.monotonic() + timeout
        seen = 0
        while True:
            current = self._outcomes[seen:]
            seen += len(current)
            for outcome in current:
                if outcome.start >= since and predicate(outcome):
                    return outcome
            if time.monotonic() > deadline or (self._thread is not None and not self._thread.is_alive()):
                raise TimeoutError(f"no matching outcome within {timeout}s; last ones: {self._outcomes[-3:]}")
            time.sleep(0.02)

    def __enter__(self) -> LoadClient:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        if not self._stop.is_set():
            self._stop.set()
            if self._thread is not None:
                self._thread.join(self.request_timeout_secs + 5)

    # ---- the load thread -----------------------------------------------------------------

    def _run(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported by stop()
            self._failure = exc

    async def _main(self) -> None:
        deadline = time.monotonic() + self.max_secs
        counter = itertools.count()
        async with grpcaio.InferenceServerClient(self.url) as client:
            await asyncio.gather(*(self._worker(client, counter, deadline) for _ in range(self.concurrency)))

    async def _worker(self, client: grpcaio.InferenceServerClient, counter: itertools.count, deadline: float) -> None:
        while not self._stop.is_set() and time.monotonic() < deadline:
            data = np.full(self.shape, next(counter) % 1000, dtype=np.float32)
            item = grpcaio.InferInput(self.input_name, list(self.shape), "FP32")
            item.set_data_from_numpy(data)
            start = time.monotonic()
            try:
                result = await client.infer(self.model, [item], client_timeout=self.request_timeout_secs)
            except InferenceServerException as exc:
                self._outcomes.append(Outcome(start, time.monotonic(), error=f"{exc.status()}: {exc.message()}"))
            else:
                end = time.monotonic()
                value = float(np.mean(result.as_numpy(self.output_name) - data))
                self._outcomes.append(Outcome(start, end, result.get_response().model_version, value))
            if self.pause_secs:
                await asyncio.sleep(self.pause_secs)


def failures(outcomes: list[Outcome]) -> list[Outcome]:
    return [o for o in outcomes if not o.ok]


def percentile_ms(outcomes: list[Outcome], q: float) -> float:
    """The q-th percentile latency in milliseconds (nan for no outcomes)."""
    if not outcomes:
        return float("nan")
    return float(np.percentile([(o.end - o.start) * 1000 for o in outcomes], q))
