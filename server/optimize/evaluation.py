"""Run a candidate next to the source: does it load, does it run, how close and how fast is it."""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.optimize import accuracy, speed
from server.optimize.accuracy import OutputAccuracy
from server.optimize.failure import OptimizeError
from server.optimize.gate import GateResult, judge
from server.optimize.methods import Candidate
from server.optimize.samples import Feeds
from server.proto import model_config_pb2 as mc

NO_KERNEL = re.compile(r"Could not find an implementation for (\w+)\((\d+)\) node with name '([^']*)'")
BAD_TYPE = re.compile(r"of operator \((\w+)\) in node \(([^)]*)\) is invalid")


@dataclass(frozen=True)
class Bench:
    """What every candidate is compared on: the source's session and outputs, and the settings."""

    config: mc.ModelConfig
    source: ort.InferenceSession
    evaluation: list[Feeds]
    reference: dict[str, list[np.ndarray]]
    class_outputs: set[str]
    timing_feeds: dict[int, Feeds]
    thresholds: dict[str, dict[str, float | None]]
    threads: int
    provider: str
    runs: int
    warmup: int


@dataclass
class Evaluation:
    candidate: Candidate
    accuracy: dict[str, OutputAccuracy]
    gate: GateResult
    speed: list[speed.SpeedPoint]
    size_bytes: int

    @property
    def speedup(self) -> float:
        """After / before throughput at the largest batch size measured."""
        return self.speed[-1].speedup


def run_all(session: ort.InferenceSession, feeds: list[Feeds], what: str) -> dict[str, list[np.ndarray]]:
    """Every output for every feed. Raises OptimizeError naming the feed's shapes."""
    names = [output.name for output in session.get_outputs()]
    results: dict[str, list[np.ndarray]] = {name: [] for name in names}
    for feed in feeds:
        try:
            values = session.run(names, feed)
        except Exception as error:  # ORT raises its own pybind exception types
            shapes = ", ".join(f"{name} {list(array.shape)} {array.dtype}" for name, array in feed.items())
            raise OptimizeError(f"{what} fails on the samples ({shapes}): {error}") from None
        for name, value in zip(names, values):
            results[name].append(value)
    return results


def accuracy_of(bench: Bench, path: Path, method: str) -> dict[str, OutputAccuracy]:
    session = load_candidate(bench, path, method)
    return accuracy.compare(bench.reference, run_all(session, bench.evaluation, f"the {method} model"), bench.class_outputs)


def evaluate(bench: Bench, candidate: Candidate) -> Evaluation:
    """Accuracy on the evaluation samples, the gate, and speed interleaved with the source."""
    session = load_candidate(bench, candidate.path, candidate.method)
    outputs = run_all(session, bench.evaluation, f"the {candidate.method} model")
    measured = accuracy.compare(bench.reference, outputs, bench.class_outputs)
    points = speed.measure(bench.source, session, bench.timing_feeds, bench.runs, bench.warmup)
    return Evaluation(candidate, measured, judge(measured, bench.thresholds), points, candidate.path.stat().st_size)


def load_candidate(bench: Bench, path: Path, method: str) -> ort.InferenceSession:
    """Raises OptimizeError naming the op (and node) ONNX Runtime refuses, with what to do."""
    try:
        return speed.open_session(path, bench.config, bench.threads, bench.provider)
    except OptimizeError as error:
        raise OptimizeError(explain_load_failure(method, str(error), bench.provider)) from None


def explain_load_failure(method: str, message: str, provider: str) -> str:
    kernel = NO_KERNEL.search(message)
    if kernel:
        op, opset, node = kernel.groups()
        return f"{method}: ONNX Runtime's {provider} has no kernel for {op} (opset {opset}), node '{node}'; {_hint(method, op, node)}"
    typed = BAD_TYPE.search(message)
    if typed:
        op, node = typed.groups()
        return (
            f"{method}: operator {op} (node '{node or '<unnamed>'}') does not accept the types {method} gave it; {_hint(method, op, node)}"
        )
    return f"{method}: ONNX Runtime cannot load the optimized model: {message}"


def _hint(method: str, op: str, node: str) -> str:
    if method == "fp16":
        return f"keep it in FP32 with --fp32-ops {op}"
    if op == "ConvInteger":
        return "quantize Conv with int8-static instead, or keep Conv in FP32 with --op-types MatMul,Gemm"
    if node:
        return f"keep that node in FP32 with --exclude-nodes {node}"
    return f"keep {op} in FP32: list the op types to quantize with --op-types, without {op}"
