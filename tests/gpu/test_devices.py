"""Device discovery on a real GPU machine: the server's GPU count against NVML and nvidia-smi."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess

import pytest

from server.runtime.gpus import visible_gpu_count
from tests.gpu.gpu_env import probe_cuda

pytestmark = pytest.mark.gpu


def test_visible_gpu_count_matches_nvml() -> None:
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    pynvml.nvmlInit()
    try:
        nvml_count = pynvml.nvmlDeviceGetCount()
    finally:
        pynvml.nvmlShutdown()
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        pytest.skip("CUDA_VISIBLE_DEVICES is set: the driver API and NVML may rightly disagree")
    assert nvml_count >= 1
    assert visible_gpu_count() == nvml_count


def test_visible_gpu_count_matches_nvidia_smi() -> None:
    smi = shutil.which("nvidia-smi")
    if smi is None:
        pytest.skip("nvidia-smi is not on PATH")
    if os.environ.get("CUDA_VISIBLE_DEVICES") is not None:
        pytest.skip("CUDA_VISIBLE_DEVICES is set: nvidia-smi lists every GPU regardless")
    listing = subprocess.run([smi, "-L"], capture_output=True, text=True, check=True).stdout
    listed = [line for line in listing.splitlines() if line.startswith("GPU ")]
    assert visible_gpu_count() == len(listed) >= 1


def test_cuda_visible_devices_hides_every_gpu() -> None:
    try:
        ctypes.CDLL("libcuda.so.1")
    except OSError:
        pytest.skip("no libcuda.so.1: the count comes from NVML, which ignores CUDA_VISIBLE_DEVICES")
    problem, usable, _ = probe_cuda(dict(os.environ, CUDA_VISIBLE_DEVICES=""))
    assert usable == 0
    assert problem is not None and "CUDAExecutionProvider" in problem


def test_usable_gpus_are_the_visible_ones_exactly_when_the_cuda_provider_starts(cuda_probe: tuple[str | None, int, str | None]) -> None:
    problem, usable, _ = cuda_probe
    if problem is None:
        assert usable == visible_gpu_count() >= 1
    else:
        assert usable == 0 and "CUDAExecutionProvider" in problem
