"""Process lifecycle: graceful SIGTERM with requests in flight, bounded exit, startup failures, startup log.

Each test that needs its own process starts one on free 127.0.0.1 ports and stops it itself
(ServerProcess kills only what it started). The startup-log test reads the shared server's log.
"""

from __future__ import annotations

import re
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from tests.harness import REPO_ROOT, ServerProcess, http_status
from tests.repository_builder import SIMPLE_CONFIG, write_model

# slow_echo's MatMul chain costs ~15-100 ms per execution here. One instance merging at most two
# requests: queued requests stay in the batcher's queue (the pending gauge), so a test can see when
# all of them have arrived. 32 requests hold the server busy for about a second; 160 for several.
MAX_BATCH = 2
SLOW_CONFIG = f"max_batch_size: {MAX_BATCH}\ndynamic_batching {{ }}\ninstance_group [ {{ kind: KIND_CPU, count: 1 }} ]"
# The same model without dynamic_batching: every request is its own execution.
UNBATCHED_CONFIG = "max_batch_size: 1\ninstance_group [ { kind: KIND_CPU, count: 1 } ]"
IN_FLIGHT = 32
MANY_IN_FLIGHT = 160


@pytest.fixture(scope="module")
def slow_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("slow_repo")
    write_model(repository, "slow", onnx_models.slow_echo(), SLOW_CONFIG)
    write_model(repository, "slow_unbatched", onnx_models.slow_echo(), UNBATCHED_CONFIG)
    return repository


@pytest.fixture
def slow_server(slow_repository: Path, request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[ServerProcess]:
    exit_timeout: float = request.param
    process = ServerProcess([slow_repository], ["--exit-timeout-secs", str(exit_timeout)], log_path=tmp_path / "server.log")
    with process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


class Outcomes:
    """Collects async_infer callbacks: request id → (result, error)."""

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.by_id: dict[str, tuple[grpcclient.InferResult | None, InferenceServerException | None]] = {}
        self._lock = threading.Lock()
        self._all_in = threading.Event()

    def callback(self, request_id: str) -> object:
        def record(result: grpcclient.InferResult | None, error: InferenceServerException | None) -> None:
            with self._lock:
                self.by_id[request_id] = (result, error)
                if len(self.by_id) == self.expected:
                    self._all_in.set()

        return record

    def wait(self, timeout: float) -> None:
        assert self._all_in.wait(timeout), f"only {len(self.by_id)} of {self.expected} requests answered"


def slow_input(value: float) -> list[grpcclient.InferInput]:
    item = grpcclient.InferInput("x", [1, 1], "FP32")
    item.set_data_from_numpy(np.full((1, 1), value, np.float32))
    return [item]


def metric(process: ServerProcess, name: str) -> int:
    text = urllib.request.urlopen(process.metrics_url, timeout=5).read().decode()
    match = re.search(rf'^{name}\{{model="slow",version="1"\}} (\d+)$', text, re.MULTILINE)
    return int(match[1]) if match else 0


def fill(process: ServerProcess, client: grpcclient.InferenceServerClient, count: int = IN_FLIGHT) -> Outcomes:
    """Send ``count`` requests and return once the server holds all of them (queued or running)."""
    outcomes = Outcomes(count)
    for index in range(count):
        client.async_infer("slow", slow_input(index), outcomes.callback(str(index)), request_id=str(index))
    deadline = time.monotonic() + 30
    # At most MAX_BATCH requests run at once; every other one is queued or done.
    while metric(process, "nv_inference_pending_request_count") + metric(process, "nv_inference_request_success") < count - MAX_BATCH:
        assert time.monotonic() < deadline, "requests did not reach the server"
        time.sleep(0.01)
    time.sleep(0.2)  # the last few were sent before the others arrived: give them the same chance
    return outcomes


@pytest.mark.parametrize("slow_server", [30.0], indirect=True, ids=["exit-timeout-30s"])
def test_sigterm_lets_in_flight_requests_finish_and_refuses_new_ones(slow_server: ServerProcess) -> None:
    assert slow_server.process is not None
    with grpcclient.InferenceServerClient(slow_server.grpc_url) as client:
        outcomes = fill(slow_server, client)
        done_before = metric(slow_server, "nv_inference_request_success")
        signalled = time.monotonic()
        slow_server.process.send_signal(signal.SIGTERM)
        time.sleep(0.1)  # let the loop handle the signal
        with pytest.raises(InferenceServerException) as refused:
            client.infer("slow", slow_input(-1.0))
        assert (refused.value.status(), refused.value.message()) == ("StatusCode.UNAVAILABLE", "Server exiting")
        assert http_status(f"http://{slow_server.http_url}/v2/health/ready") in (400, None)
        returncode = slow_server.process.wait(30 + 10)
        exited_after = time.monotonic() - signalled
        outcomes.wait(10)
    assert returncode == 0, slow_server.log()
    assert exited_after < 30
    assert done_before < IN_FLIGHT, "every request finished before SIGTERM: nothing was in flight"
    assert sorted(outcomes.by_id, key=int) == [str(i) for i in range(IN_FLIGHT)]
    for request_id, (result, error) in outcomes.by_id.items():
        assert error is None, (request_id, error)
        assert result is not None
        np.testing.assert_allclose(result.as_numpy("y"), np.full((1, 1), float(request_id), np.float32), rtol=1e-5)


@pytest.mark.parametrize("slow_server", [0.5], indirect=True, ids=["exit-timeout-0.5s"])
def test_exit_timeout_bounds_the_drain(slow_server: ServerProcess) -> None:
    assert slow_server.process is not None
    with grpcclient.InferenceServerClient(slow_server.grpc_url) as client:
        outcomes = fill(slow_server, client, MANY_IN_FLIGHT)
        done_before = metric(slow_server, "nv_inference_request_success")
        signalled = time.monotonic()
        slow_server.process.send_signal(signal.SIGTERM)
        slow_server.process.wait(30)
        exited_after = time.monotonic() - signalled
        outcomes.wait(10)
    # The bound covers the drain; stopping the frontends, the running batch and interpreter exit add ~1 s.
    assert exited_after < 0.5 + 4.0, slow_server.log()
    assert "exit timeout reached with requests still in flight" in slow_server.log()
    failed = [error for _, error in outcomes.by_id.values() if error is not None]
    assert len(outcomes.by_id) == MANY_IN_FLIGHT
    assert done_before < MANY_IN_FLIGHT and failed, "the drain should have been cut short"
    assert {error.status() for error in failed} <= {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"}


def completion_times(client: grpcclient.InferenceServerClient, model: str, count: int) -> list[float]:
    """Seconds from the first send to each answer, for ``count`` concurrent requests, in answer order."""
    times: list[float] = []
    all_in = threading.Event()
    started = time.monotonic()

    def record(result: object, error: object) -> None:
        assert error is None, error
        times.append(time.monotonic() - started)
        if len(times) == count:
            all_in.set()

    for index in range(count):
        client.async_infer(model, slow_input(index), record)
    assert all_in.wait(60)
    return times


def test_without_dynamic_batching_each_answer_is_sent_when_its_request_finishes(slow_repository: Path, tmp_path: Path) -> None:
    with ServerProcess([slow_repository], log_path=tmp_path / "server.log") as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        with grpcclient.InferenceServerClient(process.grpc_url) as client:
            times = completion_times(client, "slow_unbatched", 24)
    # One instance runs them one after another: answers should spread out over the whole run.
    assert sorted(times)[len(times) // 2] < 0.75 * max(times), times


@pytest.fixture(scope="module")
def idle_zero_timeout_log(slow_repository: Path, tmp_path_factory: pytest.TempPathFactory) -> str:
    """The log of a server that had no request at all and was stopped with --exit-timeout-secs 0."""
    log_path = tmp_path_factory.mktemp("idle") / "server.log"
    process = ServerProcess([slow_repository], ["--exit-timeout-secs", "0"], log_path=log_path)
    process.start("ready")
    assert process.terminate() == 0
    return process.log()


def test_an_idle_server_stopped_with_zero_exit_timeout_reports_no_in_flight_requests(idle_zero_timeout_log: str) -> None:
    assert "ortserve stopped" in idle_zero_timeout_log
    assert "exit timeout reached with requests still in flight" not in idle_zero_timeout_log


def test_an_idle_server_stopped_with_zero_exit_timeout_reports_no_drain_timeout(idle_zero_timeout_log: str) -> None:
    assert "drain timed out" not in idle_zero_timeout_log


# ---- startup failures ---------------------------------------------------------------------------


def run_server(args: list[str], timeout: float = 60.0) -> subprocess.CompletedProcess[str]:
    """``python -m server`` that is expected to exit by itself (startup failures)."""
    command = [sys.executable, "-m", "server", "--host", "127.0.0.1", "--grpc-port", "0", "--http-port", "0", "--metrics-port", "0"]
    return subprocess.run([*command, *args], cwd=REPO_ROOT, capture_output=True, text=True, timeout=timeout)


def last_line(text: str) -> str:
    lines = [line for line in text.splitlines() if line.strip()]
    return lines[-1] if lines else ""


def test_exit_on_error_with_a_corrupt_model_fails_startup_naming_the_model(tmp_path: Path) -> None:
    write_model(tmp_path, "simple", onnx_models.simple(), SIMPLE_CONFIG)
    (tmp_path / "corrupt" / "1").mkdir(parents=True)
    (tmp_path / "corrupt" / "1" / "model.onnx").write_bytes(b"garbage")
    finished = run_server(["--model-repository", str(tmp_path), "--exit-on-error"])
    assert finished.returncode != 0
    assert "Traceback" not in finished.stderr
    error = last_line(finished.stderr)
    assert error.startswith("ortserve: error: model 'corrupt' version 1: "), finished.stderr
    assert "simple" not in error


def test_a_missing_repository_exits_2_with_one_line(tmp_path: Path) -> None:
    missing = tmp_path / "nowhere"
    finished = run_server(["--model-repository", str(missing)])
    assert finished.returncode == 2
    assert finished.stdout == ""
    assert finished.stderr.splitlines() == [f"ortserve: error: model repository '{missing}' does not exist or is not a directory"]


def test_duplicate_model_names_across_repositories_fail_naming_both_paths(tmp_path: Path) -> None:
    first, second = tmp_path / "first", tmp_path / "second"
    for repository in (first, second):
        write_model(repository, "simple", onnx_models.simple(), SIMPLE_CONFIG)
    finished = run_server(["--model-repository", str(first), "--model-repository", str(second)])
    assert finished.returncode != 0
    assert "Traceback" not in finished.stderr
    error = last_line(finished.stderr)
    assert error.startswith("ortserve: error: model 'simple'"), finished.stderr
    assert str(first / "simple") in error and str(second / "simple") in error


@pytest.mark.parametrize("flag", ["--grpc-port", "--http-port", "--metrics-port"])
def test_a_port_in_use_fails_startup_with_one_line(tmp_path: Path, flag: str) -> None:
    write_model(tmp_path, "simple", onnx_models.simple(), SIMPLE_CONFIG)
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        finished = run_server(["--model-repository", str(tmp_path), flag, str(port)])
    assert finished.returncode != 0
    assert "Traceback" not in finished.stderr, finished.stderr
    error = last_line(finished.stderr)
    assert error.startswith("ortserve: error: "), finished.stderr
    assert str(port) in error


# ---- startup log --------------------------------------------------------------------------------

EXPECTED_STATES = {
    "simple": "versions [1 READY]",
    "mlp": "versions [1 READY]",
    "versioned": "versions [2 READY, 3 READY]",
    "identity_bytes": "versions [1 READY]",
    "corrupt": "versions [1 UNAVAILABLE (",
    "contradicting": "versions [1 UNAVAILABLE (",
}


def test_startup_log_has_one_line_per_model_naming_its_state(server: ServerProcess, test_repository: Path) -> None:
    log = server.log()
    for model_dir in sorted(p for p in test_repository.iterdir() if p.is_dir()):
        lines = [line for line in log.splitlines() if f"model '{model_dir.name}': versions [" in line]
        assert len(lines) == 1, (model_dir.name, lines)
        expected = EXPECTED_STATES.get(model_dir.name, "versions [1 READY]")
        assert f"model '{model_dir.name}': {expected}" in lines[0]
