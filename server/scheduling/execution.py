"""Run one formed batch on an instance: merge inputs, run ONNX Runtime, split outputs per job.

``execute_batch`` runs on the instance's own thread; it never touches futures (those belong to
the event loop) and raises whatever ONNX Runtime raised.
"""

from __future__ import annotations

from collections.abc import Callable
from time import monotonic_ns
from typing import TYPE_CHECKING

import numpy as np

from server.scheduling.job import InferenceJob

if TYPE_CHECKING:
    from server.runtime.instance import ModelInstance


def batch_output_names(jobs: list[InferenceJob], model_order: tuple[str, ...]) -> list[str]:
    """The union of what the jobs asked for, in the model's output order."""
    if len(jobs) == 1:
        return list(jobs[0].output_names)
    wanted = set().union(*(job.output_names for job in jobs))
    return [name for name in model_order if name in wanted]


def merge_feeds(jobs: list[InferenceJob]) -> dict[str, np.ndarray]:
    """Concatenate each input along dim 0 with a single copy (none for a batch of one)."""
    if len(jobs) == 1:
        return jobs[0].feeds
    return {name: np.concatenate([job.feeds[name] for job in jobs]) for name in jobs[0].feeds}


def split_outputs(jobs: list[InferenceJob], names: list[str], arrays: list[np.ndarray]) -> None:
    """Give each job views of its own rows; numpy slicing along dim 0 does not copy."""
    if len(jobs) == 1:
        job = jobs[0]
        job.outputs = dict(zip(names, arrays))
        return
    offset = 0
    for job in jobs:
        end = offset + job.rows
        job.outputs = {name: array[offset:end] for name, array in zip(names, arrays) if name in job.output_names}
        offset = end


def execute_batch(instance: ModelInstance, jobs: list[InferenceJob], model_outputs: tuple[str, ...]) -> None:
    """Blocking; called on ``instance``'s thread. Fills each job's outputs and timing."""
    start = monotonic_ns()
    feeds = merge_feeds(jobs)
    names = batch_output_names(jobs, model_outputs)
    input_done = monotonic_ns()
    arrays = instance.run(feeds, names)
    infer_done = monotonic_ns()
    split_outputs(jobs, names, arrays)
    output_done = monotonic_ns()
    for job in jobs:
        timing = job.timing
        timing.exec_start_ns = start
        timing.input_done_ns = input_done
        timing.infer_done_ns = infer_done
        timing.output_done_ns = output_done


def execute_batches(
    instance: ModelInstance,
    batches: list[list[InferenceJob]],
    model_outputs: tuple[str, ...],
    report: Callable[[list[InferenceJob], Exception | None], None],
) -> None:
    """Blocking, on the instance thread: run each batch in turn and ``report`` it at once.

    ``report(jobs_that_ran, error_or_None)`` is called after every batch, so an early request
    of a hand-over is answered without waiting for later ones. Never raises. Jobs whose caller
    went away while the hand-over waited are skipped (reading a future's state from this thread
    is a benign race: at worst a just-cancelled job still runs).
    """
    for batch in batches:
        live = [job for job in batch if not job.abandoned()]
        if not live:
            continue
        try:
            execute_batch(instance, live, model_outputs)
        except Exception as exc:  # ORT's own failure: this batch fails, the others go on
            report(live, exc)
        else:
            report(live, None)
