"""Raw ONNX Runtime CUDA vs ortserve on a big MLP, at batch 1 and 32, within a time budget.

Builds an FP32 MLP (scripts/onnx_models.mlp; by default 1024 → 4096 x8 → 16, 490 MB of weights,
so each inference is real GPU work and tensors on the wire stay small) into a scratch repository
as a KIND_GPU model with one instance and no dynamic batching: every request is one execution at
its own batch size. Then, at each batch size:

1. raw ORT in this process on GPU 0, back to back: ``session.run`` (ORT stages inputs itself) and
   the server's own GPU path, ``ModelInstance.run`` with IO binding (inputs bound from host memory,
   outputs copied back);
2. ortserve in its own process, loaded over gRPC by the project's load tester (``loadtest.runner``,
   several client processes) or by perf_analyzer (``--client``), at each ``--concurrency``.

Prints one table, each throughput also as a ratio to the IO-binding figure at the same batch, and
writes loadtest/results/gpu.json. ``--budget-s`` bounds the whole run: a step that would not fit
in what is left is skipped and named. ``--device cpu`` runs the same on the CPU (a dry run).

    python -m loadtest.bench_gpu --budget-s 240
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from loadtest import perf_analyzer, runner, servers
from loadtest.bench_foundation import RESULTS_DIR, table
from scripts import onnx_models
from server.runtime.gpus import cuda_build_version
from server.runtime.instance import ModelInstance

MODEL = "mlp_gpu"
WARMUP_RUNS = 20


@dataclass(frozen=True)
class Row:
    batch: int
    path: str
    concurrency: int | None
    infer_per_s: float | None  # None: the step failed or did not fit the budget
    p50_ms: float | None
    p99_ms: float | None
    ratio: float | None = None  # infer_per_s over raw IO binding's at this batch


@dataclass
class Budget:
    """Seconds left of the run's budget, on the monotonic clock."""

    seconds: float
    start: float = field(default_factory=time.monotonic)
    skipped: list[str] = field(default_factory=list)

    def left(self) -> float:
        return self.seconds - (time.monotonic() - self.start)

    def allows(self, step: str, needs_s: float) -> bool:
        if self.left() >= needs_s:
            return True
        self.skipped.append(f"{step}: needs about {needs_s:.0f}s, {max(self.left(), 0):.0f}s left")
        print(f"  skipped (budget) {step}", flush=True)
        return False


def build_repository(directory: Path, options: argparse.Namespace) -> Path:
    widths = (options.input_width, *([options.width] * options.layers), 16)
    version_dir = directory / MODEL / "1"
    version_dir.mkdir(parents=True)
    onnx_models.save(onnx_models.mlp(widths), str(version_dir / "model.onnx"))
    kind = "KIND_GPU" if options.device == "cuda" else "KIND_CPU"
    gpus = " gpus: [ 0 ]" if options.device == "cuda" else ""
    (directory / MODEL / "config.pbtxt").write_text(
        f"max_batch_size: {max(options.batch)}\ninstance_group [ {{ kind: {kind} count: 1{gpus} }} ]\n"
    )
    return version_dir / "model.onnx"


def raw_session(model_file: Path, device: str) -> ort.InferenceSession:
    providers: list = (
        [("CUDAExecutionProvider", {"device_id": "0"}), "CPUExecutionProvider"] if device == "cuda" else ["CPUExecutionProvider"]
    )
    session = ort.InferenceSession(str(model_file), providers=providers)
    if device == "cuda" and session.get_providers()[0] != "CUDAExecutionProvider":
        raise SystemExit(f"the CUDA execution provider did not start (session got {session.get_providers()}); see ORT's log above")
    return session


def time_calls(call: Callable[[], object], seconds: float, batch: int) -> tuple[float, float, float]:
    """(inferences/s, p50 ms, p99 ms) of ``call`` back to back for ``seconds`` after a warm-up."""
    for _ in range(WARMUP_RUNS):
        call()
    durations = []
    start = now = time.perf_counter()
    while now - start < seconds:
        call()
        finished = time.perf_counter()
        durations.append(finished - now)
        now = finished
    p50, p99 = np.percentile(np.array(durations) * 1e3, [50, 99])
    return round(len(durations) * batch / (now - start), 1), round(float(p50), 3), round(float(p99), 3)


def measure_raw(model_file: Path, options: argparse.Namespace, budget: Budget) -> list[Row]:
    session = raw_session(model_file, options.device)
    instance = ModelInstance("raw", session, options.device, use_io_binding=True)
    rows = []
    try:
        for batch in options.batch:
            feeds = {"input": np.random.default_rng(batch).standard_normal((batch, options.input_width)).astype(np.float32)}
            calls = {"raw ORT session.run": lambda f=feeds: session.run(["output"], f)}
            calls["raw ORT IO binding (server's path)"] = lambda f=feeds: instance.run(f, ["output"])
            for path, call in calls.items():
                if budget.allows(f"{path} batch {batch}", options.seconds + 5):
                    print(f"  {path}, batch {batch} ...", flush=True)
                    rows.append(Row(batch, path, None, *time_calls(call, options.seconds, batch)))
    finally:
        instance.close()
    return rows


def perf_analyzer_works() -> bool:
    try:
        done = subprocess.run([str(perf_analyzer.binary()), "--version"], env=perf_analyzer.environment(), capture_output=True, timeout=30)
    except (FileNotFoundError, ImportError, subprocess.TimeoutExpired):
        return False
    return done.returncode == 0


def measure_with_loadtest(url: str, batch: int, options: argparse.Namespace) -> list[Row]:
    run_options = runner.RunOptions(
        url=url,
        model=MODEL,
        concurrency=tuple(options.concurrency),
        duration_s=options.seconds,
        warmup_s=1.0,
        batch=batch,
        processes=options.processes,
    )
    report = runner.run(run_options)
    return [_loadtest_row(batch, step) for step in report.steps]


def _loadtest_row(batch: int, step: runner.StepResult) -> Row:
    """A step with any failed request gives no figures: its errors are in the load tester's output."""
    if sum(step.client.errors.values()):
        return Row(batch, "ortserve gRPC (loadtest)", int(step.level), None, None, None)
    p50, p99 = (round(us / 1e3, 3) if us is not None else None for us in (step.client.p50_us, step.client.p99_us))
    return Row(batch, "ortserve gRPC (loadtest)", int(step.level), step.client.infer_per_s, p50, p99)


def measure_with_perf_analyzer(url: str, batch: int, options: argparse.Namespace) -> list[Row]:
    low, high = min(options.concurrency), max(options.concurrency)
    args = [
        "-b",
        str(batch),
        "--concurrency-range",
        f"{low}:{high}:{max(high - low, 1)}",
        "--measurement-interval",
        str(int(options.seconds * 1000)),
    ]
    args += ["--max-trials", "4", "--stability-percentage", "100"]
    run = perf_analyzer.run(MODEL, url, args, timeout_s=len(options.concurrency) * (4 * options.seconds + 30))
    if run.returncode != 0:
        print(run.describe()[-2000:], file=sys.stderr)
    by_level = {point.concurrency: point for point in run.points}
    rows = []
    for level in options.concurrency:
        point = by_level.get(level)
        figures = (point.throughput, point.p50_us / 1e3, point.p99_us / 1e3) if point else (None, None, None)
        rows.append(Row(batch, "ortserve gRPC (perf_analyzer)", level, *figures))
    return rows


def measure_server(model_dir: Path, options: argparse.Namespace, budget: Budget) -> list[Row]:
    client = options.client
    if client == "auto":
        client = "perf_analyzer" if perf_analyzer_works() else "loadtest"
    measure = measure_with_perf_analyzer if client == "perf_analyzer" else measure_with_loadtest
    # perf_analyzer measures at least three windows per level; the load tester one, after 1 s of warm-up.
    windows = 3 if client == "perf_analyzer" else 1
    step_s = len(options.concurrency) * (windows * options.seconds + 5) + 10
    if not budget.allows("ortserve start", 60 + step_s):
        return []
    rows: list[Row] = []
    with servers.ortserve(model_dir, [], "ortserve-gpu", RESULTS_DIR) as server:
        print(f"  ortserve: {instances_line(server.log_path)}", flush=True)
        for batch in options.batch:
            if budget.allows(f"ortserve batch {batch} ({client})", step_s):
                print(f"  ortserve via {client}, batch {batch}, concurrency {options.concurrency} ...", flush=True)
                rows += measure(server.grpc_url, batch, options)
    return rows


def instances_line(log_path: Path) -> str:
    """The server's log line naming the model's instances and their devices."""
    lines = [line for line in log_path.read_text(errors="replace").splitlines() if f"model '{MODEL}': versions" in line]
    return lines[-1].split("; ")[-2] if lines else "(no instance line in the log)"


def with_ratios(rows: list[Row]) -> list[Row]:
    bound = {r.batch: r.infer_per_s for r in rows if r.path.startswith("raw ORT IO binding") and r.infer_per_s}
    return [
        Row(**{**asdict(r), "ratio": round(r.infer_per_s / bound[r.batch], 3) if r.infer_per_s and r.batch in bound else None})
        for r in rows
    ]


def describe_setup(options: argparse.Namespace, model_file: Path) -> dict[str, object]:
    return {
        "onnxruntime": ort.__version__,
        "built for CUDA": cuda_build_version(),
        "device": options.device,
        "model": f"MLP {options.input_width} -> {options.width} x{options.layers} -> 16, FP32, {model_file.stat().st_size / 1e6:.0f} MB",
    }


def display(row: Row) -> list[object]:
    """A table line: '-' where a figure does not apply, FAILED (the table's None) where one is missing."""
    concurrency = "-" if row.concurrency is None else row.concurrency
    ratio = "-" if row.ratio is None and row.infer_per_s is not None else row.ratio
    return [row.batch, row.path, concurrency, row.infer_per_s, row.p50_ms, row.p99_ms, ratio]


def run(options: argparse.Namespace) -> dict[str, object]:
    budget = Budget(options.budget_s)
    with ExitStack() as stack:
        scratch = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-gpu-")))
        print("  building the model ...", flush=True)
        model_file = build_repository(scratch, options)
        setup = describe_setup(options, model_file)
        rows = measure_raw(model_file, options, budget)
        rows += measure_server(scratch, options, budget)
    rows = with_ratios(sorted(rows, key=lambda r: r.batch))
    return {
        "setup": setup,
        "rows": [asdict(r) for r in rows],
        "skipped": budget.skipped,
        "seconds": round(time.monotonic() - budget.start, 1),
    }


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_gpu", description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda", help="cpu: the same steps on the CPU (a dry run)")
    parser.add_argument("--batch", type=int, nargs="+", default=[1, 32])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 8])
    parser.add_argument(
        "--client", choices=["auto", "loadtest", "perf_analyzer"], default="loadtest", help="auto: perf_analyzer if it runs"
    )
    parser.add_argument("--processes", type=int, default=4, help="load tester client processes")
    parser.add_argument("--seconds", type=float, default=4.0, help="measured seconds per step")
    parser.add_argument("--input-width", type=int, default=1024)
    parser.add_argument("--width", type=int, default=4096)
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--budget-s", type=float, default=240.0, help="bound on the whole run; steps that would not fit are skipped")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "gpu.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    result = run(options)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    options.output.write_text(json.dumps(result, indent=2) + "\n")
    rows = [Row(**r) for r in result["rows"]]  # type: ignore[attr-defined]
    print("\n" + ", ".join(f"{k}: {v}" for k, v in result["setup"].items()))  # type: ignore[attr-defined]
    print(table(["batch", "path", "concurrency", "infer/s", "p50 ms", "p99 ms", "vs IO binding"], [display(r) for r in rows]))
    for skipped in result["skipped"]:  # type: ignore[attr-defined]
        print(f"skipped: {skipped}")
    print(f"wrote {options.output} ({result['seconds']} s)")
    failed = [r for r in rows if r.infer_per_s is None]
    return 1 if failed or result["skipped"] else 0


if __name__ == "__main__":
    raise SystemExit(main())
