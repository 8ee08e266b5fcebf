"""A GPU machine whose CUDA execution provider cannot start: KIND_GPU fails with the reason,
KIND_AUTO serves from the CPU and the log says why.

With a CPU-only onnxruntime the provider is missing altogether. With onnxruntime-gpu the test
makes its CUDA library dependency fail to load (a non-library ``libcublasLt.so.N`` first on
LD_LIBRARY_PATH), which is what a machine without that CUDA major version looks like to ORT.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from scripts import onnx_models
from scripts.harness import ServerProcess
from tests.gpu.gpu_env import probe_cuda, settled_index, shadow_cuda_library
from tests.repository_builder import write_model

pytestmark = pytest.mark.gpu


def broken_cuda_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Set up this process's environment (inherited by the server) so that the CUDA provider
    cannot start, and return the fragments the failure's reason must contain."""
    _, _, cuda_version = probe_cuda()
    if cuda_version is None:
        return ["has no CUDAExecutionProvider", "install onnxruntime-gpu"]
    shadow = shadow_cuda_library(tmp_path / "shadow", cuda_version)
    monkeypatch.setenv("LD_LIBRARY_PATH", f"{shadow}:{os.environ.get('LD_LIBRARY_PATH', '')}")
    problem, usable, _ = probe_cuda(dict(os.environ))
    assert usable == 0 and problem is not None, "the shadow library did not stop the CUDA provider"
    return ["CUDAExecutionProvider cannot start", f"libcublasLt.so.{cuda_version.split('.')[0]}"]


def test_kind_gpu_fails_with_the_reason_and_kind_auto_serves_on_cpu(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    reasons = broken_cuda_environment(tmp_path, monkeypatch)
    repository = tmp_path / "repo"
    for name, kind in (("gpu_only", "KIND_GPU"), ("auto_device", "KIND_AUTO")):
        config = f"max_batch_size: 8\ninstance_group [ {{ kind: {kind} }} ]"
        write_model(repository, name, onnx_models.add_constant("FP32", ["batch", 4], 1.0), config)
    process = ServerProcess([repository], ["--strict-readiness=false"], log_path=tmp_path / "server.log")
    with process, grpcclient.InferenceServerClient(process.grpc_url) as client:
        index = settled_index(client, {"gpu_only", "auto_device"})
        assert index["gpu_only"]["state"] == "UNAVAILABLE"
        assert index["auto_device"]["state"] == "READY"
        for fragment in ["KIND_GPU", *reasons]:
            assert fragment in index["gpu_only"]["reason"], index["gpu_only"]["reason"]
        config = client.get_model_config("auto_device", as_json=True)["config"]
        assert [g["kind"] for g in config["instance_group"]] == ["KIND_CPU"]
        item = grpcclient.InferInput("INPUT0", [2, 4], "FP32")
        item.set_data_from_numpy(np.zeros((2, 4), np.float32))
        np.testing.assert_array_equal(client.infer("auto_device", [item]).as_numpy("OUTPUT0"), np.ones((2, 4), np.float32))
    if "cannot start" in reasons[0]:
        assert "KIND_AUTO models run on CPU" in process.log()
