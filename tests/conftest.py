"""Shared fixtures: the test repository and real server processes on free ports."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from loadtest import perf_analyzer
from tests.harness import REPO_ROOT, ServerProcess
from tests.repository_builder import build_test_repository


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
