"""Process lifecycle: graceful SIGTERM with requests in flight, bounded exit, startup failures, startup log.

Each test that needs its own process starts one on free 127.0.0.1 ports and stops it itself
(ServerProcess kills only what it started). The startup-log test reads the shared server's log.
"""

from __future__ import annotations

import queue
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import REPO_ROOT, ServerProcess, http_status, wait_until
from tests.integration.slow_work import (
    EXECUTING,
    ONE_INSTANCE,
    PENDING,
    Blocker,
    echo_input,
    executions_lasting,
    rows_lasting,
    until_premise_holds,
)
from tests.repository_builder import SIMPLE_CONFIG, write_model

# One instance merging at most two requests: queued requests stay in the batcher's queue (the
# pending gauge), requests on the instance show in the executing gauge, so a test sees exactly
# when all it sent have arrived. How many requests keep it busy for a given time is measured on
# this machine (slow_work), never assumed.
MAX_BATCH = 2
# Its queue is set deep: the backlog tests queue tens of seconds of work, past the default bound.
SLOW_CONFIG = f"max_batch_size: {MAX_BATCH}\ndynamic_batching {{ default_queue_policy {{ max_queue_size: 1000000 }} }}\n{ONE_INSTANCE}"
# The same model without batching: every request is its own execution, however many rows.
# (With max_batch_size > 0, auto-complete would add dynamic_batching, as Triton's does.)
UNBATCHED_CONFIG = f"""max_batch_size: 0
input [ {{ name: "x", data_type: TYPE_FP32, dims: [ -1, 1 ] }} ]
output [ {{ name: "y", data_type: TYPE_FP32, dims: [ -1, 1 ] }} ]
{ONE_INSTANCE}"""
# Work in flight at SIGTERM in the drain test: enough that it is still running when the signal lands.
DRAIN_SECS = 2.0
# Work queued in the exit-timeout test: far more than the bound below, so only the timeout can explain an early exit.
BACKLOG_SECS = 30.0
# What stopping the frontends, the batch on the instance and interpreter exit may add to --exit-timeout-secs.
EXIT_ALLOWANCE_SECS = 10.0


@pytest.fixture(scope="module")
def slow_repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("slow_repo")
    write_model(repository, "slow", onnx_models.slow_echo(), SLOW_CONFIG)
    write_model(repository, "slow_unbatched", onnx_models.slow_echo(), UNBATCHED_CONFIG)
    return repository


def slow_server(repository: Path, exit_timeout: float, log_path: Path) -> ServerProcess:
    process = ServerProcess([repository], ["--exit-timeout-secs", str(exit_timeout)], log_path=log_path).start()
    process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
    return process


def requests_lasting(secs: float) -> int:
    """How many one-row requests keep the slow model (MAX_BATCH rows per execution) busy ``secs`` here."""
    return MAX_BATCH * executions_lasting(secs, MAX_BATCH)


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
    return echo_input(np.full((1, 1), value))


def arrived(process: ServerProcess) -> float:
    """Rows the server holds or has executed on 'slow': queued + on the instance + executed."""
    metrics = process.metrics()
    return sum(metrics.model("slow", name) for name in (PENDING, EXECUTING, "nv_inference_count"))


def fill(process: ServerProcess, client: grpcclient.InferenceServerClient, count: int) -> Outcomes:
    """Send ``count`` one-row requests and return once the server holds all of them."""
    outcomes = Outcomes(count)
    before = arrived(process)
    for index in range(count):
        client.async_infer("slow", slow_input(index), outcomes.callback(str(index)), request_id=str(index))
    wait_until(lambda: arrived(process) - before == count, 60, f"{count} requests at the server")
    return outcomes


def in_flight_after_shutdown_began(process: ServerProcess, count: int) -> int:
    """Requests of ``count`` not executed yet, read once the server logged that it stops."""
    process.wait_for_log("shutdown requested: refusing new requests")
    try:
        return count - int(process.metrics().model("slow", "nv_inference_count"))
    except (urllib.error.URLError, ConnectionError):  # already drained and gone
        return 0


def test_sigterm_lets_in_flight_requests_finish_and_refuses_new_ones(slow_repository: Path, tmp_path: Path) -> None:
    def attempt(count: int) -> bool:
        process = slow_server(slow_repository, 30.0, tmp_path / f"server-{count}.log")
        assert process.process is not None
        with process, grpcclient.InferenceServerClient(process.grpc_url) as client:
            outcomes = fill(process, client, count)
            signalled = time.monotonic()
            process.process.send_signal(signal.SIGTERM)
            if in_flight_after_shutdown_began(process, count) == 0:
                process.process.wait(60)
                return False
            with pytest.raises(InferenceServerException) as refused:
                client.infer("slow", slow_input(-1.0))
            assert (refused.value.status(), refused.value.message()) == ("StatusCode.UNAVAILABLE", "Server exiting")
            assert http_status(f"http://{process.http_url}/v2/health/ready") in (400, None)
            returncode = process.process.wait(30 + 10)
            exited_after = time.monotonic() - signalled
            outcomes.wait(10)
        assert returncode == 0, process.log()
        assert exited_after < 30
        assert sorted(outcomes.by_id, key=int) == [str(i) for i in range(count)]
        for request_id, (result, error) in outcomes.by_id.items():
            assert error is None, (request_id, error)
            assert result is not None
            np.testing.assert_allclose(result.as_numpy("y"), np.full((1, 1), float(request_id), np.float32), rtol=1e-5)
        return True

    until_premise_holds(attempt, requests_lasting(DRAIN_SECS), "requests still in flight once the shutdown began", most=10**6)


def test_exit_timeout_bounds_the_drain(slow_repository: Path, tmp_path: Path) -> None:
    count = requests_lasting(BACKLOG_SECS)
    process = slow_server(slow_repository, 0.5, tmp_path / "server.log")
    assert process.process is not None
    with process, grpcclient.InferenceServerClient(process.grpc_url) as client:
        outcomes = fill(process, client, count)
        signalled = time.monotonic()
        process.process.send_signal(signal.SIGTERM)
        left = in_flight_after_shutdown_began(process, count)
        process.process.wait(60)
        exited_after = time.monotonic() - signalled
        outcomes.wait(30)
    # The backlog would have kept it busy for about BACKLOG_SECS (measured): far beyond the bound.
    assert left > count // 2, f"the backlog of {count} requests was nearly done before the shutdown began"
    assert exited_after < 0.5 + EXIT_ALLOWANCE_SECS, process.log()
    assert "exit timeout reached with requests still in flight" in process.log()
    failed = [error for _, error in outcomes.by_id.values() if error is not None]
    assert len(outcomes.by_id) == count
    assert failed, "the drain should have been cut short"
    assert {error.status() for error in failed} <= {"StatusCode.UNAVAILABLE", "StatusCode.CANCELLED"}


def test_without_dynamic_batching_each_answer_is_sent_when_its_request_finishes(slow_repository: Path, tmp_path: Path) -> None:
    """A free instance takes the queued A (one row) and C (long) in one hand-over: A's answer
    must come while C still runs, not when the hand-over ends."""
    with ServerProcess([slow_repository], log_path=tmp_path / "server.log") as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        with grpcclient.InferenceServerClient(process.grpc_url) as client:

            def attempt(rows: int) -> bool:
                answered: queue.Queue[tuple[str, object]] = queue.Queue()
                long_values = np.arange(rows).reshape(rows, 1) % 89
                with Blocker(process, "slow_unbatched", rows) as blocker:
                    for queued, (name, values) in enumerate((("A", np.ones((1, 1))), ("C", long_values)), start=1):
                        client.async_infer(
                            "slow_unbatched", echo_input(values), lambda result, error, name=name: answered.put((name, error or result))
                        )
                        held = blocker.wait_queued(queued)  # A first, then C: one hand-over in that order
                first, first_outcome = answered.get(timeout=120)
                at_first_answer = process.metrics()
                answered.get(timeout=120)
                if not held:
                    return False
                assert first == "A" and not isinstance(first_outcome, Exception), first_outcome
                if at_first_answer.model("slow_unbatched", EXECUTING) != 1:
                    return False  # C was already done too: held back with it, or C was too short to tell
                assert blocker.executions(at_first_answer) - blocker.executions_before == 2  # the blocker and A
                return True

            until_premise_holds(attempt, rows_lasting(1.0), "A answered while C still ran")


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
