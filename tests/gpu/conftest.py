"""Fixtures for the GPU tests (every test here is marked ``gpu`` and skips without a GPU)."""

from __future__ import annotations

import pytest

from tests.gpu.gpu_env import probe_cuda


@pytest.fixture(scope="session")
def cuda_probe() -> tuple[str | None, int, str | None]:
    return probe_cuda()


@pytest.fixture(scope="session")
def cuda_gpus(cuda_probe: tuple[str | None, int, str | None]) -> int:
    """How many GPUs the CUDA execution provider can use; skips the test when it cannot start."""
    problem, usable, _ = cuda_probe
    if problem is not None:
        pytest.skip(f"the CUDA execution provider cannot run here: {problem}")
    return usable
