"""Live-traffic capture end to end: requests through a real server land, bounded, in the capture
directory, and ``ortserve optimize`` calibrates and evaluates on them."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from scripts import onnx_models
from scripts.harness import REPO_ROOT, ServerProcess, wait_until


def send(client: grpcclient.InferenceServerClient, model: str, array: np.ndarray) -> None:
    tensor = grpcclient.InferInput("input", list(array.shape), "FP32")
    tensor.set_data_from_numpy(array)
    client.infer(model, [tensor], client_timeout=30)


def captured(directory: Path) -> list[np.ndarray]:
    return [np.load(path)["input"] for path in sorted(directory.glob("*.npz"))]


def test_captured_requests_are_bounded_and_feed_optimize(tmp_path: Path) -> None:
    repo, capture = tmp_path / "repo", tmp_path / "capture"
    for name, width, config in (
        ("mlp", 64, "max_batch_size: 8\n"),
        ("wide", 1024, 'max_batch_size: 8\nparameters { key: "sample_capture_count" value { string_value: "100" } }\n'),
        ("quiet", 64, 'max_batch_size: 8\nparameters { key: "sample_capture_count" value { string_value: "0" } }\n'),
    ):
        (repo / name / "1").mkdir(parents=True)
        onnx_models.save(onnx_models.mlp((width, 32, 32, 4)), str(repo / name / "1" / "model.onnx"))
        (repo / name / "config.pbtxt").write_text(config)
    rng = np.random.default_rng(3)
    mlp_requests = [rng.standard_normal((2, 64)).astype(np.float32) for _ in range(5)]
    wide_requests = [rng.standard_normal((1, 1024)).astype(np.float32) for _ in range(4)]  # 4 KiB each
    args = ["--sample-capture-dir", str(capture), "--sample-capture-count", "3", "--sample-capture-bytes", "10000"]
    with ServerProcess([repo], args, log_path=tmp_path / "server.log") as server:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 60)
        with grpcclient.InferenceServerClient(server.grpc_url) as client:
            for request in [np.zeros((1, 64), np.float32)] * 2:
                send(client, "quiet", request)
            for request in mlp_requests:
                send(client, "mlp", request)
            for request in wide_requests:
                send(client, "wide", request)
            # One writer thread, in request order: once wide's files exist, every earlier write is done.
            wait_until(lambda: len(captured(capture / "wide")) == 2, 30, "two captured 'wide' requests")

    mlp_kept = captured(capture / "mlp")
    assert len(mlp_kept) == 3 and all(np.array_equal(a, b) for a, b in zip(mlp_kept, mlp_requests))  # the count bound
    assert all(np.array_equal(a, b) for a, b in zip(captured(capture / "wide"), wide_requests))  # the byte bound: 2 x 4 KiB
    assert not (capture / "quiet").exists()  # turned off by its config parameter

    command = [sys.executable, "-m", "server", "optimize", str(repo / "mlp"), "--method", "int8-dynamic", "--samples", str(capture / "mlp")]
    done = subprocess.run(
        [*command, "--timing-runs", "3"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 0, done.stderr
    assert f"samples: 6 from captured {capture / 'mlp'} (0 calibrate, 6 evaluate)" in done.stdout
    assert "random" not in done.stdout
