"""Does our load tester read a server the way Triton's perf_analyzer does? A figure, not a test.

The same server, model and concurrency, driven alternately by our load tester and by
perf_analyzer (A B, B A, ... for ``--rounds`` rounds); it prints each run and the ratio of the
medians. The server is pinned to one core and both clients to the other: our Python client spends
about twice the CPU per request that perf_analyzer's C++ one does, and on a 2-core machine that
CPU would otherwise be taken from the server, so unpinned our tool would read the *server* slower.
Pinned, the ratio measured 0.92-1.10 over seven runs on this machine (0.85 once with other work
running): reliable enough to report, too dependent on the machine's other load to assert, which
is why tests/integration/test_loadtest.py checks counts against the server's statistics instead.

    python -m loadtest.bench_agreement [--model mlp] [--concurrency 8] [--rounds 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
from pathlib import Path

from loadtest import perf_analyzer, runner
from loadtest.servers import pinned
from scripts.harness import REPO_ROOT, ServerProcess


def ours(url: str, model: str, concurrency: int) -> float:
    options = runner.RunOptions(url=url, model=model, concurrency=(concurrency,), duration_s=2.0, warmup_s=0.5, processes=1)
    step = runner.run(options).steps[0]
    if step.client.errors:
        raise SystemExit(f"load tester saw errors: {step.client.errors}")
    return step.client.infer_per_s


def theirs(url: str, model: str, concurrency: int) -> float:
    # Stability 1000 %: always report the three windows; alternating rounds and medians deal with noise.
    args = ["--concurrency-range", str(concurrency), "--measurement-interval", "1000"]
    args += ["--stability-percentage", "1000", "--max-trials", "3"]
    run = perf_analyzer.run(model, url, args, timeout_s=60.0)
    if run.returncode != 0 or not run.points:
        raise SystemExit(run.describe())
    return run.points[0].throughput


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="mlp")
    parser.add_argument("--concurrency", type=int, default=8)
    parser.add_argument("--rounds", type=int, default=5)
    options = parser.parse_args()
    cores = sorted(os.sched_getaffinity(0))
    if len(cores) < 2:
        raise SystemExit("needs two cores: one for the server, one for the clients")
    with tempfile.TemporaryDirectory() as logs:
        server = ServerProcess([REPO_ROOT / "model_repo"], log_path=Path(logs) / "server.log")
        with pinned({cores[0]}):
            server.start(wait_for="")
        try:
            server.wait_until(f"http://{server.http_url}/v2/health/ready", 60)
            mine: list[float] = []
            pa: list[float] = []
            with pinned({cores[1]}):
                for index in range(options.rounds):
                    pair = [
                        lambda: mine.append(ours(server.grpc_url, options.model, options.concurrency)),
                        lambda: pa.append(theirs(server.grpc_url, options.model, options.concurrency)),
                    ]
                    for measure in pair if index % 2 == 0 else reversed(pair):
                        measure()
        finally:
            server.terminate()
    print(f"loadtest   infer/s: {mine}")
    print(f"perf_analyzer infer/s: {pa}")
    print(f"median ratio (loadtest / perf_analyzer): {statistics.median(mine) / statistics.median(pa):.3f}")


if __name__ == "__main__":
    main()
