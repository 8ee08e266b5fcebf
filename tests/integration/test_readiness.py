"""Readiness for probes: gRPC ServerLive/ServerReady, HTTP /v2/health/{live,ready} and
grpc.health.v1 — during the initial load, during a reload, after a failure, with no models.

A slow warmup (slow_echo runs, as many as were measured to take WARMUP_SECS here) stretches loads
so that probes land inside; each test checks from the server's log that they did, and repeats
with twice the warmup when they did not.
"""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest
import tritonclient.grpc as grpcclient
from grpc_health.v1 import health_pb2, health_pb2_grpc
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import ServerProcess, http_status
from tests.integration.slow_work import ONE_INSTANCE, executions_lasting, until_premise_holds
from tests.repository_builder import write_model

WARMUP_SECS = 1.5


def slow_config(executions: int) -> str:
    return (
        f"max_batch_size: 4\n{ONE_INSTANCE}\n"
        f'model_warmup [ {{ name: "slow" batch_size: 1 count: {executions} '
        'inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true } } } ]\n'
    )


def write_slow_model(repository: Path, executions: int) -> Path:
    write_model(repository, "slow", onnx_models.slow_echo(), slow_config(executions))
    return repository


def warmup_line(executions: int) -> str:
    return f"warmup ran {executions} execution(s)"


class Probes:
    """Every liveness and readiness probe a deployment might use, over one set of connections."""

    def __init__(self, server: ServerProcess) -> None:
        self.server = server
        self.client = grpcclient.InferenceServerClient(server.grpc_url)
        self.channel = grpc.insecure_channel(server.grpc_url)
        self.health = health_pb2_grpc.HealthStub(self.channel)

    def live(self) -> dict[str, bool]:
        return {
            "grpc": self.client.is_server_live(),
            "http": http_status(f"http://{self.server.http_url}/v2/health/live") == 200,
        }

    def ready(self) -> dict[str, bool]:
        status = self.health.Check(health_pb2.HealthCheckRequest(service=""), timeout=5).status
        return {
            "grpc": self.client.is_server_ready(),
            "http": http_status(f"http://{self.server.http_url}/v2/health/ready") == 200,
            "grpc.health.v1": status == health_pb2.HealthCheckResponse.SERVING,
        }

    def model_ready(self, name: str) -> bool:
        try:
            return self.client.is_model_ready(name)
        except InferenceServerException:
            return False

    def close(self) -> None:
        self.client.close()
        self.channel.close()


@pytest.fixture
def slow_repository(tmp_path: Path) -> Path:
    return write_slow_model(tmp_path / "repo", executions_lasting(WARMUP_SECS))


def started(repository: Path, args: list[str], log: Path) -> ServerProcess:
    return ServerProcess([repository], args, log_path=log).start(wait_for="live")


@pytest.mark.timeout(180)
def test_live_at_once_ready_after_the_initial_load(tmp_path: Path) -> None:
    def attempt(executions: int) -> bool:
        server = started(write_slow_model(tmp_path / "repo", executions), [], tmp_path / f"server-{executions}.log")
        probes = Probes(server)
        seen: list[tuple[dict[str, bool], dict[str, bool]]] = []
        try:
            seen.append((probes.live(), probes.ready()))
            # Logged when the warmup ends, before the model and the server may turn ready.
            first_round_within_load = warmup_line(executions) not in server.log()
            deadline = time.monotonic() + 90
            while not all(seen[-1][1].values()) and time.monotonic() < deadline:
                time.sleep(0.02)
                seen.append((probes.live(), probes.ready()))
        finally:
            probes.close()
            server.terminate()
        if not first_round_within_load:
            return False
        assert all(all(live.values()) for live, _ in seen)
        assert seen[0][1] == {"grpc": False, "http": False, "grpc.health.v1": False}
        assert seen[-1][1] == {"grpc": True, "http": True, "grpc.health.v1": True}
        assert warmup_line(executions) in server.log()
        return True

    until_premise_holds(attempt, executions_lasting(WARMUP_SECS), "the first probes landed inside the initial load", most=10**6)


@pytest.fixture
def explicit_slow_server(slow_repository: Path, tmp_path: Path) -> Iterator[ServerProcess]:
    server = started(slow_repository, ["--model-control-mode", "explicit", "--load-model", "slow"], tmp_path / "server.log")
    try:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 45)
        yield server
    finally:
        server.terminate()


@pytest.mark.timeout(180)
def test_stays_ready_while_a_model_reloads(explicit_slow_server: ServerProcess, slow_repository: Path) -> None:
    probes = Probes(explicit_slow_server)

    def attempt(executions: int) -> bool:
        write_slow_model(slow_repository, executions)  # the reload reads this config
        warmups_before = explicit_slow_server.log().count(warmup_line(executions))
        reload = threading.Thread(target=lambda: probes.client.load_model("slow"))
        seen: list[dict[str, bool]] = []
        reload.start()
        while reload.is_alive():
            seen.append(probes.ready() | {"model": probes.model_ready("slow")})
            time.sleep(0.02)
        reload.join()
        assert explicit_slow_server.log().count(warmup_line(executions)) == warmups_before + 1  # the reload did warm up again
        if len(seen) < 5:
            return False  # the reload was too quick to probe during it
        assert all(all(probe.values()) for probe in seen), [probe for probe in seen if not all(probe.values())][:3]
        return True

    try:
        until_premise_holds(attempt, executions_lasting(WARMUP_SECS), "five probe rounds during the reload", most=10**6)
    finally:
        probes.close()


def test_failed_reload_keeps_the_old_version_serving_and_the_server_ready(explicit_slow_server: ServerProcess) -> None:
    probes = Probes(explicit_slow_server)
    try:
        with pytest.raises(InferenceServerException, match="reload failed, the previous load keeps serving"):
            probes.client.load_model("slow", config=json.dumps({"max_batch_size": 4}), files={"file:1/model.onnx": b"garbage"})
        assert probes.ready() == {"grpc": True, "http": True, "grpc.health.v1": True}
        assert probes.model_ready("slow")
        index = probes.client.get_model_repository_index(as_json=True)["models"]
    finally:
        probes.close()
    [entry] = [m for m in index if m["name"] == "slow"]
    assert entry["state"] == "READY" and "onnx runtime error" in entry["reason"]


@pytest.mark.parametrize(("strict", "ready"), [("true", False), ("false", True)], ids=["strict", "not_strict"])
def test_a_failed_model_keeps_a_strict_server_unready(tmp_path: Path, strict: str, ready: bool) -> None:
    repository = tmp_path / "repo"
    write_model(repository, "good", onnx_models.add_constant("FP32", ["batch", 4], 1.0))
    (repository / "broken" / "1").mkdir(parents=True)
    (repository / "broken" / "1" / "model.onnx").write_bytes(b"garbage")
    server = started(repository, [f"--strict-readiness={strict}"], tmp_path / "server.log")
    probes = Probes(server)
    try:
        server.wait_for_log("ortserve ready to serve")
        assert probes.live() == {"grpc": True, "http": True}
        assert probes.ready() == {"grpc": ready, "http": ready, "grpc.health.v1": ready}
        assert probes.model_ready("good") and not probes.model_ready("broken")
        index = {m["name"]: m for m in probes.client.get_model_repository_index(as_json=True)["models"]}
    finally:
        probes.close()
        server.terminate()
    assert index["broken"]["state"] == "UNAVAILABLE" and "onnx runtime error" in index["broken"]["reason"]


@pytest.mark.parametrize(("load_models", "ready"), [([], True), (["missing"], False)], ids=["no_models", "missing_model"])
def test_explicit_mode_readiness_without_loaded_models(tmp_path: Path, load_models: list[str], ready: bool) -> None:
    repository = tmp_path / "repo"
    write_model(repository, "idle", onnx_models.add_constant("FP32", ["batch", 4], 1.0))
    args = ["--model-control-mode", "explicit", *(f"--load-model={name}" for name in load_models)]
    server = started(repository, args, tmp_path / "server.log")
    probes = Probes(server)
    try:
        server.wait_for_log("ortserve ready to serve")
        assert probes.ready() == {"grpc": ready, "http": ready, "grpc.health.v1": ready}
        index = {(m["name"], m.get("reason", "")) for m in probes.client.get_model_repository_index(as_json=True)["models"]}
    finally:
        probes.close()
        server.terminate()
    expected = {("idle", "not loaded")} | {(name, f"model '{name}' was not found in any model repository") for name in load_models}
    assert index == expected
