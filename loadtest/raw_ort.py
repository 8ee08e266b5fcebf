"""The ceiling: ``InferenceSession.run`` in-process, back to back, for N seconds.

No server, no serialization, no queue: whatever a server adds on top of this is its overhead.
Prints one JSON object: batch, throughput (inferences/s = runs * batch / s), p50/p99 per run in µs.

    python -m loadtest.raw_ort model_repo/mlp/1/model.onnx --batch 1 --seconds 5 --threads 1
"""

from __future__ import annotations

import argparse
import json
import time
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import onnxruntime as ort

# ONNX tensor type → numpy dtype for the inputs we can fabricate.
NUMPY_TYPES = {
    "tensor(float)": np.float32,
    "tensor(float16)": np.float16,
    "tensor(double)": np.float64,
    "tensor(int8)": np.int8,
    "tensor(int16)": np.int16,
    "tensor(int32)": np.int32,
    "tensor(int64)": np.int64,
    "tensor(uint8)": np.uint8,
    "tensor(uint16)": np.uint16,
    "tensor(uint32)": np.uint32,
    "tensor(uint64)": np.uint64,
    "tensor(bool)": np.bool_,
}
WARMUP_RUNS = 20


@dataclass(frozen=True)
class CeilingResult:
    model: str
    batch: int
    threads: int
    seconds: float
    runs: int
    throughput: float
    p50_us: float
    p99_us: float


def make_session(model: Path, threads: int) -> ort.InferenceSession:
    """A CPU session with ``threads`` intra-op threads (0 = ONNX Runtime's default: all cores)."""
    options = ort.SessionOptions()
    options.intra_op_num_threads = threads
    options.inter_op_num_threads = 1
    options.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    return ort.InferenceSession(str(model), sess_options=options, providers=["CPUExecutionProvider"])


def input_shape(arg: ort.NodeArg, batch: int, shapes: dict[str, list[int]]) -> list[int]:
    """The first dim is the batch; the rest come from ``shapes`` (perf_analyzer's --shape, no batch
    dim) or from the model where they are fixed."""
    if arg.name in shapes:
        return [batch, *shapes[arg.name]]
    rest = arg.shape[1:]
    if not all(isinstance(dim, int) for dim in rest):
        raise SystemExit(f"input '{arg.name}' has dynamic dims {arg.shape}: pass --shape {arg.name}:d1,d2,...")
    return [batch, *rest]


def random_feeds(session: ort.InferenceSession, batch: int, shapes: dict[str, list[int]]) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(0)
    feeds = {}
    for arg in session.get_inputs():
        if arg.type not in NUMPY_TYPES:
            raise SystemExit(f"input '{arg.name}' has type {arg.type}, which this tool cannot fabricate")
        shape = input_shape(arg, batch, shapes)
        feeds[arg.name] = (rng.random(shape) * 100).astype(NUMPY_TYPES[arg.type])
    return feeds


def measure(model: Path, batch: int, seconds: float, threads: int, shapes: dict[str, list[int]] | None = None) -> CeilingResult:
    """Run back to back for ``seconds`` after a short warm-up. Blocks the calling thread."""
    session = make_session(model, threads)
    feeds = random_feeds(session, batch, shapes or {})
    for _ in range(WARMUP_RUNS):
        session.run(None, feeds)
    return time_runs(session, feeds, str(model), batch, threads, seconds)


def time_runs(
    session: ort.InferenceSession, feeds: dict, model: str, batch: int, threads: int, seconds: float, min_runs: int = 1
) -> CeilingResult:
    """``session.run`` back to back for ``seconds`` (and at least ``min_runs`` times), timed one by one."""
    durations_ns: list[int] = []
    start = now = time.perf_counter_ns()
    deadline = start + int(seconds * 1e9)
    while now < deadline or len(durations_ns) < min_runs:
        session.run(None, feeds)
        finished = time.perf_counter_ns()
        durations_ns.append(finished - now)
        now = finished
    elapsed_s = (now - start) / 1e9
    p50, p99 = np.percentile(np.array(durations_ns) / 1e3, [50, 99])
    return CeilingResult(
        model=model,
        batch=batch,
        threads=threads,
        seconds=round(elapsed_s, 3),
        runs=len(durations_ns),
        throughput=round(len(durations_ns) * batch / elapsed_s, 1),
        p50_us=round(float(p50), 1),
        p99_us=round(float(p99), 1),
    )


def parse_shape(text: str) -> tuple[str, list[int]]:
    name, _, dims = text.rpartition(":")
    if not name or not dims:
        raise argparse.ArgumentTypeError(f"expected name:d1,d2,... but got '{text}'")
    return name, [int(d) for d in dims.split(",")]


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.raw_ort", description=__doc__.splitlines()[0])
    parser.add_argument("model", type=Path, help="path to an .onnx file")
    parser.add_argument("--batch", type=int, default=1)
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--threads", type=int, default=1, help="intra-op threads (0 = ONNX Runtime's default)")
    parser.add_argument("--shape", type=parse_shape, action="append", default=[], help="name:d1,d2 for dynamic non-batch dims")
    args = parser.parse_args(argv)
    result = measure(args.model, args.batch, args.seconds, args.threads, dict(args.shape))
    print(json.dumps(asdict(result)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
