"""The load tester against a real ortserve: its CLI end to end, and its counts against the server's.

Whether its throughput agrees with perf_analyzer's is a measurement, whose outcome depends on what
else the machine runs: ``python -m loadtest.bench_agreement`` prints it. What a test can hold on
any machine is that the tool counts what it did: every request it reports answered was served, as
the server's own statistics count them, and none it did not send.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
import tritonclient.grpc as grpcclient

from loadtest import runner
from scripts.harness import REPO_ROOT, ServerProcess

MODEL = "mlp"
CONCURRENCY = 8


@pytest.fixture(scope="module")
def bundled(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    with ServerProcess([REPO_ROOT / "model_repo"], log_path=tmp_path_factory.mktemp("logs") / "loadtest-server.log") as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


def served(url: str) -> int:
    """Inferences the server has counted for MODEL (every version), read while no load runs."""
    with grpcclient.InferenceServerClient(url) as client:
        stats = client.get_inference_statistics(MODEL, as_json=True)
    return sum(int(version.get("inference_count", 0)) for version in stats["model_stats"])


@pytest.mark.timeout(120)
@pytest.mark.parametrize("streaming", [False, True], ids=["unary", "streaming"])
def test_counts_add_up_to_the_servers(bundled: ServerProcess, streaming: bool) -> None:
    before = served(bundled.grpc_url)
    options = runner.RunOptions(
        url=bundled.grpc_url, model=MODEL, concurrency=(CONCURRENCY,), duration_s=1.0, warmup_s=0.3, processes=2, streaming=streaming
    )
    report = runner.run(options)
    after = served(bundled.grpc_url)
    step = report.steps[0]
    client = step.client
    assert client.errors == {} and client.requests > 0
    # Every answered request was served, and the server ran none the client did not send (a request
    # abandoned after the drain bound may or may not have reached the model).
    assert client.succeeded_total <= after - before <= client.started_total, (client, before, after)
    assert client.requests <= client.succeeded_total  # the window is a part of the step
    # The server's view of the window, read by the tool itself, saw the same load.
    assert step.server is not None and 0 < step.server.inferences <= after - before
    assert client.infer_per_s == pytest.approx(client.requests / options.duration_s, rel=0.01)


@pytest.mark.timeout(120)
def test_cli_rate_mode_streaming_with_ceiling(bundled: ServerProcess, tmp_path: Path) -> None:
    """Open loop over streams, with the ceiling in the same run: every output file is written,
    nothing fails, the whole schedule is sent, and the server's statistics and the ratio are reported."""
    command = [sys.executable, "-m", "loadtest", "run", "--url", bundled.grpc_url, "--model", MODEL, "--rate", "200"]
    command += ["--duration", "2", "--warmup", "0.5", "--streaming", "--processes", "2", "--out", str(tmp_path)]
    command += ["--ceiling-model-file", str(REPO_ROOT / "model_repo" / MODEL / "1" / "model.onnx"), "--ceiling-seconds", "0.5"]
    done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=100, check=False)
    assert done.returncode == 0, done.stdout + done.stderr

    result = json.loads((tmp_path / f"{MODEL}.json").read_text())
    step = result["steps"][0]
    assert step["mode"] == "rate" and step["client"]["errors"] == {}
    # Open loop: the schedule (200/s over the 2 s window, evenly spaced) is sent whatever the
    # server's speed; only slots over the in-flight bound are skipped, and those are counted.
    assert step["client"]["started_total"] + step["client"]["skipped"] >= 200 * 2 - 2, step
    assert step["achieved_ratio"] > 0
    assert step["server"]["inferences"] > 0 and step["server"]["avg_batch"] >= 1
    assert step["ceiling_batch"] >= 1 and step["ratio_to_ceiling"] > 0
    assert (tmp_path / f"{MODEL}.csv").read_text().count("\n") == 2  # header and one step
    assert (tmp_path / f"{MODEL}.png").stat().st_size > 1000
