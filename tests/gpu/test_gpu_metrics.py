"""nv_gpu_* gauges on a real GPU: the values NVML reports, under Triton's names and label."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from scripts import onnx_models
from scripts.harness import ServerProcess
from tests.gpu.gpu_env import gpu_gauges, metrics_text
from tests.repository_builder import SIMPLE_CONFIG, write_model

pytestmark = pytest.mark.gpu

GAUGES = ("nv_gpu_utilization", "nv_gpu_memory_total_bytes", "nv_gpu_memory_used_bytes", "nv_gpu_power_usage", "nv_gpu_power_limit")


@pytest.fixture(scope="module")
def nvml() -> Iterator[object]:
    pynvml = pytest.importorskip("pynvml", reason="nvidia-ml-py is not installed")
    pynvml.nvmlInit()
    yield pynvml
    pynvml.nvmlShutdown()


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # A CPU model: GPU gauges come from NVML whatever the models run on.
    repository = tmp_path_factory.mktemp("metrics_repo")
    write_model(repository, "simple", onnx_models.simple(), SIMPLE_CONFIG)
    return repository


def wait_for_gauges(process: ServerProcess, names: set[str], timeout: float = 30.0) -> dict[str, dict[str, float]]:
    """The GPU gauges once every name in ``names`` is there (the sampler has run)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        gauges = gpu_gauges(process.metrics_url)
        if names <= gauges.keys():
            return gauges
        time.sleep(0.1)
    raise TimeoutError(f"{sorted(names)} not all on /metrics after {timeout}s:\n{process.log()}")


def test_gpu_gauges_carry_nvml_values_per_gpu_uuid(nvml: object, repository: Path) -> None:
    pynvml = nvml
    handles = [pynvml.nvmlDeviceGetHandleByIndex(i) for i in range(pynvml.nvmlDeviceGetCount())]
    expected = {}
    for handle in handles:
        uuid = pynvml.nvmlDeviceGetUUID(handle)
        expected[uuid.decode() if isinstance(uuid, bytes) else uuid] = handle
    with ServerProcess([repository], ["--metrics-interval-ms", "100"], log_path=repository.parent / "gpu-metrics.log") as process:
        gauges = wait_for_gauges(process, set(GAUGES))
    for name in GAUGES:
        assert set(gauges[name]) == set(expected), f"{name} is labelled by the wrong gpu_uuid values"
    for uuid, handle in expected.items():
        memory = pynvml.nvmlDeviceGetMemoryInfo(handle)
        assert gauges["nv_gpu_memory_total_bytes"][uuid] == memory.total
        assert 0 < gauges["nv_gpu_memory_used_bytes"][uuid] <= memory.total
        assert gauges["nv_gpu_power_limit"][uuid] == pynvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0
        assert gauges["nv_gpu_power_usage"][uuid] > 0
        assert 0.0 <= gauges["nv_gpu_utilization"][uuid] <= 1.0


def test_gpu_gauges_are_absent_when_turned_off(nvml: object, repository: Path) -> None:
    args = ["--metrics-interval-ms", "100", "--allow-gpu-metrics=false"]
    with ServerProcess([repository], args, log_path=repository.parent / "gpu-metrics-off.log") as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        deadline = time.monotonic() + 30
        # CPU gauges appear after the sampler's second pass; GPU gauges would have come with the first.
        while "nv_cpu_utilization" not in (text := metrics_text(process.metrics_url)) and time.monotonic() < deadline:
            time.sleep(0.1)
    assert "nv_cpu_utilization" in text
    assert "nv_gpu_" not in text
