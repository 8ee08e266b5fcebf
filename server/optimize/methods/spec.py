"""What every method shares: the method names, their options and the candidate they produce."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from server.optimize.cpu import CpuInfo
from server.optimize.failure import OptimizeError
from server.optimize.samples import Feeds

METHODS = ("int8-dynamic", "int8-static", "fp16", "graph", "prune:RATIO", "auto")
# What auto tries, in this order. Pruning changes what the model computes, so auto never prunes.
AUTO_METHODS = ("int8-dynamic", "int8-static", "fp16", "graph")
CALIBRATION_METHODS = ("minmax", "entropy", "percentile")


@dataclass(frozen=True, slots=True)
class MethodSpec:
    name: str  # one of METHODS, "prune" for prune:RATIO
    ratio: float = 0.0

    @property
    def label(self) -> str:
        return f"prune:{self.ratio:g}" if self.name == "prune" else self.name


def parse_method(text: str) -> MethodSpec:
    """Raises OptimizeError for an unknown method or a pruning ratio outside (0, 1)."""
    if text.startswith("prune:"):
        try:
            ratio = float(text.partition(":")[2])
        except ValueError:
            ratio = -1.0
        if not 0.0 < ratio < 1.0:
            raise OptimizeError(f"--method {text}: the pruning ratio must be a number between 0 and 1 (exclusive), e.g. prune:0.3")
        return MethodSpec("prune", ratio)
    if text not in METHODS or text == "prune:RATIO":
        raise OptimizeError(f"--method {text}: unknown method (methods: {', '.join(METHODS)})")
    return MethodSpec(text)


@dataclass(frozen=True)
class MethodOptions:
    cpu: CpuInfo
    calibration: list[Feeds]
    calibration_method: str = "minmax"
    per_channel: str = "auto"  # "auto": try both, keep the more accurate; "true" / "false"
    op_types: tuple[str, ...] | None = None  # None: each method's default
    exclude_nodes: tuple[str, ...] = ()
    fp32_ops: tuple[str, ...] = ()
    # Scores a candidate file against the source (higher is more accurate); per-channel "auto" uses it.
    accuracy_score: Callable[[Path], float] | None = None


@dataclass
class Candidate:
    """A model file a method produced, what the method chose, and what the user should know."""

    path: Path
    method: str
    settings: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
