"""The metric series of sequence batchers and ensembles (families defined in families.py), read
from the counters their schedulers keep in ``ModelStats``."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Protocol, TypeVar

from server.observability import families
from server.observability.statistics import ModelStats, SequenceCounters, StepStat


class Observed(Protocol):
    @property
    def stats(self) -> ModelStats: ...


V = TypeVar("V", bound=Observed)

_SEQUENCE: list[tuple[families.Family, Callable[[SequenceCounters], float]]] = [
    (families.SEQUENCE_ACTIVE, lambda c: c.active),
    (families.SEQUENCE_BACKLOG, lambda c: c.backlog),
    (families.SEQUENCE_IDLE_RELEASED, lambda c: c.idle_released),
    (families.SEQUENCE_ENDED_BY_FAILURE, lambda c: c.ended_by_failure),
]
_STEP: list[tuple[families.Family, Callable[[StepStat], float]]] = [
    (families.ENSEMBLE_STEP_SUCCESS, lambda s: s.success.count),
    (families.ENSEMBLE_STEP_FAILURE, lambda s: s.failures),
    (families.ENSEMBLE_STEP_DURATION, lambda s: s.success.ns // 1000),
]


def render_composite_metrics(versions: Sequence[V], labels: Callable[[V], dict[str, str]]) -> list[str]:
    """The sequence families for versions with a sequence batcher, the step families (labelled
    ``step`` and ``step_model``) for ensembles; nothing when there are neither."""
    lines: list[str] = []
    sequences = [(labels(v), v.stats.sequences) for v in versions if v.stats.sequences is not None]
    if sequences:
        for family, value in _SEQUENCE:
            lines += family.render((label, value(counters)) for label, counters in sequences if counters is not None)
    steps = [
        ({**labels(v), "step": str(index), "step_model": step.model}, step)
        for v in versions
        for index, step in enumerate(v.stats.steps or ())
    ]
    if steps:
        for family, read in _STEP:
            lines += family.render((label, read(step)) for label, step in steps)
    return lines
