"""The load tester against a real ortserve: its CLI end to end, and its agreement with perf_analyzer.

Agreement: the same server, model and concurrency, driven alternately by our load tester and by
Triton's perf_analyzer (A B, B A, ... five rounds), must give median throughputs within 10 % of each other.

Why the server is pinned to one core and both clients to another: our Python client spends about
twice the CPU per request that perf_analyzer's C++ one does (~150 vs ~90 µs on `simple` here). On
a 2-core machine where ortserve itself wants more than one core, that extra client CPU is taken
from the server, so unpinned our tool reads the *server* 10-25 % slower than perf_analyzer does
(measured: 1540 vs 1770 infer/s medians on mlp at concurrency 8, with single runs from 1100 to
2100), which no tolerance makes reliable. Kept apart, both tools measure the same server
capacity (measured: 1914 vs 1929, every run within 3 % but one perf_analyzer outlier), which is
what the agreement is about. Other work on a shared machine still disturbs single windows (down
to 0.4x); the medians of five alternated rounds absorb two of them. Seven pinned runs of this test
gave median ratios 0.92-1.10 (0.918 and 1.096 with a load average of 7-12 from other work; the
rest 0.976-1.016): reliable on a quiet machine such as CI's, close to the bound on a crowded one.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest import perf_analyzer, runner
from loadtest.servers import pinned
from scripts.harness import REPO_ROOT, ServerProcess

MODEL = "mlp"
CONCURRENCY = 8
ROUNDS = 5
TOLERANCE = 0.10


@pytest.fixture(scope="module")
def cores() -> tuple[int, int]:
    """(the server's core, the clients' core)."""
    available = sorted(os.sched_getaffinity(0))
    if len(available) < 2:
        pytest.skip("needs two cores to keep the load generators off the server's core")
    return available[0], available[1]


@pytest.fixture(scope="module")
def bundled(cores: tuple[int, int], tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """ortserve on model_repo/, every thread of it on the first core (inherited at start)."""
    process = ServerProcess([REPO_ROOT / "model_repo"], log_path=tmp_path_factory.mktemp("logs") / "loadtest-server.log")
    try:
        with pinned({cores[0]}):
            process.start(wait_for="")
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process
    finally:
        if process.process is not None and process.process.poll() is None:
            process.terminate()  # not `with process:`, whose __enter__ would start a second server


def ours(url: str) -> float:
    options = runner.RunOptions(url=url, model=MODEL, concurrency=(CONCURRENCY,), duration_s=2.0, warmup_s=0.5, processes=1)
    step = runner.run(options).steps[0]
    assert not step.client.errors, step.client.errors
    return step.client.infer_per_s


def theirs(url: str, env: dict[str, str]) -> float:
    # Stability 1000 %: always report the three windows; alternating rounds and medians deal with noise.
    args = [
        "--concurrency-range",
        str(CONCURRENCY),
        "--measurement-interval",
        "1000",
        "--stability-percentage",
        "1000",
        "--max-trials",
        "3",
    ]
    run = perf_analyzer.run(MODEL, url, args, timeout_s=60.0, env=env)
    assert run.returncode == 0 and run.points, run.describe()
    return run.points[0].throughput


@pytest.mark.timeout(180)
def test_throughput_agrees_with_perf_analyzer(bundled: ServerProcess, cores: tuple[int, int], perf_analyzer_env: dict[str, str]) -> None:
    mine: list[float] = []
    pa: list[float] = []
    with pinned({cores[1]}):
        for index in range(ROUNDS):
            pair = [lambda: mine.append(ours(bundled.grpc_url)), lambda: pa.append(theirs(bundled.grpc_url, perf_analyzer_env))]
            for measure in pair if index % 2 == 0 else reversed(pair):
                measure()
    ratio = statistics.median(mine) / statistics.median(pa)
    print(f"loadtest {mine} vs perf_analyzer {pa} infer/s: median ratio {ratio:.3f}")
    assert abs(ratio - 1) <= TOLERANCE, f"loadtest {mine} vs perf_analyzer {pa} infer/s: median ratio {ratio:.3f}"


@pytest.mark.timeout(120)
def test_cli_rate_mode_streaming_with_ceiling(bundled: ServerProcess, tmp_path: Path) -> None:
    """Open loop over streams, with the ceiling in the same run: every output file is written,
    nothing fails, the target rate is met, and the server's statistics and the ratio are reported."""
    command = [sys.executable, "-m", "loadtest", "run", "--url", bundled.grpc_url, "--model", MODEL, "--rate", "200"]
    command += ["--duration", "2", "--warmup", "0.5", "--streaming", "--processes", "2", "--out", str(tmp_path)]
    command += ["--ceiling-model-file", str(REPO_ROOT / "model_repo" / MODEL / "1" / "model.onnx"), "--ceiling-seconds", "0.5"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    result = json.loads((tmp_path / f"{MODEL}.json").read_text())
    step = result["steps"][0]
    assert step["mode"] == "rate" and step["client"]["errors"] == {}
    assert 0.9 <= step["achieved_ratio"] <= 1.1, step
    assert step["server"]["inferences"] > 0 and step["server"]["avg_batch"] >= 1
    assert step["ceiling_batch"] >= 1 and step["ratio_to_ceiling"] > 0
    assert (tmp_path / f"{MODEL}.csv").read_text().count("\n") == 2  # header and one step
    assert (tmp_path / f"{MODEL}.png").stat().st_size > 1000
