"""The dynamic batcher end to end: a real server, real tritonclient calls, counted executions."""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from tests.harness import ServerProcess
from tests.repository_builder import write_model

CONFIGS = {
    "batched_add": "max_batch_size: 32\ndynamic_batching { max_queue_delay_microseconds: 50000 }",
    "bounded_queue": "max_batch_size: 1\ndynamic_batching { default_queue_policy { max_queue_size: 2 } }",
    "queue_timeout": (
        "max_batch_size: 1\ndynamic_batching { default_queue_policy { default_timeout_microseconds: 5000 timeout_action: REJECT } }"
    ),
    # Inputs and outputs given: auto-complete would otherwise turn max_batch_size 0 into 4.
    "cancellable": (
        "max_batch_size: 0\ninput [ { name: 'x', data_type: TYPE_FP32, dims: [ -1, 1 ] } ]\n"
        "output [ { name: 'y', data_type: TYPE_FP32, dims: [ -1, 1 ] } ]"
    ),
    "gather": "max_batch_size: 2\ndynamic_batching { preferred_batch_size: [2] max_queue_delay_microseconds: 200000 }",
    "gpu_only": "max_batch_size: 8\ninstance_group [ { kind: KIND_GPU, count: 1 } ]",
    "auto_device": "max_batch_size: 8\ninstance_group [ { kind: KIND_AUTO, count: 2 } ]",
}


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("batching_repo")
    write_model(repository, "batched_add", onnx_models.add_constant("FP32", ["batch", 4], 1.0), CONFIGS["batched_add"])
    for name in ("bounded_queue", "queue_timeout", "cancellable"):
        write_model(repository, name, onnx_models.slow_echo(), CONFIGS[name])
    write_model(repository, "gather", onnx_models.gather_rows(), CONFIGS["gather"])
    for name in ("gpu_only", "auto_device"):
        write_model(repository, name, onnx_models.add_constant("FP32", ["batch", 4], 1.0), CONFIGS[name])
    process = ServerProcess([Path(repository)], ["--strict-readiness=false"], log_path=repository / "server.log")
    with process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


@pytest.fixture
def client(batching_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(batching_server.grpc_url) as triton:
        yield triton


def fp32_input(name: str, array: np.ndarray) -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(array.shape), "FP32")
    item.set_data_from_numpy(array)
    return item


def fire(client: grpcclient.InferenceServerClient, model: str, inputs: list[list[grpcclient.InferInput]], **kwargs: object) -> list[object]:
    """Send every request with async_infer at once; return results/exceptions in send order."""
    done: queue.Queue[tuple[int, object]] = queue.Queue()
    for index, request_inputs in enumerate(inputs):

        def callback(result: object, error: object, index: int = index) -> None:
            done.put((index, error if error is not None else result))

        client.async_infer(model, request_inputs, callback, **kwargs)
    outcomes: list[object] = [None] * len(inputs)
    for _ in inputs:
        index, outcome = done.get(timeout=60)
        outcomes[index] = outcome
    return outcomes


def model_stats(client: grpcclient.InferenceServerClient, model: str) -> dict:
    return client.get_inference_statistics(model, as_json=True)["model_stats"][0]


def test_concurrent_requests_form_batches_and_each_client_gets_its_rows(client: grpcclient.InferenceServerClient) -> None:
    rows = [np.full((1 + i % 3, 4), i, np.float32) for i in range(24)]
    outcomes = fire(client, "batched_add", [[fp32_input("INPUT0", r)] for r in rows])
    for sent, result in zip(rows, outcomes):
        assert not isinstance(result, Exception), result
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), sent + 1)
    stats = model_stats(client, "batched_add")
    sizes = {int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats["batch_stats"]}
    assert max(sizes) > 1, sizes
    assert sum(size * count for size, count in sizes.items()) == int(stats["inference_count"]) == sum(r.shape[0] for r in rows)
    assert int(stats["execution_count"]) < len(rows)


def test_the_batch_size_histogram_agrees_with_batch_stats(client: grpcclient.InferenceServerClient, batching_server: ServerProcess) -> None:
    import urllib.request

    stats = model_stats(client, "batched_add")
    text = urllib.request.urlopen(batching_server.metrics_url, timeout=5).read().decode()
    count_line = next(line for line in text.splitlines() if line.startswith('ortserve_batch_size_count{model="batched_add"'))
    sum_line = next(line for line in text.splitlines() if line.startswith('ortserve_batch_size_sum{model="batched_add"'))
    assert float(count_line.split()[-1]) == int(stats["execution_count"])
    assert float(sum_line.split()[-1]) == int(stats["inference_count"])


def test_a_stream_feeds_the_batcher_like_many_unary_calls(client: grpcclient.InferenceServerClient) -> None:
    before = int(model_stats(client, "batched_add").get("execution_count", 0))
    answers: queue.Queue[tuple[object, object]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    try:
        for i in range(32):
            client.async_stream_infer("batched_add", [fp32_input("INPUT0", np.full((1, 4), i, np.float32))], request_id=str(i))
        received = [answers.get(timeout=30) for _ in range(32)]
    finally:
        client.stop_stream()
    for result, error in received:
        assert error is None, error
        request_id = int(result.get_response().id)
        np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((1, 4), request_id + 1, np.float32))
    executions = int(model_stats(client, "batched_add").get("execution_count", 0)) - before
    assert executions < 32, "a stream's requests should have been merged"


def test_a_full_queue_rejects_at_once(client: grpcclient.InferenceServerClient) -> None:
    outcomes = fire(client, "bounded_queue", [[fp32_input("x", np.ones((1, 1), np.float32))] for _ in range(12)])
    rejected = [o for o in outcomes if isinstance(o, InferenceServerException)]
    served = [o for o in outcomes if not isinstance(o, Exception)]
    assert rejected and served
    for error in rejected:
        assert error.status() == "StatusCode.UNAVAILABLE"
        assert error.message() == "Exceeds maximum queue size"


def test_queue_timeout_rejects_with_tritons_message_and_counts_rejected(
    client: grpcclient.InferenceServerClient, batching_server: ServerProcess
) -> None:
    outcomes = fire(client, "queue_timeout", [[fp32_input("x", np.ones((1, 1), np.float32))] for _ in range(6)])
    timed_out = [o for o in outcomes if isinstance(o, InferenceServerException)]
    assert timed_out, "five requests queued behind a ~20 ms run should exceed a 5 ms queue timeout"
    for error in timed_out:
        assert (error.status(), error.message()) == ("StatusCode.UNAVAILABLE", "Request timeout expired")
    import urllib.request

    text = urllib.request.urlopen(batching_server.metrics_url, timeout=5).read().decode()
    series = 'nv_inference_request_failure{model="queue_timeout",version="1",reason="REJECTED"}'
    line = next(row for row in text.splitlines() if row.startswith(series))
    assert int(line.split()[-1]) == len(timed_out)


def test_cancelled_calls_are_never_executed(client: grpcclient.InferenceServerClient) -> None:
    before = int(model_stats(client, "cancellable").get("execution_count", 0))
    long_rows = np.ones((48, 1), np.float32)  # ~1 s of work holds the only instance
    results: list[object] = []
    blocker = threading.Thread(target=lambda: results.append(client.infer("cancellable", [fp32_input("x", long_rows)])))
    blocker.start()
    time.sleep(0.2)
    outcomes = fire(client, "cancellable", [[fp32_input("x", np.ones((1, 1), np.float32))] for _ in range(5)], client_timeout=0.1)
    blocker.join(30)
    assert all(isinstance(o, InferenceServerException) and o.status() == "StatusCode.DEADLINE_EXCEEDED" for o in outcomes), outcomes
    np.testing.assert_allclose(results[0].as_numpy("y"), long_rows, rtol=1e-5)
    time.sleep(0.3)
    assert int(model_stats(client, "cancellable").get("execution_count", 0)) - before == 1


def test_an_onnxruntime_failure_fails_only_its_batch(client: grpcclient.InferenceServerClient) -> None:
    def index_input(value: int) -> list[grpcclient.InferInput]:
        item = grpcclient.InferInput("index", [1, 1], "INT64")
        item.set_data_from_numpy(np.array([[value]], np.int64))
        return [item]

    # max_batch_size 2 with a long delay: the bad index shares a batch with one good request
    # (which one depends on arrival order), the other two form a healthy batch.
    values = (20, 3, 4, 5)
    outcomes = fire(client, "gather", [index_input(v) for v in values])
    failed = [v for v, o in zip(values, outcomes) if isinstance(o, Exception)]
    assert 20 in failed and len(failed) == 2, outcomes
    for value, outcome in zip(values, outcomes):
        if value in failed:
            assert isinstance(outcome, InferenceServerException) and outcome.status() == "StatusCode.INTERNAL"
            assert "indices element out of data bounds" in outcome.message()
        else:
            np.testing.assert_array_equal(outcome.as_numpy("row"), np.full((1, 1, 4), value, np.float32))
    single = client.infer("gather", index_input(7)).as_numpy("row")
    np.testing.assert_array_equal(single, np.full((1, 1, 4), 7, np.float32))


def test_kind_gpu_without_cuda_fails_that_model_only_with_a_clear_reason(client: grpcclient.InferenceServerClient) -> None:
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index["gpu_only"]["state"] == "UNAVAILABLE"
    assert "KIND_GPU" in index["gpu_only"]["reason"] and "CUDAExecutionProvider" in index["gpu_only"]["reason"]
    assert index["batched_add"]["state"] == "READY"


def test_kind_auto_falls_back_to_cpu_instances(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("auto_device", as_json=True)["config"]
    assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [("KIND_CPU", 2)]
    result = client.infer("auto_device", [fp32_input("INPUT0", np.zeros((2, 4), np.float32))])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.ones((2, 4), np.float32))
