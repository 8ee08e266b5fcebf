"""KIND_GPU and KIND_AUTO models on a real GPU, through ORT's CUDA execution provider.

GPU instances feed ORT through IO binding (inputs bound from host memory, outputs copied back),
so every answer checked here went through ``ModelInstance._run_bound``. Clients are tritonclient's.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient

from scripts import onnx_models
from scripts.harness import ServerProcess
from tests.gpu.gpu_env import settled_index
from tests.repository_builder import write_model

pytestmark = pytest.mark.gpu

SIMPLE_GPU = """
max_batch_size: 8
dynamic_batching { max_queue_delay_microseconds: 2000 }
instance_group [ { kind: KIND_GPU count: 1 gpus: [ 0 ] } ]
"""
MLP_GPU = "max_batch_size: 32\ninstance_group [ { kind: KIND_GPU count: 2 } ]"
HALF_GPU = "max_batch_size: 8\ninstance_group [ { kind: KIND_GPU } ]"
AUTO_DEVICE = "max_batch_size: 8\ninstance_group [ { kind: KIND_AUTO } ]"
MODELS = ("simple_gpu", "mlp_gpu", "half_gpu", "auto_device")


@pytest.fixture(scope="module")
def repository(tmp_path_factory: pytest.TempPathFactory) -> Path:
    repository = tmp_path_factory.mktemp("gpu_repo")
    write_model(repository, "simple_gpu", onnx_models.simple(), SIMPLE_GPU)
    write_model(repository, "mlp_gpu", onnx_models.mlp(), MLP_GPU)
    write_model(repository, "half_gpu", onnx_models.identity("FP16", ["batch", 8]), HALF_GPU)
    write_model(repository, "auto_device", onnx_models.add_constant("FP32", ["batch", 4], 1.0), AUTO_DEVICE)
    return repository


@pytest.fixture(scope="module")
def gpu_server(cuda_gpus: int, repository: Path) -> Iterator[ServerProcess]:
    """Not strict-ready, so a model that fails to load fails the tests at once with its reason."""
    process = ServerProcess([repository], ["--strict-readiness=false"], log_path=repository.parent / "gpu-server.log")
    with process, grpcclient.InferenceServerClient(process.grpc_url) as client:
        index = settled_index(client, set(MODELS))
        failed = {name: index[name].get("reason") for name in MODELS if index[name]["state"] != "READY"}
        if failed:
            pytest.fail(f"models did not load on the GPU: {failed}")
        yield process


@pytest.fixture
def client(gpu_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(gpu_server.grpc_url) as triton:
        yield triton


def instance_devices(process: ServerProcess, model: str) -> list[str]:
    """The devices the server's one log line per model names for its instances."""
    match = re.search(rf"model '{model}': versions .*; instances: \d+ \(([^)]*)\)", process.log())
    assert match, f"no instance line for {model}:\n{process.log()}"
    return match.group(1).split(", ")


def grpc_inputs(**arrays: np.ndarray) -> list[grpcclient.InferInput]:
    items = []
    for name, array in arrays.items():
        item = grpcclient.InferInput(name, list(array.shape), {"int32": "INT32", "float32": "FP32", "float16": "FP16"}[array.dtype.name])
        item.set_data_from_numpy(array)
        items.append(item)
    return items


def test_gpu_instances_run_on_the_gpus_they_were_given(gpu_server: ServerProcess, cuda_gpus: int) -> None:
    assert instance_devices(gpu_server, "simple_gpu") == ["cuda:0"]
    # count 2 on every GPU (no gpus listed): two instances per GPU, in GPU order.
    assert instance_devices(gpu_server, "mlp_gpu") == [f"cuda:{gpu}" for gpu in range(cuda_gpus) for _ in range(2)]
    assert instance_devices(gpu_server, "half_gpu") == [f"cuda:{gpu}" for gpu in range(cuda_gpus)]


def test_simple_on_the_gpu_is_exact_over_grpc_and_http(gpu_server: ServerProcess, client: grpcclient.InferenceServerClient) -> None:
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    result = client.infer("simple_gpu", grpc_inputs(INPUT0=a, INPUT1=b))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)
    with httpclient.InferenceServerClient(gpu_server.http_url) as http:
        items = [httpclient.InferInput("INPUT0", [1, 16], "INT32"), httpclient.InferInput("INPUT1", [1, 16], "INT32")]
        items[0].set_data_from_numpy(a, binary_data=False)
        items[1].set_data_from_numpy(b, binary_data=True)
        answer = http.infer("simple_gpu", items)
    np.testing.assert_array_equal(answer.as_numpy("OUTPUT0"), a + b)
    np.testing.assert_array_equal(answer.as_numpy("OUTPUT1"), a - b)


def test_io_binding_returns_each_request_its_own_rows(client: grpcclient.InferenceServerClient) -> None:
    """Requests of 1 to 8 rows at once: whatever batches form, each answer holds its own rows."""
    rng = np.random.default_rng(7)
    requests = [rng.integers(-1000, 1000, size=(2, rows, 16), dtype=np.int32) for rows in (1, 2, 3, 8, 1, 5, 4, 1) * 3]

    def send(pair: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        result = client.infer("simple_gpu", grpc_inputs(INPUT0=pair[0], INPUT1=pair[1]))
        return result.as_numpy("OUTPUT0"), result.as_numpy("OUTPUT1")

    with ThreadPoolExecutor(max_workers=12) as pool:
        answers = list(pool.map(send, requests))
    for pair, (total, difference) in zip(requests, answers):
        np.testing.assert_array_equal(total, pair[0] + pair[1])
        np.testing.assert_array_equal(difference, pair[0] - pair[1])


def test_one_requested_output_of_two_comes_back_alone(client: grpcclient.InferenceServerClient) -> None:
    a, b = np.full((2, 16), 9, np.int32), np.full((2, 16), 4, np.int32)
    result = client.infer("simple_gpu", grpc_inputs(INPUT0=a, INPUT1=b), outputs=[grpcclient.InferRequestedOutput("OUTPUT1")])
    assert [output.name for output in result.get_response().outputs] == ["OUTPUT1"]
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), a - b)


def test_mlp_on_the_gpu_matches_the_cpu_reference(repository: Path, client: grpcclient.InferenceServerClient) -> None:
    model_file = repository / "mlp_gpu" / "1" / "model.onnx"
    reference = ort.InferenceSession(str(model_file), providers=["CPUExecutionProvider"])
    inputs = [np.random.default_rng(seed).standard_normal((rows, 256)).astype(np.float32) for seed, rows in enumerate((1, 7, 32, 16))]

    def send(x: np.ndarray) -> np.ndarray:
        return client.infer("mlp_gpu", grpc_inputs(input=x)).as_numpy("output")

    with ThreadPoolExecutor(max_workers=4) as pool:
        answers = list(pool.map(send, inputs))
    for x, answer in zip(inputs, answers):
        (expected,) = reference.run(["output"], {"input": x})
        # The CUDA provider multiplies FP32 in TF32 by default: agreement to about 1e-3 of the scale.
        np.testing.assert_allclose(answer, expected, rtol=2e-2, atol=2e-2 * float(np.abs(expected).max()))


def test_fp16_tensors_round_trip_exactly(client: grpcclient.InferenceServerClient) -> None:
    x = (np.arange(24, dtype=np.float32).reshape(3, 8) / 7).astype(np.float16)
    np.testing.assert_array_equal(client.infer("half_gpu", grpc_inputs(INPUT0=x)).as_numpy("OUTPUT0"), x)


def test_kind_auto_picks_every_gpu(gpu_server: ServerProcess, client: grpcclient.InferenceServerClient, cuda_gpus: int) -> None:
    config = client.get_model_config("auto_device", as_json=True)["config"]
    groups = [(g["kind"], [int(gpu) for gpu in g.get("gpus", [])]) for g in config["instance_group"]]
    assert groups == [("KIND_GPU", list(range(cuda_gpus)))]
    assert instance_devices(gpu_server, "auto_device") == [f"cuda:{gpu}" for gpu in range(cuda_gpus)]
    result = client.infer("auto_device", grpc_inputs(INPUT0=np.zeros((3, 4), np.float32)))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.ones((3, 4), np.float32))
