"""Run one formed batch on an instance: merge inputs, run ONNX Runtime, split outputs per job.

``execute_batch`` runs on the instance's own thread; it never touches futures (those belong to
the event loop) and raises whatever ONNX Runtime raised.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from time import monotonic_ns
from typing import TYPE_CHECKING

import numpy as np

from server.model_config.batch_inputs import BatchInputSpec, batch_input_array
from server.scheduling.job import InferenceJob

if TYPE_CHECKING:
    from server.runtime.instance import ModelInstance


def batch_output_names(jobs: list[InferenceJob], model_order: tuple[str, ...]) -> list[str]:
    """The union of what the jobs asked for, in the model's output order."""
    if len(jobs) == 1:
        return list(jobs[0].output_names)
    wanted = set().union(*(job.output_names for job in jobs))
    return [name for name in model_order if name in wanted]


@dataclass(frozen=True, slots=True)
class BatchLayout:
    """What a model version's batches are made of, beyond the requests' own feeds."""

    # Every output, in the model's order.
    model_outputs: tuple[str, ...]
    # Tensors computed per batch from the requests' shapes (Triton's batch_input).
    batch_inputs: tuple[BatchInputSpec, ...] = ()


def merge_feeds(jobs: list[InferenceJob], batch_inputs: tuple[BatchInputSpec, ...] = ()) -> dict[str, np.ndarray]:
    """Concatenate each input along dim 0 with a single copy (none for a batch of one; ragged
    inputs arrive flat, so they concatenate into one flat tensor), plus the batch inputs."""
    feeds = jobs[0].feeds if len(jobs) == 1 else {name: np.concatenate([job.feeds[name] for job in jobs]) for name in jobs[0].feeds}
    if batch_inputs:
        feeds = dict(feeds)
        for spec in batch_inputs:
            array = batch_input_array(spec, [job.source_shapes[spec.source] for job in jobs])
            feeds.update(dict.fromkeys(spec.targets, array))
    return feeds


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


def execute_batch(instance: ModelInstance, jobs: list[InferenceJob], layout: BatchLayout) -> None:
    """Blocking; called on ``instance``'s thread. Fills each job's outputs and timing."""
    start = monotonic_ns()
    feeds = merge_feeds(jobs, layout.batch_inputs)
    names = batch_output_names(jobs, layout.model_outputs)
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
    layout: BatchLayout,
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
            execute_batch(instance, live, layout)
        except Exception as exc:  # ORT's own failure: this batch fails, the others go on
            report(live, exc)
        else:
            report(live, None)
