"""Issue 12's latency-target figures: `mlp` batched to a 20 ms p99 target with no hand-set delay.

    .venv/bin/python -m loadtest.bench_latency_target [--rounds 3] [--interval-ms 3000]

One ortserve serves three copies of model_repo's mlp (max_batch_size 64, one instance):
``mlp_target`` with ``ortserve.target_latency_p99_ms: 20`` and no max_queue_delay, ``mlp_nodelay``
with ``dynamic_batching {}`` (Triton's default delay of 0) and ``mlp_plain`` without dynamic
batching. perf_analyzer (gRPC, sync) drives each at concurrency 64 and 1, rounds interleaved
(A B, B A, ...), and the server's ModelStatistics before/after each run give the average formed
batch. Prints medians next to the targets: at c=64 an average batch >= 8 and a client p99 <= 20 ms;
at c=1 a p50 within 0.1 ms of mlp_plain's.
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import tempfile
import urllib.request
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from loadtest import perf_analyzer
from loadtest.report import table
from loadtest.server_stats import StatsReader, difference
from loadtest.servers import REPO_ROOT, free_port, ortserve

MODEL = REPO_ROOT / "model_repo" / "mlp" / "1" / "model.onnx"
TARGET_PARAMETER = 'parameters { key: "ortserve.target_latency_p99_ms" value { string_value: "20" } }'
CONFIGS = {
    "mlp_target": f"max_batch_size: 64\ndynamic_batching {{ }}\n{TARGET_PARAMETER}",
    "mlp_nodelay": "max_batch_size: 64\ndynamic_batching { }",
    "mlp_plain": "max_batch_size: 64",
}


@dataclass
class Sample:
    throughput: float
    p50_ms: float
    p99_ms: float
    avg_batch: float | None
    delay_us: float | None  # the queue delay in force when the run ended


def build_repository(root: Path) -> None:
    for name, config in CONFIGS.items():
        (root / name / "1").mkdir(parents=True)
        shutil.copy(MODEL, root / name / "1" / "model.onnx")
        (root / name / "config.pbtxt").write_text(config + "\n")


def measure(url: str, metrics_url: str, model: str, concurrency: int, interval_ms: int) -> Sample | None:
    reader = StatsReader(url, model)
    before = reader.read()
    args = ["--concurrency-range", str(concurrency), "--measurement-interval", str(interval_ms)]
    # Stability 1000 %: always report after three windows; the interleaving and medians handle the noise.
    run = perf_analyzer.run(model, url, [*args, "--stability-percentage", "1000", "--max-trials", "3"], timeout_s=180.0)
    after = reader.read()
    reader.close()
    if run.returncode != 0 or not run.points:
        print(f"perf_analyzer failed for {model} at c={concurrency}:\n{run.describe()[-1500:]}")
        return None
    point = run.points[0]
    batch = difference(before, after, 0).avg_batch if before and after else None
    return Sample(point.throughput, point.p50_us / 1000, point.p99_us / 1000, batch, queue_delay_us(metrics_url, model))


def queue_delay_us(metrics_url: str, model: str) -> float | None:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        for line in response.read().decode().splitlines():
            if line.startswith("ortserve_batch_queue_delay_us{") and f'model="{model}"' in line:
                return float(line.rpartition(" ")[2])
    return None


def interleaved(measures: dict[str, Callable[[], Sample | None]], rounds: int) -> dict[str, list[Sample]]:
    results: dict[str, list[Sample]] = {name: [] for name in measures}
    names = list(measures)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            sample = measures[name]()
            if sample is not None:
                results[name].append(sample)
    return results


def median(samples: list[Sample], attribute: str) -> float | None:
    values = [getattr(s, attribute) for s in samples if getattr(s, attribute) is not None]
    return round(statistics.median(values), 3) if values else None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--interval-ms", type=int, default=3000, help="perf_analyzer measurement window")
    options = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-latency-target-") as tmp:
        root = Path(tmp)
        build_repository(root / "repo")
        metrics_port = free_port()  # given last, it wins over the helper's own --metrics-port
        with ortserve(root / "repo", ["--metrics-port", str(metrics_port)], "latency-target", root) as server:
            rows = []
            for concurrency, baseline in ((64, "mlp_nodelay"), (1, "mlp_plain")):
                metrics_url = f"http://127.0.0.1:{metrics_port}/metrics"
                measures = {
                    name: _bound(server.grpc_url, metrics_url, name, concurrency, options.interval_ms) for name in ("mlp_target", baseline)
                }
                results = interleaved(measures, options.rounds)
                for name, samples in results.items():
                    rows.append([f"{name} c={concurrency}", median(samples, "throughput"), median(samples, "p50_ms")])
                    rows[-1] += [median(samples, "p99_ms"), median(samples, "avg_batch"), median(samples, "delay_us"), len(samples)]
                summarize(concurrency, results["mlp_target"], results[baseline])
            print(table(["run", "infer/s", "p50 ms", "p99 ms", "avg batch", "delay µs", "runs"], rows))


def _bound(url: str, metrics_url: str, model: str, concurrency: int, interval_ms: int) -> Callable[[], Sample | None]:
    return lambda: measure(url, metrics_url, model, concurrency, interval_ms)


def summarize(concurrency: int, target: list[Sample], baseline: list[Sample]) -> None:
    if concurrency > 1:
        batch, p99 = median(target, "avg_batch"), median(target, "p99_ms")
        print(f"c={concurrency}: average formed batch {batch} (target >= 8): {_met(batch, lambda v: v >= 8)}")
        print(f"c={concurrency}: client p99 {p99} ms (target <= 20 ms): {_met(p99, lambda v: v <= 20)}")
        ratio = _ratio(median(target, "throughput"), median(baseline, "throughput"))
        print(f"c={concurrency}: throughput vs delay 0: {ratio}x")
        return
    ours, plain = median(target, "p50_ms"), median(baseline, "p50_ms")
    gap = round(ours - plain, 3) if ours is not None and plain is not None else None
    print(f"c=1: p50 {ours} ms vs {plain} ms without batching, gap {gap} ms (target <= 0.1 ms): {_met(gap, lambda v: v <= 0.1)}")


def _met(value: float | None, check: Callable[[float], bool]) -> str:
    return "n/a" if value is None else ("met" if check(value) else "NOT met")


def _ratio(a: float | None, b: float | None) -> float | None:
    return round(a / b, 3) if a and b else None


if __name__ == "__main__":
    main()
