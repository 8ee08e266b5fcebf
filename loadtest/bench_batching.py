"""Issue 3's figures in one run: dynamic batching, a compute-bound model, the floor, streaming,
the cost of metrics, and the CPU thread layout. Every ratio is measured in this run.

    .venv/bin/python -m loadtest.bench_batching

Starts (and always stops) ortserve on model_repo/ with a bigger default max batch size, the bare
grpc.aio floor server, ortserve without metrics, ortserve on a temporary repository holding a
rapidocr-onnxruntime model, and two ortserves with different thread layouts. Prints each figure
next to its target and writes loadtest/results/batching.json. Comparisons between two servers
alternate them (A B B A ...) and compare medians, because this machine is small and shared.
"""

from __future__ import annotations

import argparse
import json
import shutil
import statistics
import sys
import tempfile
from collections.abc import Callable, Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from pathlib import Path

from loadtest import perf_analyzer, runner
from loadtest.report import render, table
from loadtest.report import write as write_report
from loadtest.servers import REPO_ROOT, Running, floor, ortserve, pinned, split_cores
from server.runtime.threads import available_cores

RESULTS_DIR = REPO_ROOT / "loadtest" / "results"
MODEL_REPO = REPO_ROOT / "model_repo"
# Auto-complete gives a batching ONNX model max_batch_size 4 (Triton's default), which caps every
# formed batch at 4: below the target of 8 at concurrency 64. Triton's own flag lifts it.
BIG_BATCH_FLAG = "--backend-config=onnxruntime,default-max-batch-size=64"
METRICS_OFF_FLAGS = ["--metrics-config", "histogram_latencies=false", "--allow-metrics=false"]
OCR_MODELS = {
    # name: (file in rapidocr_onnxruntime/models, --shape of its input without the batch dim)
    "rec": ("ch_PP-OCRv4_rec_infer.onnx", {"x": (3, 48, 320)}),
    "det": ("ch_PP-OCRv4_det_infer.onnx", {"x": (3, 320, 320)}),
}


@dataclass
class Figure:
    name: str
    measured: float | None
    target: str = ""  # e.g. ">= 8"; empty: reported, no target
    met: bool | None = None
    note: str = ""


@dataclass
class Bench:
    options: argparse.Namespace
    figures: list[Figure] = field(default_factory=list)
    details: dict[str, object] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)

    def add(self, name: str, measured: float | None, target: str = "", note: str = "") -> None:
        self.figures.append(Figure(name, measured, target, meets(measured, target), note))


def meets(value: float | None, target: str) -> bool | None:
    """``target`` is '>= x' or '< x'; None when there is no target or no value."""
    if not target or value is None:
        return None
    op, _, bound = target.partition(" ")
    return value >= float(bound) if op == ">=" else value < float(bound)


def median(values: Sequence[float | None]) -> float | None:
    present = [v for v in values if v is not None]
    return round(statistics.median(present), 1) if present else None


def ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


def alternate(measures: dict[str, Callable[[], float | None]], rounds: int) -> dict[str, list[float | None]]:
    """Each measure ``rounds`` times, the order reversed every other round (A B, B A, ...) so a
    drift in the machine's load does not favour whichever runs first."""
    results: dict[str, list[float | None]] = {name: [] for name in measures}
    names = list(measures)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            results[name].append(measures[name]())
    return results


# ---- load generators ---------------------------------------------------------------------------


def perf_throughput(bench: Bench, url: str, model: str, streaming: bool) -> float | None:
    """perf_analyzer at concurrency 16 (sync, or --streaming), inferences/s; None if it failed."""
    args = ["--concurrency-range", "16", "--measurement-interval", str(bench.options.pa_interval_ms)]
    # Stability 1000 %: always report after three windows (a shared machine rarely gives three within
    # 10 %, and a failed run gives no figure); the alternation and medians deal with the noise.
    args += ["--stability-percentage", "1000", "--max-trials", "3", *(["--streaming"] if streaming else [])]
    run = perf_analyzer.run(model, url, args, timeout_s=120.0)
    if run.returncode != 0 or not run.points:
        bench.errors.append(f"perf_analyzer {model} at {url}: {run.describe()[-1500:]}")
        return None
    return run.points[0].throughput


def load_test(
    bench: Bench, url: str, model: str, concurrency: Sequence[int], duration_s: float = 0.0, warmup_s: float = 0.0, **extra: object
) -> runner.RunReport:
    options = runner.RunOptions(
        url=url,
        model=model,
        concurrency=tuple(concurrency),
        duration_s=duration_s or bench.options.duration,
        warmup_s=warmup_s or bench.options.warmup,
        processes=bench.options.processes,
        **extra,  # type: ignore[arg-type]
    )
    result = runner.run(options)
    print(render(result), flush=True)
    return result


# ---- the figures ---------------------------------------------------------------------------------


def mlp_batching(bench: Bench, main: Running) -> None:
    """mlp at concurrency 1, 16, 64 with batching on, against the ceiling at each formed batch."""
    threads = main.default_intra_op_threads() or 1
    print(f"\n[mlp batching] ortserve {BIG_BATCH_FLAG}; ceiling with {threads} intra-op thread(s) (what ortserve gives mlp)")
    model_file = MODEL_REPO / "mlp" / "1" / "model.onnx"
    result = load_test(bench, main.grpc_url, "mlp", (1, 16, 64), ceiling_model_file=model_file, ceiling_threads=threads)
    bench.details["mlp_batching"] = asdict(result)
    written = write_report(result, RESULTS_DIR, "batching_mlp")  # its throughput-vs-p99 plot too
    bench.notes.append(f"mlp sweep files: {', '.join(str(p.relative_to(REPO_ROOT)) for p in written)}")
    for step in result.steps:
        c, s, level = step.client, step.server, int(step.level)
        bench.add(f"mlp c={level}: throughput infer/s", c.infer_per_s)
        bench.add(f"mlp c={level}: p50 / p99 ms", None, note=f"{fmt_ms(c.p50_us)} / {fmt_ms(c.p99_us)}")
        bench.add(f"mlp c={level}: average formed batch", s.avg_batch if s else None, ">= 8" if level == 64 else "")
        bench.add(f"mlp c={level}: ratio to raw ORT at batch {step.ceiling_batch}", step.ratio_to_ceiling)
        bench.add(f"mlp c={level}: ratio to raw ORT running the formed mix", step.ratio_to_mix_ceiling, note=busy_note(step))


def fmt_ms(us: float | None) -> str:
    return "-" if us is None else f"{us / 1e3:.2f}"


def ocr_model(bench: Bench, work: Path) -> None:
    """A compute-bound real model at concurrency 32 vs raw ORT at the batch size the server formed."""
    import rapidocr_onnxruntime

    filename, shapes = OCR_MODELS[bench.options.ocr_model]
    source = Path(rapidocr_onnxruntime.__path__[0]) / "models" / filename
    name = f"ocr_{bench.options.ocr_model}"
    repository = work / "ocr_repo"
    (repository / name / "1").mkdir(parents=True)
    shutil.copy(source, repository / name / "1" / "model.onnx")  # no config.pbtxt: auto-completed
    print(f"\n[compute-bound] {filename} served with no config.pbtxt, {BIG_BATCH_FLAG} (auto-complete would cap batches at 4)")
    with ortserve(repository, [BIG_BATCH_FLAG], "ortserve-ocr", RESULTS_DIR) as server:
        threads = server.default_intra_op_threads() or available_cores()
        result = load_test(
            bench,
            server.grpc_url,
            name,
            (32,),
            duration_s=bench.options.ocr_duration,
            warmup_s=bench.options.ocr_warmup,
            shapes=shapes,
            ceiling_model_file=source,
            ceiling_threads=threads,
            ceiling_seconds=bench.options.ocr_ceiling_seconds,
        )
    bench.details["compute_bound"] = asdict(result)
    step = result.steps[0]
    avg = step.server.avg_batch if step.server else None
    note = f"{filename} {shapes}, avg batch {avg}, {step.client.infer_per_s} vs {step.ceiling_infer_per_s} infer/s, {threads} thread(s)"
    bench.add(f"{name} c=32: ratio to raw ORT at batch {step.ceiling_batch}", step.ratio_to_ceiling, ">= 0.9", note)
    bench.add(f"{name} c=32: ratio to raw ORT running the formed mix", step.ratio_to_mix_ceiling, ">= 0.9", busy_note(step))


def busy_note(step: runner.StepResult) -> str:
    """The formed sizes (most executed first) and how busy the instances were: what explains a ratio."""
    if step.server is None:
        return ""
    sizes = sorted(step.server.batch_executions.items(), key=lambda item: -item[1])[:4]
    shown = ", ".join(f"{count}x{size}" for size, count in sizes)
    return f"executions {shown}{', ...' if len(step.server.batch_executions) > 4 else ''}; instances busy {step.server.busy_share}"


def floor_and_streaming(bench: Bench, main: Running, bare: Running) -> None:
    """simple vs the floor (unary), and simple/mlp over --streaming vs unary and vs the floor's
    streaming figure, all with perf_analyzer at concurrency 16."""
    print(f"\n[floor and streaming] perf_analyzer, concurrency 16, {bench.options.rounds} alternating round(s)")
    measures: dict[str, Callable[[], float | None]] = {}
    for model in ("simple", "mlp"):
        for server in (main, bare):
            for streaming in (False, True):
                if model == "mlp" and server is bare and not streaming:
                    continue  # not a figure the issue asks for
                label = f"{server.name} {model} {'streaming' if streaming else 'unary'}"
                measures[label] = lambda s=server, m=model, st=streaming: perf_throughput(bench, s.grpc_url, m, st)
    runs = alternate(measures, bench.options.rounds)
    bench.details["floor_and_streaming"] = runs
    got = {label: median(values) for label, values in runs.items()}
    print(table(["run", "median infer/s", "runs"], [[k, got[k], ", ".join(map(str, runs[k]))] for k in runs]))
    simple = f"{main.name} simple"
    bench.add("simple c=16 unary: ratio to the floor", ratio(got[f"{simple} unary"], got["floor simple unary"]), ">= 0.8")
    for model in ("simple", "mlp"):
        stream = got[f"{main.name} {model} streaming"]
        bench.add(f"{model} c=16 streaming: throughput infer/s", stream)
        bench.add(f"{model} c=16 streaming: ratio to ortserve unary", ratio(stream, got[f"{main.name} {model} unary"]))
        bench.add(f"{model} c=16 streaming: ratio to the floor's streaming", ratio(stream, got[f"floor {model} streaming"]), ">= 0.8")


def metrics_cost(bench: Bench) -> None:
    """Throughput with metrics and latency histograms on (the default) vs both off. Both servers run
    on one core and perf_analyzer on the others: a per-request cost of a few percent is lost in this
    machine's noise otherwise (unpinned runs here spread by 20 %, pinned ones by 2-7 %). The cost is
    the median over rounds of 1 - on/off, each pair measured back to back."""
    cores = split_cores()
    server_cpus, client_cpus = cores if cores else (None, None)
    rounds = bench.options.metrics_rounds
    flags = " ".join(METRICS_OFF_FLAGS)
    print(f"\n[metrics cost] perf_analyzer simple c=16 unary, default vs {flags}, {rounds} rounds, servers on CPUs {server_cpus}")
    with ExitStack() as stack:
        with pinned(server_cpus):
            on = stack.enter_context(ortserve(MODEL_REPO, [BIG_BATCH_FLAG], "ortserve-metrics-on", RESULTS_DIR))
            off = stack.enter_context(ortserve(MODEL_REPO, [BIG_BATCH_FLAG, *METRICS_OFF_FLAGS], "ortserve-metrics-off", RESULTS_DIR))
        with pinned(client_cpus):
            runs = alternate(
                {
                    "metrics on": lambda: perf_throughput(bench, on.grpc_url, "simple", False),
                    "metrics off": lambda: perf_throughput(bench, off.grpc_url, "simple", False),
                },
                rounds,
            )
    bench.details["metrics_cost"] = runs
    # Each round measures on and off back to back, so their ratio cancels most of the machine's drift.
    paired = [round(100 * (1 - a / b), 1) for a, b in zip(runs["metrics on"], runs["metrics off"]) if a and b]
    cost = median(paired)
    note = f"median of paired costs {paired} %; on {runs['metrics on']} vs off {runs['metrics off']} infer/s"
    bench.add("metrics on vs off: throughput cost %", cost, "< 3", note)
    spread = interquartile_range(paired)
    if spread is None or spread > 3:  # the pairs disagree by more than the effect sought: no verdict
        bench.figures[-1].met = None
        bench.figures[-1].note += f" (inconclusive: the paired costs' interquartile range is {spread} points, above the target)"


def interquartile_range(values: Sequence[float]) -> float | None:
    if len(values) < 2:
        return None
    low, _, high = statistics.quantiles(values, n=4)
    return round(high - low, 1)


def layout_repository(root: Path, instances: int, threads: int) -> Path:
    """model_repo's mlp with its instance count and intra-op threads set, batching up to 64."""
    repository = root / f"layout_{instances}x{threads}"
    (repository / "mlp" / "1").mkdir(parents=True)
    shutil.copy(MODEL_REPO / "mlp" / "1" / "model.onnx", repository / "mlp" / "1" / "model.onnx")
    (repository / "mlp" / "config.pbtxt").write_text(
        "max_batch_size: 64\n"
        "dynamic_batching { }\n"
        f"instance_group [ {{ kind: KIND_CPU, count: {instances} }} ]\n"
        f'parameters {{ key: "intra_op_thread_count" value: {{ string_value: "{threads}" }} }}\n'
    )
    return repository


def thread_layout(bench: Bench, work: Path) -> None:
    """mlp at concurrency 16: one instance with every core's thread vs two with half each."""
    cores = available_cores()
    layouts = {f"1 instance x {cores} threads": (1, cores), f"2 instances x {max(1, cores // 2)} threads": (2, max(1, cores // 2))}
    print(f"\n[thread layout] mlp c=16 on {cores} cores, {bench.options.rounds} alternating round(s)")
    with ExitStack() as stack:
        servers = {
            label: stack.enter_context(ortserve(layout_repository(work, n, t), [], f"ortserve-layout-{n}x{t}", RESULTS_DIR))
            for label, (n, t) in layouts.items()
        }
        reports: dict[str, list[runner.RunReport]] = {label: [] for label in layouts}

        def measure(label: str) -> float | None:
            result = load_test(bench, servers[label].grpc_url, "mlp", (16,))
            reports[label].append(result)
            return result.steps[0].client.infer_per_s

        runs = alternate({label: (lambda label=label: measure(label)) for label in layouts}, bench.options.rounds)
    bench.details["thread_layout"] = {label: [asdict(r) for r in results] for label, results in reports.items()}
    for label, results in reports.items():
        p99 = median([r.steps[0].client.p99_us for r in results])
        batch = median([r.steps[0].server.avg_batch if r.steps[0].server else None for r in results])
        bench.add(
            f"mlp c=16 {label}: throughput infer/s",
            median(runs[label]),
            note=f"runs {runs[label]}, p99 {fmt_ms(p99)} ms, avg batch {batch}",
        )


# ---- the run -------------------------------------------------------------------------------------


def run(options: argparse.Namespace) -> Bench:
    bench = Bench(options)
    bench.notes.append(f"model_repo/ is served with {BIG_BATCH_FLAG}: auto-complete's default max_batch_size 4 caps formed batches at 4")
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    sections = set(options.sections)
    with tempfile.TemporaryDirectory(prefix="bench-batching-") as tmp:
        work = Path(tmp)
        if sections & {"mlp", "floor"}:
            with ExitStack() as stack:
                main = stack.enter_context(ortserve(MODEL_REPO, [BIG_BATCH_FLAG], "ortserve-main", RESULTS_DIR))
                guarded(bench, "mlp", sections, lambda: mlp_batching(bench, main))
                if "floor" in sections:
                    bare = stack.enter_context(floor(RESULTS_DIR))
                    guarded(bench, "floor", sections, lambda: floor_and_streaming(bench, main, bare))
        guarded(bench, "metrics", sections, lambda: metrics_cost(bench))
        guarded(bench, "ocr", sections, lambda: ocr_model(bench, work))
        guarded(bench, "layout", sections, lambda: thread_layout(bench, work))
    return bench


def guarded(bench: Bench, section: str, chosen: set[str], body: Callable[[], None]) -> None:
    """Run a section if chosen; a failure is recorded and the other sections still run."""
    if section not in chosen:
        return
    try:
        body()
    except Exception as error:  # one broken figure must not lose the others
        bench.errors.append(f"{section}: {type(error).__name__}: {error}")
        print(f"\nsection {section} failed: {error}", file=sys.stderr, flush=True)


def summary(bench: Bench) -> str:
    rows = [[f.name, f.measured, f.target or "-", {True: "yes", False: "NO", None: "-"}[f.met], f.note] for f in bench.figures]
    return table(["figure", "measured", "target", "met", "note"], rows)


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_batching", description=__doc__.splitlines()[0])
    all_sections = ["mlp", "floor", "metrics", "ocr", "layout"]
    parser.add_argument("--sections", nargs="+", choices=all_sections, default=all_sections)
    parser.add_argument("--duration", type=float, default=5.0, help="load-tester seconds measured per step")
    parser.add_argument("--warmup", type=float, default=2.0, help="load-tester warm-up seconds per step")
    parser.add_argument("--processes", type=int, default=1, help="load-tester worker processes")
    parser.add_argument("--rounds", type=int, default=2, help="alternations for server-vs-server comparisons")
    parser.add_argument("--metrics-rounds", type=int, default=5, help="on/off pairs; the cost is their median")
    parser.add_argument("--pa-interval-ms", type=int, default=2000, help="perf_analyzer measurement window")
    parser.add_argument("--ocr-model", choices=sorted(OCR_MODELS), default="rec")
    parser.add_argument("--ocr-duration", type=float, default=15.0, help="measured seconds at concurrency 32")
    parser.add_argument("--ocr-warmup", type=float, default=5.0, help="enough for the batcher to reach steady state")
    parser.add_argument("--ocr-ceiling-seconds", type=float, default=5.0)
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "batching.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    bench = run(options)
    options.output.parent.mkdir(parents=True, exist_ok=True)
    settings = {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()}
    payload = {"settings": settings, "notes": bench.notes, "figures": [asdict(f) for f in bench.figures], "details": bench.details}
    options.output.write_text(json.dumps({**payload, "errors": bench.errors}, indent=2, default=str) + "\n")
    print("\n" + "\n".join(bench.notes) + "\n")
    print(summary(bench))
    for error in bench.errors:
        print(f"\nERROR {error}", file=sys.stderr)
    print(f"\nwrote {options.output}")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
