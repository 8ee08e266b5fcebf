"""ortserve in one process vs ``--workers 2`` vs the bare grpc.aio floor, and ONNX Runtime's threads.

Starts, on free 127.0.0.1 ports: ortserve on model_repo/ (the default), ortserve --workers 2 and
loadtest.floor_server; drives them with Triton's perf_analyzer on `simple` and `mlp` at each
concurrency, unary and --streaming, the servers interleaved case by case (so a noisy neighbour
hits all three alike). Prints throughput, p50/p99, the server's CPU time per request (its whole
process tree, frontends included; from /proc and its statistics) and the ratios to the floor.

Then `mlp` at concurrency 1 with three thread plans: one intra-op thread per session (what the
2-core machine gave each instance before), the default (every session may use every core, idle
pools sleep) and ONNX Runtime's global pool (--backend-config=onnxruntime,enable-global-threadpool=true).

    .venv/bin/python -m loadtest.bench_workers                  # ~6 minutes on 2 cores
    .venv/bin/python -m loadtest.bench_workers --rounds 3 --concurrency 1 16
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import urllib.request
from collections.abc import Sequence
from contextlib import ExitStack
from dataclasses import asdict, dataclass
from pathlib import Path

from loadtest import perf_analyzer, servers
from loadtest.bench_foundation import machine, ratio, table

REPO_ROOT = Path(__file__).resolve().parent.parent
RESULTS_DIR = REPO_ROOT / "loadtest" / "results"
MODELS = ("simple", "mlp")
# Issue 12's target on this machine: the default at least 0.8x the floor, unary, c=16.
TARGET_RATIO_C16 = 0.8
SERVERS = {"default": [], "workers2": ["--workers", "2"]}
THREAD_PLANS = {
    "1 thread/session": ["--backend-config=onnxruntime,intra_op_thread_count=1"],
    "default (every core, no spin)": [],
    "global pool": ["--backend-config=onnxruntime,enable-global-threadpool=true"],
}


@dataclass(frozen=True)
class Row:
    server: str
    model: str
    mode: str  # unary | streaming
    concurrency: int
    round: int
    throughput: float | None  # None: the run failed
    p50_us: float | None
    p99_us: float | None
    cpu_us_per_request: float | None  # None for the floor (it keeps no statistics)


def process_tree_cpu_secs(pid: int) -> float:
    """User+system CPU of ``pid`` and its living descendants, from /proc."""
    total, pending = 0.0, [pid]
    ticks = os.sysconf("SC_CLK_TCK")
    while pending:
        current = pending.pop()
        try:
            fields = Path(f"/proc/{current}/stat").read_text().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / ticks
            for task in Path(f"/proc/{current}/task").iterdir():
                pending += [int(child) for child in (task / "children").read_text().split()]
        except (FileNotFoundError, ProcessLookupError):
            continue
    return total


def successes(http_url: str | None, model: str) -> int | None:
    if http_url is None:
        return None
    with urllib.request.urlopen(f"http://{http_url}/v2/models/{model}/stats", timeout=10) as answer:
        stats = json.load(answer)["model_stats"]
    return sum(int(version["inference_stats"]["success"]["count"]) for version in stats)


def perf_args(mode: str, concurrency: int, options: argparse.Namespace) -> list[str]:
    args = ["--concurrency-range", str(concurrency), "--measurement-interval", str(options.measurement_interval_ms)]
    args += ["--stability-percentage", "1000", "--max-trials", str(options.max_trials)]
    return [*args, "--streaming"] if mode == "streaming" else args


def measure(
    name: str,
    running: servers.Running,
    model: str,
    mode: str,
    concurrency: int,
    number: int,
    options: argparse.Namespace,
    errors: list[str],
) -> Row:
    print(f"  round {number} {model} {mode} c={concurrency} {name} ...", flush=True)
    cpu_before = process_tree_cpu_secs(running.pid) if running.pid else 0.0
    count_before = successes(running.http_url, model)
    run = perf_analyzer.run(model, running.grpc_url, perf_args(mode, concurrency, options), options.run_timeout_s)
    count_after = successes(running.http_url, model)
    cpu = process_tree_cpu_secs(running.pid) - cpu_before if running.pid else 0.0
    per_request = None
    if count_before is not None and count_after is not None and count_after > count_before:
        per_request = round(cpu * 1e6 / (count_after - count_before), 1)
    if run.returncode != 0 or not run.points:
        errors.append(f"{name}/{model}/{mode}/c{concurrency}: {run.describe()[-1500:]}")
        return Row(name, model, mode, concurrency, number, None, None, None, per_request)
    point = run.points[-1]
    return Row(name, model, mode, concurrency, number, point.throughput, point.p50_us, point.p99_us, per_request)


def median(values: list[float]) -> float | None:
    ordered = sorted(values)
    return ordered[len(ordered) // 2] if ordered else None


def summary(rows: list[Row], server: str, model: str, mode: str, concurrency: int) -> Row | None:
    """The median of a case's rounds (throughput, latencies, CPU each on its own)."""
    found = [r for r in rows if (r.server, r.model, r.mode, r.concurrency) == (server, model, mode, concurrency)]
    if not found:
        return None

    def mid(values: list[float | None]) -> float | None:
        return median([v for v in values if v is not None])

    return Row(
        server,
        model,
        mode,
        concurrency,
        len(found),
        mid([r.throughput for r in found]),
        mid([r.p50_us for r in found]),
        mid([r.p99_us for r in found]),
        mid([r.cpu_us_per_request for r in found]),
    )


def comparison_table(rows: list[Row], options: argparse.Namespace) -> tuple[str, list[dict[str, object]]]:
    lines, compared = [], []
    for model in MODELS:
        for mode in options.modes:
            for concurrency in options.concurrency:
                floor = summary(rows, "floor", model, mode, concurrency)
                for name in ("floor", *SERVERS):
                    row = summary(rows, name, model, mode, concurrency)
                    if row is None:
                        continue
                    versus = ratio(row.throughput, floor.throughput if floor else None)
                    cpu = "n/a" if name == "floor" else row.cpu_us_per_request  # the floor keeps no statistics
                    lines.append([model, mode, concurrency, name, row.throughput, row.p50_us, row.p99_us, cpu, versus])
                    compared.append({**asdict(row), "throughput_ratio_vs_floor": versus})
    headers = ["model", "mode", "c", "server", "throughput/s", "p50 µs", "p99 µs", "CPU µs/req", "x floor"]
    return table(headers, lines), compared


def workers_ratios(rows: list[Row], options: argparse.Namespace) -> list[str]:
    lines = []
    for model in MODELS:
        for mode in options.modes:
            for concurrency in options.concurrency:
                one, two = summary(rows, "default", model, mode, concurrency), summary(rows, "workers2", model, mode, concurrency)
                if one and two:
                    lines.append(
                        f"  {model} {mode} c={concurrency}: throughput {ratio(two.throughput, one.throughput)}x, "
                        f"p50 {ratio(two.p50_us, one.p50_us)}x, CPU/request {ratio(two.cpu_us_per_request, one.cpu_us_per_request)}x"
                    )
    return lines


def run_servers(options: argparse.Namespace, errors: list[str]) -> list[Row]:
    rows: list[Row] = []
    with ExitStack() as stack:
        running = {
            name: stack.enter_context(servers.ortserve(REPO_ROOT / "model_repo", args, name, RESULTS_DIR)) for name, args in SERVERS.items()
        }
        running["floor"] = stack.enter_context(servers.floor(RESULTS_DIR))
        for number in range(1, options.rounds + 1):
            for model in MODELS:
                for mode in options.modes:
                    for concurrency in options.concurrency:
                        for name in ("floor", *SERVERS):
                            rows.append(measure(name, running[name], model, mode, concurrency, number, options, errors))
    return rows


def run_thread_plans(options: argparse.Namespace, errors: list[str]) -> list[Row]:
    rows: list[Row] = []
    with ExitStack() as stack:
        running = {
            name: stack.enter_context(servers.ortserve(REPO_ROOT / "model_repo", args, f"threads-{index}", RESULTS_DIR))
            for index, (name, args) in enumerate(THREAD_PLANS.items())
        }
        for number in range(1, options.rounds + 1):
            for name, server in running.items():
                rows.append(measure(name, server, "mlp", "unary", 1, number, options, errors))
    return rows


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_workers", description=__doc__.splitlines()[0])
    parser.add_argument("--concurrency", type=int, nargs="+", default=[1, 16, 64])
    parser.add_argument("--modes", nargs="+", choices=["unary", "streaming"], default=["unary", "streaming"])
    parser.add_argument("--rounds", type=int, default=1, help="interleaved rounds; the table shows each case's median")
    parser.add_argument("--measurement-interval-ms", type=int, default=2000)
    parser.add_argument("--max-trials", type=int, default=3)
    parser.add_argument("--run-timeout-s", type=float, default=120.0, help="bound on each perf_analyzer run")
    parser.add_argument("--skip-threads", action="store_true", help="leave out the thread-plan comparison")
    parser.add_argument("--output", type=Path, default=RESULTS_DIR / "workers.json")
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    options = parse_args(argv)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    errors: list[str] = []
    rows = run_servers(options, errors)
    thread_rows = [] if options.skip_threads else run_thread_plans(options, errors)
    figures, compared = comparison_table(rows, options)
    print("\n" + figures)
    print("\n--workers 2 / default (medians):\n" + "\n".join(workers_ratios(rows, options)))
    target = next(
        (c for c in compared if (c["model"], c["mode"], c["concurrency"], c["server"]) == ("simple", "unary", 16, "default")), None
    )
    if target is not None:
        print(f"\ndefault / floor, simple unary c=16: {target['throughput_ratio_vs_floor']} (target >= {TARGET_RATIO_C16})")
    plans = [summary(thread_rows, name, "mlp", "unary", 1) for name in THREAD_PLANS]
    if thread_rows:
        lines = [[p.server, p.p50_us, p.p99_us, p.throughput, p.cpu_us_per_request] for p in plans if p is not None]
        print("\nmlp, unary, c=1, by thread plan:\n" + table(["threads", "p50 µs", "p99 µs", "throughput/s", "CPU µs/req"], lines))
    result = {
        "machine": machine(),
        "settings": {k: str(v) if isinstance(v, Path) else v for k, v in vars(options).items()},
        "rows": [asdict(r) for r in rows],
        "comparisons": compared,
        "thread_plans": [asdict(r) for r in thread_rows],
        "errors": errors,
    }
    options.output.write_text(json.dumps(result, indent=2) + "\n")
    for error in errors:
        print(f"\nERROR {error}", file=sys.stderr)
    print(f"\nwrote {options.output}")
    return 1 if errors else 0


if __name__ == "__main__":
    raise SystemExit(main())
