"""Triton's own perf_analyzer, unmodified, against the bundled model_repo/ over gRPC.

Each run must exit 0 and print the server-side block, which proves ServerMetadata, ModelMetadata,
ModelConfig, ModelStatistics (with a growing queue count) and ModelInfer / ModelStreamInfer all
satisfy it. These are contract checks, not figures: windows are short, and stability is not
asked for at all (1000 %), since on a busy machine perf_analyzer's default test, "three windows
within N % of each other", fails however correct the server is.
"""

from __future__ import annotations

import pytest

from loadtest import perf_analyzer
from scripts.harness import ServerProcess

# (test id, model, extra perf_analyzer arguments, concurrency levels it must report)
CASES = [
    ("mlp-sync-c1to4", "mlp", ["--concurrency-range", "1:4"], [1, 2, 3, 4]),
    ("simple-sync-c1to4", "simple", ["--concurrency-range", "1:4"], [1, 2, 3, 4]),
    # --async sets `id` on every request and matches responses by it.
    ("mlp-async", "mlp", ["--async", "--concurrency-range", "2"], [2]),
    ("mlp-streaming", "mlp", ["--streaming", "--concurrency-range", "2"], [2]),
    # max_batch_size 4 is auto-completed for mlp, so a whole batch of 4 in one request is legal.
    ("mlp-batch4", "mlp", ["-b", "4", "--concurrency-range", "2"], [2]),
    # Metadata shape [-1,-1]: the batch dim is dropped, the remaining -1 needs --shape.
    ("string-identity", "string_identity", ["--string-length", "16", "--shape", "INPUT0:8"], [1]),
]

RUN_TIMEOUT_S = 120.0
# Three one-second windows per concurrency level, always accepted as stable.
CONTRACT_ARGS = ("--measurement-interval", "1000", "--max-trials", "3", "--stability-percentage", "1000")


@pytest.mark.parametrize(("model", "args", "levels"), [pytest.param(*case[1:], id=case[0]) for case in CASES])
def test_perf_analyzer_run_succeeds(
    bundled_server: ServerProcess, perf_analyzer_env: dict[str, str], model: str, args: list[str], levels: list[int]
) -> None:
    run = perf_analyzer.run(model, bundled_server.grpc_url, [*CONTRACT_ARGS, *args], RUN_TIMEOUT_S, perf_analyzer_env)

    failure = f"{run.describe()}\n--- server log ---\n{bundled_server.log()[-4000:]}"
    assert run.returncode == 0, failure
    assert run.has_server_stats, failure
    assert [point.concurrency for point in run.points] == levels, failure
    assert all(point.throughput > 0 for point in run.points), failure
