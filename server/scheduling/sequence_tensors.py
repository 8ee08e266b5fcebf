"""The tensors a sequence batch adds to its requests' own: control inputs (START, END, READY,
CORRID) and implicit states, stacked one row per batch slot, and the new states split back out.

Pure numpy; runs on the instance thread. A "not ready" row (direct strategy, a slot with nothing
to run) repeats the first row's inputs as zeros, with READY false and a throwaway state.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from server.datatypes import numpy_dtype
from server.model_config.sequence_config import Control, ControlSpec, StateSpec
from server.scheduling.job import Correlation


@dataclass(frozen=True, slots=True)
class Row:
    """One row of a sequence batch: a request's feeds and its sequence's state, or, for a
    not-ready row, None for both."""

    feeds: dict[str, np.ndarray] | None
    state: dict[str, np.ndarray] | None
    correlation: Correlation | None


def control_value(control: ControlSpec, correlation: Correlation | None) -> float | int | bool | str:
    """What one row's control tensor holds; a not-ready row has every signal false and CORRID 0."""
    if control.kind == Control.CONTROL_SEQUENCE_CORRID:
        corrid: int | str = 0 if correlation is None else correlation.id
        if control.datatype == "BYTES":
            return str(corrid)
        return corrid if isinstance(corrid, int) else 0
    if correlation is None:
        return control.false_value
    if control.kind == Control.CONTROL_SEQUENCE_START:
        on = correlation.start
    elif control.kind == Control.CONTROL_SEQUENCE_END:
        on = correlation.end
    else:  # READY: a row with a request is ready
        on = True
    return control.true_value if on else control.false_value


def control_feeds(controls: Sequence[ControlSpec], rows: Sequence[Row], batching: bool) -> dict[str, np.ndarray]:
    """Each control as [rows, 1] (batching) or [1]."""
    feeds = {}
    for control in controls:
        values = [control_value(control, row.correlation) for row in rows]
        array = np.array(values, dtype=numpy_dtype(control.datatype))
        feeds[control.name] = array.reshape(len(rows), 1) if batching else array.reshape(1)
    return feeds


def merge_rows(rows: Sequence[Row], states: Sequence[StateSpec], batching: bool) -> dict[str, np.ndarray]:
    """The request inputs and state inputs of every row, stacked along the batch dim (a batch
    of one, or a model without batching, feeds its arrays as they are)."""
    first = next(row for row in rows if row.feeds is not None)
    assert first.feeds is not None and first.state is not None
    if len(rows) == 1:
        return {**first.feeds, **batch_state(first.state, batching)}
    feeds = {name: np.concatenate([row.feeds[name] if row.feeds else _blank(array) for row in rows]) for name, array in first.feeds.items()}
    for spec in states:
        template = first.state[spec.input_name]
        feeds[spec.input_name] = np.stack([row.state[spec.input_name] if row.state else _blank(template) for row in rows])
    return feeds


def _blank(array: np.ndarray) -> np.ndarray:
    return np.full(array.shape, "", dtype=object) if array.dtype == object else np.zeros_like(array)


def batch_state(state: dict[str, np.ndarray], batching: bool) -> dict[str, np.ndarray]:
    """A lone row's state as fed: with the batch dim when the model batches."""
    return {name: array[np.newaxis] for name, array in state.items()} if batching else state


def split_states(states: Sequence[StateSpec], outputs: dict[str, np.ndarray], row: int, batching: bool) -> dict[str, np.ndarray]:
    """Row ``row``'s new state (per-sequence shape) from the model's state outputs."""
    if not batching:
        return {spec.input_name: outputs[spec.output_name] for spec in states}
    return {spec.input_name: outputs[spec.output_name][row] for spec in states}
