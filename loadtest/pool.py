"""The parent's side of the worker processes: start them, split each step's load, collect samples.

Processes are started with "spawn" (a forked copy of a parent that already holds a gRPC channel
is not safe) and live for the whole run, so each keeps one warm connection across steps, as
perf_analyzer does.
"""

from __future__ import annotations

import contextlib
import multiprocessing
import time
from collections.abc import Callable
from dataclasses import replace
from multiprocessing.connection import Connection
from multiprocessing.process import BaseProcess
from types import TracebackType

from loadtest import worker
from loadtest.samples import WorkerSamples
from loadtest.worker import StepPlan, WorkerConfig

START_TIMEOUT_S = 60.0
# Lead time between sending plans and the common start, so every worker starts on time.
START_LEAD_S = 0.3


def split_concurrency(concurrency: int, processes: int) -> list[int]:
    """``concurrency`` slots over ``processes`` workers as evenly as possible (some may get 0)."""
    base, extra = divmod(concurrency, processes)
    return [base + (1 if i < extra else 0) for i in range(processes)]


def split_rate(rate: float, processes: int) -> list[tuple[float, float]]:
    """Each worker's (rate, phase_s): an equal share, with first sends staggered by 1/rate so the
    merged schedule is evenly spaced at ``rate``."""
    return [(rate / processes, i / rate) for i in range(processes)]


class WorkerPool:
    """``processes`` worker processes on one url. Use as a context manager: leaving it stops them."""

    def __init__(self, processes: int, config: WorkerConfig) -> None:
        self.processes = processes
        self._config = config
        self._workers: list[tuple[BaseProcess, Connection]] = []

    def __enter__(self) -> WorkerPool:
        context = multiprocessing.get_context("spawn")
        try:
            for index in range(self.processes):
                parent_end, child_end = context.Pipe()
                process = context.Process(target=worker.main, args=(child_end, self._config), name=f"loadtest-worker-{index}", daemon=True)
                process.start()
                child_end.close()
                self._workers.append((process, parent_end))
            for _, conn in self._workers:
                self._receive(conn, START_TIMEOUT_S)
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, kind: type[BaseException] | None, error: BaseException | None, trace: TracebackType | None) -> None:
        self.close()

    def run_step(
        self, template: StepPlan, concurrency: int = 0, rate: float = 0.0, on_started: Callable[[StepPlan], None] | None = None
    ) -> tuple[StepPlan, list[WorkerSamples]]:
        """Run one step on every worker (closed loop with ``concurrency``, else open loop at ``rate``)
        starting a moment from now; blocks until all report. ``on_started(plan)`` runs in this
        process while the workers work (to read server statistics at the window's edges).
        Returns the plan's timing and every worker's samples."""
        start_ns = time.monotonic_ns() + int(START_LEAD_S * 1e9)
        if concurrency > 0:
            plans = [replace(template, start_ns=start_ns, concurrency=c, rate=0.0) for c in split_concurrency(concurrency, self.processes)]
        else:
            shares = split_rate(rate, self.processes)
            plans = [
                replace(template, start_ns=start_ns, concurrency=0, rate=r, phase_s=p, seed=template.seed + i)
                for i, (r, p) in enumerate(shares)
            ]
        for plan, (_, conn) in zip(plans, self._workers):
            conn.send(plan)
        if on_started is not None:
            on_started(plans[0])
        budget_s = START_LEAD_S + template.warmup_s + template.duration_s + self._config.drain_s + 30.0
        return plans[0], [self._receive(conn, budget_s) for _, conn in self._workers]

    @staticmethod
    def _receive(conn: Connection, timeout_s: float) -> WorkerSamples:
        if not conn.poll(timeout_s):
            raise TimeoutError(f"a load-test worker did not answer within {timeout_s:.0f}s")
        kind, payload = conn.recv()
        if kind == "error":
            raise RuntimeError(f"a load-test worker failed:\n{payload}")
        return payload

    def close(self) -> None:
        """Ask each worker to stop, then make sure it has (terminate, then kill)."""
        for process, conn in self._workers:
            if process.is_alive():
                with contextlib.suppress(OSError):  # already gone
                    conn.send(None)
        for process, conn in self._workers:
            process.join(10.0)
            if process.is_alive():
                process.terminate()
                process.join(5.0)
            if process.is_alive():
                process.kill()
                process.join()
            conn.close()
        self._workers = []
