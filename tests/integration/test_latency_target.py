"""``ortserve.target_latency_p99_ms`` end to end: validated at load, its delay shown in /metrics.

A lone client's requests never share a batch, so whatever the machine's speed the tuned delay
stays 0 and each request runs at once; the load failures are a matter of the config alone.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from scripts import onnx_models
from scripts.harness import ServerProcess
from tests.repository_builder import write_model

TARGET = 'parameters {{ key: "ortserve.target_latency_p99_ms" value {{ string_value: "{}" }} }}'
CONFIGS = {
    "targeted": "max_batch_size: 16\ndynamic_batching { }\n" + TARGET.format("20"),
    "hand_tuned": "max_batch_size: 16\ndynamic_batching { max_queue_delay_microseconds: 250 }",
    "bad_value": "max_batch_size: 16\ndynamic_batching { }\n" + TARGET.format("soon"),
    # Inputs and outputs given: auto-complete would otherwise add dynamic_batching.
    "no_batcher": (
        "max_batch_size: 0\ninput [ { name: 'INPUT0', data_type: TYPE_FP32, dims: [ -1, 4 ] } ]\n"
        "output [ { name: 'OUTPUT0', data_type: TYPE_FP32, dims: [ -1, 4 ] } ]\n" + TARGET.format("20")
    ),
}
DELAY = "ortserve_batch_queue_delay_us"


@pytest.fixture(scope="module")
def target_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("target_repo")
    for name, config in CONFIGS.items():
        write_model(repository, name, onnx_models.add_constant("FP32", ["batch", 4], 1.0), config)
    process = ServerProcess([Path(repository)], ["--strict-readiness=false"], log_path=repository / "server.log")
    with process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


def test_a_bad_target_fails_the_load_with_invalid_arg(target_server: ServerProcess) -> None:
    index = {m.name: m for m in grpcclient.InferenceServerClient(target_server.grpc_url).get_model_repository_index().models}
    assert index["targeted"].state == index["hand_tuned"].state == "READY"
    assert (index["bad_value"].state, index["no_batcher"].state) == ("UNAVAILABLE", "UNAVAILABLE")
    assert index["bad_value"].reason == (
        "Invalid argument: model 'bad_value': parameter 'ortserve.target_latency_p99_ms' must be a number of milliseconds "
        "in (0, 60000], got 'soon'"
    )
    assert index["no_batcher"].reason == (
        "Invalid argument: model 'no_batcher': parameter 'ortserve.target_latency_p99_ms' tunes the dynamic batcher's "
        "queue delay and needs dynamic_batching with max_batch_size > 0"
    )


def test_a_lone_client_keeps_no_delay_and_the_gauge_shows_each_delay(target_server: ServerProcess) -> None:
    client = grpcclient.InferenceServerClient(target_server.grpc_url)
    tensor = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
    tensor.set_data_from_numpy(np.ones((1, 4), np.float32))
    for _ in range(300):  # more than two of the controller's windows
        assert client.infer("targeted", [tensor]).as_numpy("OUTPUT0").tolist() == [[2.0] * 4]
    metrics = target_server.metrics()
    assert metrics.model("targeted", "nv_inference_exec_count") == 300
    assert metrics.model("targeted", DELAY) == 0
    assert metrics.model("hand_tuned", DELAY) == 250
    assert f'{DELAY}{{model="bad_value"' not in metrics.text
