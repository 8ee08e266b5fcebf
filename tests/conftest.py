"""Shared fixtures: the test repository and real server processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest import perf_analyzer
from scripts.harness import REPO_ROOT, ServerProcess
from tests.repository_builder import build_test_repository


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "gpu: needs an NVIDIA GPU (NVML or the CUDA driver); skipped without one (tests/gpu/)")


def pytest_runtest_setup(item: pytest.Item) -> None:
    if item.get_closest_marker("gpu") is not None and _visible_gpus() == 0:
        pytest.skip("no NVIDIA GPU visible (neither libcuda.so.1 nor NVML finds one)")


def _visible_gpus() -> int:
    # Imported here so that collecting the CPU suite does not touch the GPU code paths.
    from server.runtime.gpus import visible_gpu_count

    return visible_gpu_count()


@pytest.fixture(scope="session")
def test_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_test_repository(tmp_path_factory.mktemp("repo"))


@pytest.fixture(scope="session")
def server(test_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """One server on the test repository, shared by the read-mostly integration tests.

    Not strict-ready (two models fail on purpose), so it waits for liveness and then for the
    models it needs through ModelReady in the tests themselves.
    """
    log = tmp_path_factory.mktemp("logs") / "server.log"
    process = ServerProcess([test_repository], ["--strict-readiness=false"], log_path=log)
    with process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


@pytest.fixture(scope="session")
def bundled_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    """A server on the bundled model_repo/ (what the README's first command serves)."""
    log = tmp_path_factory.mktemp("logs") / "bundled.log"
    with ServerProcess([REPO_ROOT / "model_repo"], log_path=log) as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


@pytest.fixture(scope="session")
def perf_analyzer_env() -> dict[str, str]:
    """Environment in which perf_analyzer finds libcudart.so.12 (from a wheel)."""
    return perf_analyzer.environment()
