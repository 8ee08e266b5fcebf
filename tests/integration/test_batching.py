"""The dynamic batcher end to end: a real server, real tritonclient calls, counted executions.

Whether requests queue, merge, time out or are cancelled must not depend on how fast this machine
is, so each scheduler test first holds the model's only instance with a Blocker (tests/integration/
slow_work.py), waits until /metrics shows its own requests queued behind it, checks from the
server's counters that the blocker was still running when it mattered, and retries with twice
the work otherwise.
"""

from __future__ import annotations

import collections
import queue
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import ServerProcess, wait_until
from tests.integration.slow_work import EXECUTING, MAX_ROWS, ONE_INSTANCE, PENDING, Blocker, echo_input, rows_lasting, until_premise_holds
from tests.repository_builder import write_model

CONFIGS = {
    "batched": f"max_batch_size: {MAX_ROWS}\ndynamic_batching {{ }}\n{ONE_INSTANCE}",
    "bounded_queue": f"max_batch_size: {MAX_ROWS}\ndynamic_batching {{ default_queue_policy {{ max_queue_size: 2 }} }}\n{ONE_INSTANCE}",
    "queue_timeout": (
        f"max_batch_size: {MAX_ROWS}\n{ONE_INSTANCE}\n"
        "dynamic_batching { default_queue_policy { default_timeout_microseconds: 5000 timeout_action: REJECT } }"
    ),
    # Inputs and outputs given: auto-complete would otherwise turn max_batch_size 0 into 4.
    "cancellable": (
        f"max_batch_size: 0\n{ONE_INSTANCE}\ninput [ {{ name: 'x', data_type: TYPE_FP32, dims: [ -1, 1 ] }} ]\n"
        "output [ { name: 'y', data_type: TYPE_FP32, dims: [ -1, 1 ] } ]"
    ),
    # Pairs are dispatched as soon as they are complete; the long delay only keeps a lone request
    # waiting for its partner however slowly the client sends.
    "gather": "max_batch_size: 2\ndynamic_batching { preferred_batch_size: [2] max_queue_delay_microseconds: 30000000 }",
    "gpu_only": "max_batch_size: 8\ninstance_group [ { kind: KIND_GPU, count: 1 } ]",
    "auto_device": "max_batch_size: 8\ninstance_group [ { kind: KIND_AUTO, count: 2 } ]",
}
SLOW_MODELS = ("batched", "bounded_queue", "queue_timeout", "cancellable")
# What a blocker is first sized to last; the queue timeout (5 ms) is far shorter.
BLOCKER_SECS = 1.0
# The client deadline of the requests to cancel: long enough that each reaches the server first.
DEADLINE_SECS = 0.5


@pytest.fixture(scope="module")
def batching_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("batching_repo")
    for name in SLOW_MODELS:
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


class Replies:
    """The outcomes (result or exception) of requests sent with async_infer, by send order."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._arrivals: queue.Queue[tuple[int, object]] = queue.Queue()
        self._outcomes: dict[int, object] = {}

    def callback(self, index: int) -> object:
        def record(result: object, error: object) -> None:
            self._arrivals.put((index, error if error is not None else result))

        return record

    def wait(self, count: int | None = None, timeout: float = 120.0) -> list[object]:
        """Block until ``count`` (default: all) replies are in; return those in send order."""
        while len(self._outcomes) < (self.count if count is None else count):
            index, outcome = self._arrivals.get(timeout=timeout)
            self._outcomes[index] = outcome
        return [self._outcomes[i] for i in sorted(self._outcomes)]


def fp32_input(name: str, array: np.ndarray) -> grpcclient.InferInput:
    item = grpcclient.InferInput(name, list(array.shape), "FP32")
    item.set_data_from_numpy(array)
    return item


def fire(client: grpcclient.InferenceServerClient, model: str, inputs: list[list[grpcclient.InferInput]], **kwargs: object) -> Replies:
    """Send every request with async_infer at once, without waiting for any."""
    replies = Replies(len(inputs))
    for index, request_inputs in enumerate(inputs):
        client.async_infer(model, request_inputs, replies.callback(index), **kwargs)
    return replies


def model_stats(client: grpcclient.InferenceServerClient, model: str) -> dict:
    return client.get_inference_statistics(model, as_json=True)["model_stats"][0]


def batch_counts(stats: dict) -> collections.Counter[int]:
    return collections.Counter({int(b["batch_size"]): int(b["compute_infer"]["count"]) for b in stats.get("batch_stats", [])})


def wait_idle(server: ServerProcess, model: str) -> None:
    """Until nothing is queued or executing on ``model``."""

    def idle() -> bool:
        metrics = server.metrics()
        return metrics.model(model, PENDING) == 0 and metrics.model(model, EXECUTING) == 0

    wait_until(idle, 120, f"'{model}' idle")


def test_requests_queued_together_form_one_batch_and_each_client_gets_its_rows(
    client: grpcclient.InferenceServerClient, batching_server: ServerProcess
) -> None:
    rows = [np.full((1 + i % 3, 1), i, np.float32) for i in range(24)]

    def attempt(blocker_rows: int) -> bool:
        before = batch_counts(model_stats(client, "batched"))
        with Blocker(batching_server, "batched", blocker_rows) as blocker:
            replies = fire(client, "batched", [echo_input(r) for r in rows])
            queued_behind = blocker.wait_queued(len(rows))
        outcomes = replies.wait()
        wait_idle(batching_server, "batched")
        if not queued_behind:
            return False
        for sent, result in zip(rows, outcomes):
            assert not isinstance(result, Exception), result
            np.testing.assert_allclose(result.as_numpy("y"), sent, rtol=1e-5)
        grown = batch_counts(model_stats(client, "batched")) - before
        assert grown == collections.Counter([blocker_rows, sum(r.shape[0] for r in rows)]), grown
        return True

    until_premise_holds(attempt, rows_lasting(BLOCKER_SECS), "24 requests queued while the blocker ran")


def test_the_batch_size_histogram_agrees_with_batch_stats(client: grpcclient.InferenceServerClient, batching_server: ServerProcess) -> None:
    stats = model_stats(client, "batched")
    metrics = batching_server.metrics()
    assert int(stats["execution_count"]) > 0
    assert metrics.model("batched", "ortserve_batch_size_count") == int(stats["execution_count"])
    assert metrics.model("batched", "ortserve_batch_size_sum") == int(stats["inference_count"])


def test_a_stream_feeds_the_batcher_like_many_unary_calls(client: grpcclient.InferenceServerClient, batching_server: ServerProcess) -> None:
    def attempt(blocker_rows: int) -> bool:
        before = int(model_stats(client, "batched").get("execution_count", 0))
        answers: queue.Queue[tuple[object, object]] = queue.Queue()
        client.start_stream(callback=lambda result, error: answers.put((result, error)))
        try:
            with Blocker(batching_server, "batched", blocker_rows) as blocker:
                for i in range(32):
                    client.async_stream_infer("batched", echo_input(np.full((1, 1), i)), request_id=str(i))
                queued_behind = blocker.wait_queued(32)
            received = [answers.get(timeout=120) for _ in range(32)]
        finally:
            client.stop_stream()
        wait_idle(batching_server, "batched")
        if not queued_behind:
            return False
        for result, error in received:
            assert error is None, error
            request_id = int(result.get_response().id)
            np.testing.assert_allclose(result.as_numpy("y"), np.full((1, 1), request_id, np.float32), rtol=1e-5)
        executions = int(model_stats(client, "batched").get("execution_count", 0)) - before
        assert executions == 2, "the blocker, then the stream's 32 requests merged into one batch"
        return True

    until_premise_holds(attempt, rows_lasting(BLOCKER_SECS), "32 stream requests queued while the blocker ran")


def test_a_full_queue_rejects_at_once(client: grpcclient.InferenceServerClient, batching_server: ServerProcess) -> None:
    def attempt(blocker_rows: int) -> bool:
        rejected_before = batching_server.metrics().model("bounded_queue", "nv_inference_request_failure", reason="REJECTED")
        with Blocker(batching_server, "bounded_queue", blocker_rows) as blocker:
            replies = fire(client, "bounded_queue", [echo_input(np.ones((1, 1))) for _ in range(12)])
            rejected_first = replies.wait(10)  # max_queue_size 2: the other ten are refused on arrival
            metrics = batching_server.metrics()
            held = blocker.running(metrics) and metrics.model("bounded_queue", PENDING) == 2
        outcomes = replies.wait()
        wait_idle(batching_server, "bounded_queue")
        if not held:
            return False
        assert all(isinstance(o, InferenceServerException) for o in rejected_first), rejected_first
        rejected = [o for o in outcomes if isinstance(o, InferenceServerException)]
        assert len(rejected) == 10 and len(outcomes) - len(rejected) == 2, outcomes
        for error in rejected:
            assert error.status() == "StatusCode.UNAVAILABLE"
            assert error.message() == "Exceeds maximum queue size"
        # A full queue counts as REJECTED, like a queue timeout (Triton's reason label).
        rejected_after = batching_server.metrics().model("bounded_queue", "nv_inference_request_failure", reason="REJECTED")
        assert rejected_after - rejected_before == 10
        return True

    until_premise_holds(attempt, rows_lasting(BLOCKER_SECS), "ten requests refused while the blocker ran")


def test_queue_timeout_rejects_with_tritons_message_and_counts_rejected(
    client: grpcclient.InferenceServerClient, batching_server: ServerProcess
) -> None:
    def attempt(blocker_rows: int) -> bool:
        rejected_before = batching_server.metrics().model("queue_timeout", "nv_inference_request_failure", reason="REJECTED")
        with Blocker(batching_server, "queue_timeout", blocker_rows) as blocker:
            outcomes = fire(client, "queue_timeout", [echo_input(np.ones((1, 1))) for _ in range(5)]).wait()
            held = blocker.running()  # so none of them could have left the queue but by its 5 ms timeout
        wait_idle(batching_server, "queue_timeout")
        if not held:
            return False
        for error in outcomes:
            assert isinstance(error, InferenceServerException), error
            assert (error.status(), error.message()) == ("StatusCode.UNAVAILABLE", "Request timeout expired")
        rejected = batching_server.metrics().model("queue_timeout", "nv_inference_request_failure", reason="REJECTED")
        assert rejected - rejected_before == 5
        return True

    until_premise_holds(attempt, rows_lasting(BLOCKER_SECS), "five requests timed out while the blocker ran")


def test_cancelled_calls_are_never_executed(client: grpcclient.InferenceServerClient, batching_server: ServerProcess) -> None:
    def canceled() -> float:
        return batching_server.metrics().model("cancellable", "nv_inference_request_failure", reason="CANCELED")

    def attempt(blocker_rows: int) -> bool:
        canceled_before = canceled()
        with Blocker(batching_server, "cancellable", blocker_rows) as blocker:
            small = [echo_input(np.ones((1, 1))) for _ in range(5)]
            outcomes = fire(client, "cancellable", small, client_timeout=DEADLINE_SECS).wait()
            # Their deadline has passed for the client; wait until the server dropped them too.
            wait_until(lambda: batching_server.metrics().model("cancellable", PENDING) == 0 or not blocker.running(), 60, "dropped")
            held = blocker.running()
        wait_idle(batching_server, "cancellable")
        if not held:
            return False
        assert all(isinstance(o, InferenceServerException) and o.status() == "StatusCode.DEADLINE_EXCEEDED" for o in outcomes), outcomes
        assert blocker.executions(batching_server.metrics()) - blocker.executions_before == 1, "only the blocker ran"
        wait_until(lambda: canceled() - canceled_before == 5, 30, "five CANCELED failures counted")
        return True

    until_premise_holds(attempt, rows_lasting(4 * DEADLINE_SECS), "five deadlines passed while the blocker ran")


def test_an_onnxruntime_failure_fails_only_its_batch(client: grpcclient.InferenceServerClient) -> None:
    def index_input(*values: int) -> list[grpcclient.InferInput]:
        item = grpcclient.InferInput("index", [len(values), 1], "INT64")
        item.set_data_from_numpy(np.array([[value] for value in values], np.int64))
        return [item]

    # max_batch_size 2 with a long delay: the bad index shares a batch with one good request
    # (which one depends on arrival order), the other two form a healthy batch.
    values = (20, 3, 4, 5)
    outcomes = fire(client, "gather", [index_input(v) for v in values]).wait()
    failed = [v for v, o in zip(values, outcomes) if isinstance(o, Exception)]
    assert 20 in failed and len(failed) == 2, outcomes
    for value, outcome in zip(values, outcomes):
        if value in failed:
            assert isinstance(outcome, InferenceServerException) and outcome.status() == "StatusCode.INTERNAL"
            assert "indices element out of data bounds" in outcome.message()
        else:
            np.testing.assert_array_equal(outcome.as_numpy("row"), np.full((1, 1, 4), value, np.float32))
    pair = client.infer("gather", index_input(7, 8)).as_numpy("row")  # a full batch: no queue delay
    np.testing.assert_array_equal(pair, np.array([[[7.0] * 4], [[8.0] * 4]], np.float32))


def test_kind_gpu_without_cuda_fails_that_model_only_with_a_clear_reason(client: grpcclient.InferenceServerClient) -> None:
    index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
    assert index["gpu_only"]["state"] == "UNAVAILABLE"
    assert "KIND_GPU" in index["gpu_only"]["reason"] and "CUDAExecutionProvider" in index["gpu_only"]["reason"]
    assert index["batched"]["state"] == "READY"


def test_kind_auto_falls_back_to_cpu_instances(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("auto_device", as_json=True)["config"]
    assert [(g["kind"], g["count"]) for g in config["instance_group"]] == [("KIND_CPU", 2)]
    result = client.infer("auto_device", [fp32_input("INPUT0", np.zeros((2, 4), np.float32))])
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.ones((2, 4), np.float32))
