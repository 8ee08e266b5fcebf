"""model_warmup end to end: a version is READY only after its warmup ran, and a failing warmup
leaves it UNAVAILABLE with the reason.

Executions are counted from the server's log line "warmup ran N execution(s)", where
N = instances * (sum of count over the samples).
"""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import ServerProcess, http_status
from tests.integration.slow_work import ONE_INSTANCE, executions_lasting, until_premise_holds
from tests.repository_builder import write_model


def warmup_sample(name: str, source: str, count: int, batch_size: int, dims: str = "4", data_type: str = "TYPE_FP32") -> str:
    """One ModelWarmup entry for input INPUT0 (``source`` is e.g. 'zero_data: true')."""
    return (
        f'{{ name: "{name}" batch_size: {batch_size} count: {count} '
        f'inputs {{ key: "INPUT0" value: {{ data_type: {data_type} dims: [ {dims} ] {source} }} }} }}'
    )


def warmup_config(samples: list[str], instances: int = 2) -> str:
    return f"max_batch_size: 4\ninstance_group [ {{ kind: KIND_CPU, count: {instances} }} ]\nmodel_warmup [ {', '.join(samples)} ]\n"


# name → (config, expected executions): N = instances * sum of counts.
GOOD = {
    "zero_data": (warmup_config([warmup_sample(f"z{i}", "zero_data: true", 3, 2) for i in range(2)]), 2 * (3 + 3)),
    "random_data": (warmup_config([warmup_sample(f"r{i}", "random_data: true", 2, 3) for i in range(2)]), 2 * (2 + 2)),
    "input_data_file": (warmup_config([warmup_sample("f", 'input_data_file: "rows.bin"', 4, 2)], instances=3), 3 * 4),
    "mixed": (
        warmup_config([warmup_sample("z", "zero_data: true", 5, 1), warmup_sample("f", 'input_data_file: "rows.bin"', 1, 2)]),
        2 * (5 + 1),
    ),
}
# name → (config, fragment of the UNAVAILABLE reason).
BAD = {
    "file_byte_size": (
        warmup_config([warmup_sample("short", 'input_data_file: "short.bin"', 1, 2)]),
        "warmup sample 'short': input_data_file 'short.bin': input byte size mismatch for input 'INPUT0'",
    ),
    "data_type": (
        warmup_config([warmup_sample("int", "zero_data: true", 1, 1, data_type="TYPE_INT32")]),
        "warmup sample 'int': input 'INPUT0' has data_type INT32 but the model expects FP32",
    ),
    "missing_file": (
        warmup_config([warmup_sample("gone", 'input_data_file: "gone.bin"', 1, 1)]),
        "warmup sample 'gone': input_data_file 'gone.bin' not found",
    ),
    "file_outside_warmup_dir": (
        warmup_config([warmup_sample("escape", 'input_data_file: "../config.pbtxt"', 1, 1)]),
        "warmup sample 'escape' input_data_file '../config.pbtxt' must name a file inside the model directory",
    ),
    "unknown_input": (
        "max_batch_size: 4\nmodel_warmup [ { name: 'extra' batch_size: 1 inputs [ "
        "{ key: 'INPUT0' value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } }, "
        "{ key: 'NOPE' value: { data_type: TYPE_FP32 dims: [ 4 ] zero_data: true } } ] } ]\n",
        "warmup sample 'extra': unknown input(s) ['NOPE']",
    ),
}


def write_warmup_model(repository: Path, name: str, config: str) -> None:
    write_model(repository, name, onnx_models.add_constant("FP32", ["batch", 4], 1.0), config)
    warmup = repository / name / "warmup"
    warmup.mkdir()
    (warmup / "rows.bin").write_bytes(np.arange(8, dtype=np.float32).tobytes())  # 2 rows of 4
    (warmup / "short.bin").write_bytes(b"\x00" * 12)


def executions_logged(log: str, model: str) -> list[int]:
    return [int(n) for n in re.findall(rf"model '{model}' version 1: warmup ran (\d+) execution\(s\)", log)]


def model_ready(client: grpcclient.InferenceServerClient, name: str) -> bool:
    try:
        return client.is_model_ready(name)
    except InferenceServerException:
        return False


@pytest.fixture(scope="module")
def warmup_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("warmup_repo")
    for name, (config, _) in (GOOD | BAD).items():
        write_warmup_model(repository, name, config)
    log = tmp_path_factory.mktemp("logs") / "warmup.log"
    with ServerProcess([repository], ["--strict-readiness=false"], log_path=log) as server:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 60)
        yield server


@pytest.fixture
def client(warmup_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(warmup_server.grpc_url) as triton:
        yield triton


@pytest.mark.parametrize(("model", "executions"), [(name, n) for name, (_, n) in GOOD.items()], ids=list(GOOD))
def test_warmup_runs_every_sample_count_times_on_every_instance(
    warmup_server: ServerProcess, client: grpcclient.InferenceServerClient, model: str, executions: int
) -> None:
    assert executions_logged(warmup_server.log(), model) == [executions]
    assert model_ready(client, model)
    item = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    item.set_data_from_numpy(np.zeros((1, 4), np.float32))
    assert client.infer(model, [item]).as_numpy("OUTPUT0").tolist() == [[1.0] * 4]


@pytest.mark.parametrize(("model", "reason"), [(name, reason) for name, (_, reason) in BAD.items()], ids=list(BAD))
def test_failing_warmup_leaves_the_model_unavailable_with_the_reason(
    warmup_server: ServerProcess, client: grpcclient.InferenceServerClient, model: str, reason: str
) -> None:
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index[model]["state"] == "UNAVAILABLE"
    assert reason in index[model]["reason"]
    assert not model_ready(client, model)
    assert executions_logged(warmup_server.log(), model) == []
    assert http_status(f"http://{warmup_server.http_url}/v2/models/{model}/ready") != 200


# ---- not ready until warmup ran ----------------------------------------------------------------

# As many slow_echo runs as were measured to take this long here: the probes land inside the warmup.
WARMUP_SECS = 1.5


def slow_config(executions: int) -> str:
    return (
        f"max_batch_size: 4\n{ONE_INSTANCE}\n"
        f'model_warmup [ {{ name: "slow" batch_size: 1 count: {executions} '
        'inputs { key: "x" value: { data_type: TYPE_FP32 dims: [ 1 ] random_data: true } } } ]\n'
    )


@pytest.mark.timeout(180)
def test_model_is_not_ready_until_its_warmup_ran(tmp_path: Path) -> None:
    def attempt(executions: int) -> bool:
        write_model(tmp_path / "repo", "slow", onnx_models.slow_echo(), slow_config(executions))
        server = ServerProcess([tmp_path / "repo"], [], log_path=tmp_path / f"server-{executions}.log").start(wait_for="live")
        try:
            probes = probe_until_ready(server)
            metrics = urllib.request.urlopen(server.metrics_url, timeout=5).read().decode()
            log = server.log()
        finally:
            server.terminate()
        if probes[0][2]:
            return False  # the warmup had ended before the first probes: they saw nothing of it
        assert probes[-1][:2] == (True, True)
        assert not probes[0][0] and not probes[0][1], "ready before warmup could have run"
        assert all(logged for grpc_ready, http_ready, logged in probes if grpc_ready or http_ready)
        assert executions_logged(log, "slow") == [executions]
        warmup_secs = float(re.search(r"warmup ran \d+ execution\(s\) in ([\d.]+)s", log).group(1))  # type: ignore[union-attr]
        load_secs = float(re.search(r'nv_model_load_duration_secs\{model="slow",version="1"\} ([\d.]+)', metrics).group(1))  # type: ignore[union-attr]
        assert load_secs >= warmup_secs > 0
        return True

    until_premise_holds(attempt, executions_lasting(WARMUP_SECS), "the first probes landed inside the warmup", most=10**6)


def probe_until_ready(server: ServerProcess, timeout: float = 90.0) -> list[tuple[bool, bool, bool]]:
    """(gRPC model ready, HTTP model ready, warmup line logged once both were asked) until both say ready."""
    probes: list[tuple[bool, bool, bool]] = []
    deadline = time.monotonic() + timeout
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        while time.monotonic() < deadline:
            grpc_ready = model_ready(client, "slow")
            http_ready = http_status(f"http://{server.http_url}/v2/models/slow/ready") == 200
            probes.append((grpc_ready, http_ready, bool(executions_logged(server.log(), "slow"))))
            if grpc_ready and http_ready:
                break
            time.sleep(0.05)
    return probes
