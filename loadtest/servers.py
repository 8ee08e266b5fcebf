"""Servers under test as subprocesses on free 127.0.0.1 ports, stopped (by PID) when the block ends.

with ortserve(repo, ["--backend-config=onnxruntime,default-max-batch-size=64"], "main", logs) as server:
    ...  # server.grpc_url
"""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import grpc

from scripts.harness import free_port, free_ports
from server.proto import grpc_service_pb2 as pb
from server.proto import grpc_service_pb2_grpc as pb_grpc

REPO_ROOT = Path(__file__).resolve().parent.parent
START_TIMEOUT_S = 120.0
# ortserve logs how many intra-op threads each CPU instance gets by default (server/lifecycle/manager.py).
THREADS_LOG = re.compile(r"(\d+) intra-op thread\(s\) each by default")


@dataclass(frozen=True)
class Running:
    name: str
    grpc_url: str
    log_path: Path
    http_url: str | None = None  # host:port; the floor server has none
    pid: int | None = None

    def default_intra_op_threads(self) -> int | None:
        """What ortserve said it gives each CPU instance without an override (None if not logged)."""
        match = THREADS_LOG.search(self.log_path.read_text(errors="replace"))
        return int(match.group(1)) if match else None


def http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1.0) as response:
            return response.status == 200
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return False


def grpc_answers(url: str) -> bool:
    with grpc.insecure_channel(url) as channel:
        try:
            pb_grpc.GRPCInferenceServiceStub(channel).ServerMetadata(pb.ServerMetadataRequest(), timeout=1.0)
            return True
        except grpc.RpcError:
            return False


@contextmanager
def subprocess_server(
    name: str, command: list[str], ready: Callable[[], bool], log_path: Path, cwd: Path = REPO_ROOT
) -> Iterator[subprocess.Popen[bytes]]:
    """Run ``command`` (output to ``log_path``) until the block ends; SIGTERM, then kill."""
    log_path.parent.mkdir(parents=True, exist_ok=True)
    with log_path.open("wb") as log:
        process = subprocess.Popen(command, cwd=cwd, stdout=log, stderr=subprocess.STDOUT)
        try:
            deadline = time.monotonic() + START_TIMEOUT_S
            while not ready():
                if process.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"{name} did not become ready (exit {process.poll()}); see {log_path}")
                time.sleep(0.2)
            yield process
        finally:
            stop(process)


def stop(process: subprocess.Popen[bytes], timeout_s: float = 30.0) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()


@contextmanager
def ortserve(
    repository: Path, extra_args: Sequence[str], name: str, log_dir: Path, python: str = sys.executable, tree: Path = REPO_ROOT
) -> Iterator[Running]:
    """``python -m server`` on ``repository``, ready (every model loaded) before the block runs.

    ``python`` and ``tree`` run another checkout of the server (e.g. an older commit to compare with)."""
    grpc_port, http_port, metrics_port = free_ports(3)
    command = [python, "-m", "server", "--host", "127.0.0.1", "--model-repository", str(repository)]
    command += ["--grpc-port", str(grpc_port), "--http-port", str(http_port), "--metrics-port", str(metrics_port), *extra_args]
    log_path = log_dir / f"{name}.log"
    ready = lambda: http_ok(f"http://127.0.0.1:{http_port}/v2/health/ready")  # noqa: E731
    with subprocess_server(name, command, ready, log_path, cwd=tree) as process:
        yield Running(name, f"127.0.0.1:{grpc_port}", log_path, http_url=f"127.0.0.1:{http_port}", pid=process.pid)


@contextmanager
def floor(log_dir: Path, name: str = "floor") -> Iterator[Running]:
    """The bare grpc.aio floor server (loadtest/floor_server.py)."""
    url = f"127.0.0.1:{free_port()}"
    command = [sys.executable, "-m", "loadtest.floor_server", "--port", url.rpartition(":")[2]]
    log_path = log_dir / f"{name}.log"
    with subprocess_server(name, command, lambda: grpc_answers(url), log_path):
        yield Running(name, url, log_path)


@contextmanager
def pinned(cpus: set[int] | None) -> Iterator[None]:
    """Run this process on ``cpus`` for the block (None: leave it); processes started inside inherit
    it, threads and all, so a server started here stays on those cores."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def split_cores() -> tuple[set[int], set[int]] | None:
    """(a core for the server, the other cores for the clients), or None with fewer than two."""
    cores = sorted(os.sched_getaffinity(0))
    return ({cores[0]}, set(cores[1:])) if len(cores) >= 2 else None
