"""``python -m loadtest compare`` against a real server holding two versions of one model."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import tritonclient.grpc as grpcclient

from scripts import onnx_models
from scripts.harness import REPO_ROOT, ServerProcess


def test_compare_loads_both_versions_and_reports_them_side_by_side(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for version, widths in ((1, (64, 256, 256, 10)), (2, (64, 64, 64, 10))):
        (repo / "two" / str(version)).mkdir(parents=True)
        onnx_models.save(onnx_models.mlp(widths), str(repo / "two" / str(version) / "model.onnx"))
    (repo / "two" / "config.pbtxt").write_text("max_batch_size: 8\nversion_policy: { all: {} }\n")
    with ServerProcess([repo], log_path=tmp_path / "server.log") as server:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 60)
        command = [sys.executable, "-m", "loadtest", "compare", "--url", server.grpc_url, "--model", "two", "--versions", "1,2"]
        command += ["--concurrency", "1,2", "--duration", "0.5", "--warmup", "0.1", "--processes", "1", "--out", str(tmp_path / "out")]
        done = subprocess.run(command, cwd=REPO_ROOT, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 0, done.stdout + done.stderr
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            counts = {s.version: s.inference_count for s in client.get_inference_statistics("two").model_stats}

    assert counts["1"] > 0 and counts["2"] > 0  # the load really went to each version
    result = json.loads((tmp_path / "out" / "two-compare.json").read_text())
    assert result["versions"] == ["1", "2"]
    for version in ("1", "2"):
        steps = result["reports"][version]["steps"]
        assert [s["level"] for s in steps] == [1.0, 2.0]
        assert all(s["client"]["requests"] > 0 and s["client"]["errors"] == {} for s in steps)
        assert result["reports"][version]["target"]["version"] == version
    table = done.stdout.split("the same load")[1]
    assert [line.split("|")[1].strip() for line in table.splitlines() if line.startswith("c=")] == ["1", "2", "1", "2"]
    assert (tmp_path / "out" / "two-compare.png").stat().st_size > 1000
