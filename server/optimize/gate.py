"""The accuracy gate: how much each output metric may lose before a version is not written.

``--max-accuracy-drop`` entries are ``METRIC=VALUE`` (every output) or ``OUTPUT:METRIC=VALUE``
(one output), the latter winning; ``VALUE`` ``off`` turns a metric off. Metrics and defaults:

- ``cosine``: 1 - cosine similarity, default 0.01 (outputs keep cosine >= 0.99);
- ``top1``: 1 - top-1 agreement, default 0.02 (the same class for 98 % of inputs);
- ``mean_abs`` / ``max_abs``: the mean / largest absolute error itself, off by default (their
  scale is the model's).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

from server.optimize.accuracy import OutputAccuracy
from server.optimize.failure import OptimizeError

DEFAULTS: dict[str, float | None] = {"cosine": 0.01, "top1": 0.02, "mean_abs": None, "max_abs": None}
# 1 - 0.98 is 0.020000000000000018 in floating point: a drop within this of the limit meets it.
ROUNDING = 1e-9


@dataclass(frozen=True, slots=True)
class GateResult:
    thresholds: dict[str, dict[str, float]]  # output → metric → largest drop allowed
    passed: bool
    failures: list[str]

    def to_json(self) -> dict[str, object]:
        return {"thresholds": self.thresholds, "passed": self.passed, "failures": self.failures}


def parse_thresholds(entries: list[str]) -> dict[str, dict[str, float | None]]:
    """``{"*": defaults..., "output": {...}}``. Raises OptimizeError for a malformed entry."""
    table: dict[str, dict[str, float | None]] = {"*": dict(DEFAULTS)}
    for entry in entries:
        for part in filter(None, (p.strip() for p in entry.split(","))):
            target, metric, value = _parse_entry(part)
            table.setdefault(target, {})[metric] = value
    return table


def judge(accuracy: dict[str, OutputAccuracy], table: dict[str, dict[str, float | None]]) -> GateResult:
    unknown = sorted(set(table) - {"*"} - set(accuracy))
    if unknown:
        raise OptimizeError(
            f"--max-accuracy-drop names output '{unknown[0]}', which the model does not have (outputs: {', '.join(accuracy)})"
        )
    thresholds: dict[str, dict[str, float]] = {}
    failures = []
    for output, measured in accuracy.items():
        limits = {**table["*"], **table.get(output, {})}
        drops = {"cosine": 1.0 - measured.cosine, "mean_abs": measured.mean_abs_error, "max_abs": measured.max_abs_error}
        if measured.top1_agreement is not None:
            drops["top1"] = 1.0 - measured.top1_agreement
        thresholds[output] = {}
        for metric, limit in limits.items():
            if limit is None or metric not in drops:
                continue
            thresholds[output][metric] = limit
            if not drops[metric] <= limit + ROUNDING or math.isnan(drops[metric]):
                failures.append(f"{output}: {metric} drop {drops[metric]:.6g} > {limit:g}")
    return GateResult(thresholds, not failures, failures)


def _parse_entry(part: str) -> tuple[str, str, float | None]:
    left, equals, text = part.partition("=")
    target, _, metric = left.rpartition(":")
    target = target or "*"
    if not equals or metric not in DEFAULTS:
        raise OptimizeError(f"--max-accuracy-drop '{part}': expected [OUTPUT:]METRIC=VALUE with METRIC one of {', '.join(DEFAULTS)}")
    if text.strip().lower() == "off":
        return target, metric, None
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not value >= 0:
        raise OptimizeError(f"--max-accuracy-drop '{part}': the value must be a number >= 0 or 'off'")
    return target, metric, value
