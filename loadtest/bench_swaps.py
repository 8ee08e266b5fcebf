"""Live-repository figures: version swaps under load in poll mode, and memory after unload.

1. Poll mode (--repository-poll-secs 1, by default): ``add_constant`` model under closed-loop
   gRPC load at concurrency 32 (scripts/load_client.py), then ``--swaps`` consecutive new version
   directories, each staged under a name the server ignores and renamed into place after
   ``--gap-secs`` of steady traffic plus a random part of the poll period; after each, wait for
   the first response from the new version. Reports the time from the rename to that response
   (median, min, max), failed requests over the whole run, and latency p50/p99 of requests in a
   swap window (0.5 s before the new version's first answer to 1 s after: load, warmup, swap,
   drain and free of the old one) vs those between the windows. Steady and swap traffic
   interleave, so both see the same machine (this one is shared and noisy).
2. Explicit mode, no models at startup: load an ~70 MB MLP, run one request, unload; the
   server's VmRSS (/proc/<pid>/status) before load, after load, after unload, ``--cycles`` times.

    .venv/bin/python -m loadtest.bench_swaps [--swaps 10] [--concurrency 32] [--cycles 3]

Prints a table and writes loadtest/results/swaps.json. Servers and logs: loadtest/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from scripts import onnx_models
from scripts.harness import REPO_ROOT, ServerProcess
from scripts.load_client import LoadClient, Outcome, failures, percentile_ms

RESULTS_DIR = REPO_ROOT / "loadtest" / "results"
SWAP_CONFIG = "max_batch_size: 8\ninstance_group [ { kind: KIND_CPU, count: 1 } ]\nversion_policy: { latest: { num_versions: 1 } }\n"
BIG_WIDTHS = (256, 4096, 4096, 10)  # ~70 MB of FP32 weights
# A swap window: from shortly before the new version's first answer (its load and warmup) until
# the old version has drained and been freed. Requests outside every window are "steady".
SWAP_BEFORE_SECS = 0.5
SWAP_AFTER_SECS = 1.0


@dataclass
class SwapFigures:
    poll_secs: float
    concurrency: int
    swaps: int
    first_served_after_secs: list[float]
    requests: int  # from the first swap's steady gap to the last old version's drain
    failed: int
    steady_requests: int  # outside every swap window
    steady_p50_ms: float
    steady_p99_ms: float
    swap_requests: int  # overlapping a swap window
    swaps_p50_ms: float
    swaps_p99_ms: float


@dataclass
class RssCycle:
    cycle: int
    before_load_mb: float
    after_load_mb: float
    after_unload_mb: float


def stage_version(model_dir: Path, version: int, constant: float) -> Path:
    staging = model_dir / f"incoming-{version}"
    staging.mkdir()
    onnx_models.save(onnx_models.add_constant("FP32", ["batch", 4], constant), str(staging / "model.onnx"))
    return staging


def measure_swaps(work: Path, poll_secs: float, concurrency: int, swaps: int, gap_secs: float) -> SwapFigures:
    repository = work / "swap_repo"
    model_dir = repository / "swapped"
    model_dir.mkdir(parents=True)
    (model_dir / "config.pbtxt").write_text(SWAP_CONFIG)
    os.rename(stage_version(model_dir, 1, 1.0), model_dir / "1")
    args = ["--model-control-mode", "poll", "--repository-poll-secs", str(poll_secs)]
    server = ServerProcess([repository], args, log_path=RESULTS_DIR / "swaps_server.log")
    max_secs = swaps * (gap_secs + 2 * poll_secs + 10) + 30
    with server:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 60)
        with LoadClient(server.grpc_url, "swapped", concurrency=concurrency, max_secs=max_secs) as load:
            load.wait_for(lambda o: o.ok)
            start = time.monotonic()
            first_served: list[tuple[float, float]] = []  # (directory renamed into place, first answer from it)
            phase = random.Random()
            for version in range(2, swaps + 2):
                staging = stage_version(model_dir, version, float(version))
                time.sleep(gap_secs + phase.uniform(0, poll_secs))  # steady traffic; a random poll phase
                appeared = time.monotonic()
                os.rename(staging, model_dir / str(version))
                first = load.wait_for(lambda o, v=str(version): o.version == v, since=appeared, timeout=poll_secs + 30)
                first_served.append((appeared, first.end))
            time.sleep(SWAP_AFTER_SECS)
            outcomes = window(load.stop(), start, time.monotonic())
    near = [(served - SWAP_BEFORE_SECS, served + SWAP_AFTER_SECS) for _, served in first_served]
    during = [o for o in outcomes if any(o.start < high and o.end > low for low, high in near)]
    steady = [o for o in outcomes if not any(o.start < high and o.end > low for low, high in near)]
    return SwapFigures(
        poll_secs=poll_secs,
        concurrency=concurrency,
        swaps=swaps,
        first_served_after_secs=[round(served - appeared, 3) for appeared, served in first_served],
        requests=len(outcomes),
        failed=len(failures(outcomes)),
        steady_requests=len(steady),
        steady_p50_ms=round(percentile_ms(steady, 50), 2),
        steady_p99_ms=round(percentile_ms(steady, 99), 2),
        swap_requests=len(during),
        swaps_p50_ms=round(percentile_ms(during, 50), 2),
        swaps_p99_ms=round(percentile_ms(during, 99), 2),
    )


def window(outcomes: list[Outcome], start: float, end: float) -> list[Outcome]:
    return [o for o in outcomes if start <= o.start < end]


def rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    raise RuntimeError("no VmRSS")


def measure_rss(work: Path, cycles: int) -> tuple[float, list[RssCycle]]:
    repository = work / "rss_repo"
    version_dir = repository / "big" / "1"
    version_dir.mkdir(parents=True)
    onnx_models.save(onnx_models.mlp(BIG_WIDTHS), str(version_dir / "model.onnx"))
    model_mb = (version_dir / "model.onnx").stat().st_size / 2**20
    server = ServerProcess([repository], ["--model-control-mode", "explicit"], log_path=RESULTS_DIR / "rss_server.log")
    rows: list[RssCycle] = []
    with server, grpcclient.InferenceServerClient(server.grpc_url) as client:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 60)
        assert server.process is not None
        pid = server.process.pid
        item = grpcclient.InferInput("input", [1, BIG_WIDTHS[0]], "FP32")
        item.set_data_from_numpy(np.ones((1, BIG_WIDTHS[0]), np.float32))
        for cycle in range(1, cycles + 1):
            time.sleep(0.5)
            before = rss_mb(pid)
            client.load_model("big")
            client.infer("big", [item])
            time.sleep(0.5)
            loaded = rss_mb(pid)
            client.unload_model("big")  # returns once drained and freed
            time.sleep(0.5)
            rows.append(RssCycle(cycle, round(before, 1), round(loaded, 1), round(rss_mb(pid), 1)))
    return round(model_mb, 1), rows


def render(swaps: SwapFigures, model_mb: float, rss: list[RssCycle]) -> str:
    first = swaps.first_served_after_secs
    lines = [
        "| figure | value |",
        "|---|---|",
        f"| new version dir → first request served by it (poll {swaps.poll_secs:g} s, {len(first)} swaps) | "
        f"median {statistics.median(first):.2f} s (min {min(first):.2f}, max {max(first):.2f}) |",
        f"| failed requests during {swaps.swaps} consecutive swaps, concurrency {swaps.concurrency} | {swaps.failed} of {swaps.requests} |",
        f"| latency between swaps ({swaps.steady_requests} requests) | "
        f"p50 {swaps.steady_p50_ms:.1f} ms, p99 {swaps.steady_p99_ms:.1f} ms |",
        f"| latency in swap windows ({swaps.swap_requests} requests) | p50 {swaps.swaps_p50_ms:.1f} ms, p99 {swaps.swaps_p99_ms:.1f} ms |",
        "",
        f"RSS of the server process, explicit mode, model of {model_mb:.1f} MB (mlp {BIG_WIDTHS}):",
        "",
        "| cycle | before load | after load + 1 request | after unload | unload - before |",
        "|---|---|---|---|---|",
    ]
    lines += [
        f"| {r.cycle} | {r.before_load_mb:.1f} MB | {r.after_load_mb:.1f} MB | {r.after_unload_mb:.1f} MB | "
        f"{r.after_unload_mb - r.before_load_mb:+.1f} MB |"
        for r in rss
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--poll-secs", type=float, default=1.0)
    parser.add_argument("--concurrency", type=int, default=32)
    parser.add_argument("--swaps", type=int, default=10)
    parser.add_argument("--gap-secs", type=float, default=1.5, help="steady traffic before each swap")
    parser.add_argument("--cycles", type=int, default=3)
    args = parser.parse_args(argv)
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    started_load = os.getloadavg()[0]
    with tempfile.TemporaryDirectory(prefix="bench-swaps-") as work:
        swaps = measure_swaps(Path(work), args.poll_secs, args.concurrency, args.swaps, args.gap_secs)
        model_mb, rss = measure_rss(Path(work), args.cycles)
    load_average = (round(started_load, 2), round(os.getloadavg()[0], 2))
    print(render(swaps, model_mb, rss))
    print(f"\nmachine: {os.cpu_count()} CPUs, 1-min load average {load_average[0]} at start, {load_average[1]} at the end")
    result = {
        "swaps": asdict(swaps),
        "rss": {"model_mb": model_mb, "cycles": [asdict(r) for r in rss]},
        "load_average_start_end": load_average,
    }
    (RESULTS_DIR / "swaps.json").write_text(json.dumps(result, indent=2) + "\n")
    return 1 if swaps.failed else 0


if __name__ == "__main__":
    sys.exit(main())
