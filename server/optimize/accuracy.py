"""How far a candidate's outputs are from the source's, on the same evaluation samples.

Per output: the largest and the mean absolute difference, the cosine similarity of all its
values (every sample's output flattened into one vector), and, for outputs whose last dim looks
like classes, how often both models pick the same class (top-1 agreement over every position).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

# Output names that say "these are class scores".
CLASS_NAME = re.compile(r"prob|logit|score|class|softmax", re.IGNORECASE)


@dataclass(frozen=True, slots=True)
class OutputAccuracy:
    max_abs_error: float
    mean_abs_error: float
    cosine: float
    top1_agreement: float | None  # None: the output does not look like classes

    def to_json(self) -> dict[str, float | None]:
        return asdict(self)


def compare(
    reference: Mapping[str, Sequence[np.ndarray]], candidate: Mapping[str, Sequence[np.ndarray]], class_outputs: set[str]
) -> dict[str, OutputAccuracy]:
    """Per output name: the metrics over every evaluation batch (same order in both)."""
    return {name: compare_output(reference[name], candidate[name], name in class_outputs) for name in reference}


def compare_output(reference: Sequence[np.ndarray], candidate: Sequence[np.ndarray], classes: bool) -> OutputAccuracy:
    ref = np.concatenate([np.asarray(a, np.float64).ravel() for a in reference])
    out = np.concatenate([np.asarray(a, np.float64).ravel() for a in candidate])
    difference = np.abs(ref - out)
    top1 = None
    if classes:
        agree = [np.argmax(r, axis=-1) == np.argmax(c, axis=-1) for r, c in zip(reference, candidate)]
        top1 = float(np.mean(np.concatenate([a.ravel() for a in agree])))
    return OutputAccuracy(float(difference.max(initial=0.0)), float(difference.mean()) if difference.size else 0.0, cosine(ref, out), top1)


def cosine(a: np.ndarray, b: np.ndarray) -> float:
    """1.0 for two zero vectors, 0.0 when only one is zero; NaN when either holds NaN."""
    norms = float(np.linalg.norm(a)) * float(np.linalg.norm(b))
    if norms == 0.0:
        return 1.0 if not a.any() and not b.any() else 0.0
    return float(np.dot(a, b) / norms)


def class_like_outputs(reference: Mapping[str, Sequence[np.ndarray]], labelled: set[str], named: set[str]) -> set[str]:
    """Outputs that hold class scores: named by --classes, with a label file in the config, named
    like scores (prob, logit, ...), or holding probabilities (non-negative, summing to 1 over the
    last dim). All need a float output whose last dim has at least two entries."""
    found = set()
    for name, arrays in reference.items():
        if not arrays or arrays[0].ndim == 0 or arrays[0].shape[-1] < 2 or not np.issubdtype(arrays[0].dtype, np.floating):
            continue
        if name in named or name in labelled or CLASS_NAME.search(name) or _probabilities(arrays[0]):
            found.add(name)
    return found


def _probabilities(array: np.ndarray) -> bool:
    return bool(np.all(array >= 0) and np.allclose(array.sum(axis=-1), 1.0, atol=1e-3))


def score(accuracy: dict[str, OutputAccuracy]) -> float:
    """One number to rank candidates by (higher is closer): the worst output's cosine and top-1."""
    values = [a.cosine for a in accuracy.values()] + [a.top1_agreement for a in accuracy.values() if a.top1_agreement is not None]
    return min(values) if values else 0.0
