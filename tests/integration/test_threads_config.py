"""ONNX Runtime's thread plans on a real server: the default, and Triton's global pool with a
model that asks for its own counts (served on the pool, its counts logged as ignored)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from scripts import onnx_models
from scripts.harness import ServerProcess
from tests.repository_builder import SIMPLE_CONFIG, write_model

OWN_COUNTS = 'parameters { key: "intra_op_thread_count" value: { string_value: "1" } }'


def answers(server: ServerProcess, model: str) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        values = np.ones((2, 256), np.float32)
        item = grpcclient.InferInput("input", [2, 256], "FP32")
        item.set_data_from_numpy(values)
        assert client.infer(model, [item]).as_numpy("output").shape == (2, 10)


def test_default_sessions_use_every_core_without_spinning(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "mlp", onnx_models.mlp())
    write_model(tmp_path / "repo", "simple", onnx_models.simple(), SIMPLE_CONFIG)
    with ServerProcess([tmp_path / "repo"], log_path=tmp_path / "server.log").start(wait_for="ready") as server:
        answers(server, "mlp")
        assert "intra-op thread(s) each by default (idle pools sleep)" in server.log()


def test_the_global_pool_serves_a_model_that_sets_its_own_counts(tmp_path: Path) -> None:
    write_model(tmp_path / "repo", "mlp", onnx_models.mlp())
    write_model(tmp_path / "repo", "mlp_own", onnx_models.mlp(), OWN_COUNTS)
    flags = ["--backend-config=onnxruntime,enable-global-threadpool=true", "--backend-config=onnxruntime,intra_op_thread_count=2"]
    with ServerProcess([tmp_path / "repo"], flags, log_path=tmp_path / "server.log").start(wait_for="ready") as server:
        answers(server, "mlp")
        answers(server, "mlp_own")
        log = server.log()
        assert "one global pool of 2 intra-op thread(s)" in log
        assert "model 'mlp_own': its thread counts are ignored" in log
