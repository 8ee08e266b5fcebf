"""One load-test run: inspect the model, run every step on the worker pool, read the server's
statistics around each measurement window, then measure the raw-ORT ceiling at the batch sizes the
server formed (after the load, so the ceiling has the machine to itself)."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from pathlib import Path

import grpc

from loadtest import ceiling
from loadtest.inputs import InputSpec, build_request, request_shapes, rows_per_request
from loadtest.pool import WorkerPool
from loadtest.raw_ort import CeilingResult
from loadtest.samples import StepSummary, summarize
from loadtest.server_stats import ServerStepStats, StatsReader, StatsSnapshot, difference
from loadtest.worker import CHANNEL_OPTIONS, StepPlan, WorkerConfig
from server.proto import grpc_service_pb2 as pb
from server.proto import grpc_service_pb2_grpc as pb_grpc

# A worker process busier than this share of a core may be what limits the step, not the server.
CLIENT_BOUND_SHARE = 0.8


@dataclass(frozen=True)
class RunOptions:
    url: str
    model: str
    version: str = ""
    concurrency: tuple[int, ...] = ()
    rates: tuple[float, ...] = ()
    duration_s: float = 5.0
    warmup_s: float = 1.0
    batch: int = 1
    shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    streaming: bool = False
    streams: int = 1  # per worker process
    processes: int = 1
    cpus: tuple[int, ...] = ()  # pin the worker processes (keep the client off the server's cores)
    string_length: int = 16
    request_timeout_s: float = 60.0
    drain_s: float = 10.0
    max_in_flight: int = 10_000
    poisson: bool = False
    ceiling_model_file: Path | None = None
    ceiling_threads: int = 1
    ceiling_seconds: float = 3.0


@dataclass(frozen=True)
class Target:
    """The model as the load tester will drive it."""

    url: str
    model: str
    version: str
    max_batch_size: int | None  # None: the server offers no ModelConfig
    batching: bool
    inputs: list[InputSpec]
    rows_per_request: int
    streaming: bool
    processes: int


@dataclass
class StepResult:
    mode: str  # "concurrency" (closed loop) or "rate" (open loop)
    level: float  # the concurrency, or the target requests/s
    client: StepSummary
    server: ServerStepStats | None
    achieved_ratio: float | None = None  # rate mode: achieved / target requests per second
    ceiling_batch: int | None = None
    ceiling_infer_per_s: float | None = None
    ratio_to_ceiling: float | None = None
    ceiling_mix_infer_per_s: float | None = None  # raw ORT running the very batch sizes the server formed
    ratio_to_mix_ceiling: float | None = None


@dataclass
class RunReport:
    target: Target
    steps: list[StepResult]
    ceilings: list[CeilingResult] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)
    statistics: str = "available"  # or why the server gave none


def inspect(options: RunOptions) -> Target:
    """Read ModelMetadata (and ModelConfig, for max_batch_size) and decide each input's shape."""
    with grpc.insecure_channel(options.url, options=CHANNEL_OPTIONS) as channel:
        stub = pb_grpc.GRPCInferenceServiceStub(channel)
        metadata = stub.ModelMetadata(pb.ModelMetadataRequest(name=options.model, version=options.version), timeout=30.0)
        try:
            config = stub.ModelConfig(pb.ModelConfigRequest(name=options.model, version=options.version), timeout=30.0).config
            max_batch: int | None = config.max_batch_size
        except grpc.RpcError:
            max_batch = None
    # Without a config, a leading -1 on every input is taken as the batch dim.
    batching = max_batch > 0 if max_batch is not None else all(t.shape and t.shape[0] == -1 for t in metadata.inputs)
    specs = request_shapes(metadata, batching, options.batch, options.shapes)
    return Target(
        url=options.url,
        model=options.model,
        version=options.version,
        max_batch_size=max_batch,
        batching=batching,
        inputs=specs,
        rows_per_request=rows_per_request(specs, batching),
        streaming=options.streaming,
        processes=options.processes,
    )


def run(options: RunOptions) -> RunReport:
    """Every step, then the ceiling. Blocks; the worker processes are stopped whatever happens.

    Workers are started with multiprocessing's "spawn", which imports the caller's main module
    again: a script that calls this needs the ``if __name__ == "__main__":`` guard.
    """
    target = inspect(options)
    report = RunReport(target, [], warnings=target_warnings(target, options))
    request = build_request(options.model, options.version, target.inputs, string_length=options.string_length)
    config = WorkerConfig(
        options.url, request, options.streaming, options.streams, options.request_timeout_s, options.drain_s, options.cpus
    )
    template = StepPlan(0, options.warmup_s, options.duration_s, 0, 0.0, 0.0, options.poisson, options.max_in_flight, seed=1)
    stats = StatsReader(options.url, options.model)
    try:
        with WorkerPool(options.processes, config) as pool:
            levels = [("concurrency", float(c)) for c in options.concurrency] + [("rate", r) for r in options.rates]
            for mode, level in levels:
                step = measure_step(pool, stats, template, mode, level, target.rows_per_request)
                report.steps.append(step)
                report.warnings += step_warnings(step)
    finally:
        stats.close()
    if not stats.available:
        report.statistics = f"unavailable ({stats.unavailable_reason})"
    if options.ceiling_model_file is not None:
        attach_ceiling(report, options)
    return report


def measure_step(pool: WorkerPool, stats: StatsReader, template: StepPlan, mode: str, level: float, rows: int) -> StepResult:
    """One step; the server's statistics are read at the window's start and end (monotonic clock,
    shared with the workers)."""
    label = f"concurrency {int(level)}" if mode == "concurrency" else f"rate {level:g}/s"
    print(f"  step: {label} ...", flush=True)
    edges: list[StatsSnapshot | None] = []

    def bracket(plan: StepPlan) -> None:
        _sleep_until(plan.window_start_ns)
        edges.append(stats.read())
        _sleep_until(plan.window_end_ns)
        edges.append(stats.read())

    if mode == "concurrency":
        _, samples = pool.run_step(template, concurrency=int(level), on_started=bracket)
    else:
        _, samples = pool.run_step(template, rate=level, on_started=bracket)
    client = summarize(samples, template.duration_s, rows)
    before, after = edges  # bracket has run to the end once run_step returns
    server = difference(before, after, template.duration_s) if before is not None and after is not None else None
    achieved = round(client.throughput_rps / level, 3) if mode == "rate" and level > 0 else None
    return StepResult(mode, level, client, server, achieved)


def _sleep_until(deadline_ns: int) -> None:
    delay = deadline_ns - time.monotonic_ns()
    if delay > 0:
        time.sleep(delay / 1e9)


def attach_ceiling(report: RunReport, options: RunOptions) -> None:
    """Measure the ceiling at each step's formed batch (its average rounded to the nearest integer;
    the rows per request when the server reports none) and fill in the ratios. When the server
    reports the batch sizes it formed, also the ceiling for that exact mix: an average hides a
    bimodal mix (say batches of 31 and of 1), whose raw cost is not that of the average size."""
    assert options.ceiling_model_file is not None
    sizes: set[int] = set()
    for step in report.steps:
        formed = step.server.avg_batch if step.server and step.server.avg_batch else report.target.rows_per_request
        step.ceiling_batch = max(1, round(formed))
        sizes |= {step.ceiling_batch} | ceiling.mix_sizes(step.server.batch_executions if step.server else {})
    print(f"  ceiling: raw InferenceSession.run at batch {', '.join(map(str, sorted(sizes)))} ...", flush=True)
    shapes = dict(options.shapes)
    report.ceilings = ceiling.measure_batches(
        options.ceiling_model_file, sorted(sizes), options.ceiling_threads, options.ceiling_seconds, shapes
    )
    by_batch = {c.batch: c.throughput for c in report.ceilings}
    for step in report.steps:
        step.ceiling_infer_per_s = by_batch.get(step.ceiling_batch or 0)
        step.ratio_to_ceiling = _ratio(step.client.infer_per_s, step.ceiling_infer_per_s)
        if step.server and step.server.batch_executions:
            step.ceiling_mix_infer_per_s = ceiling.mix_throughput(step.server.batch_executions, by_batch)
            step.ratio_to_mix_ceiling = _ratio(step.client.infer_per_s, step.ceiling_mix_infer_per_s)


def _ratio(value: float, reference: float | None) -> float | None:
    return round(value / reference, 3) if reference else None


def target_warnings(target: Target, options: RunOptions) -> list[str]:
    warnings = []
    if target.max_batch_size is not None and target.batching and options.batch > target.max_batch_size:
        warnings.append(f"--batch {options.batch} exceeds the model's max_batch_size {target.max_batch_size}: the server will reject")
    if not target.batching and options.batch != 1:
        warnings.append("the model does not batch (max_batch_size 0): --batch is ignored, --shape gives full shapes")
    return warnings


def step_warnings(step: StepResult) -> list[str]:
    label = f"{step.mode} {step.level:g}"
    warnings = []
    if step.client.client_cpu_max_process >= CLIENT_BOUND_SHARE:
        warnings.append(
            f"{label}: a worker used {step.client.client_cpu_max_process:.0%} of a core; the client may be the bottleneck (--processes)"
        )
    if step.client.skipped:
        warnings.append(f"{label}: {step.client.skipped} scheduled requests were not sent (--max-in-flight reached)")
    if step.achieved_ratio is not None and step.achieved_ratio < 0.95:
        warnings.append(f"{label}: achieved {step.achieved_ratio:.0%} of the target rate")
    return warnings
