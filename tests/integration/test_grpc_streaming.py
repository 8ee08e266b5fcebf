"""ModelStreamInfer through tritonclient's start_stream / async_stream_infer.

Responses may come back in any order; each carries its request's id. A bad request yields an
error on the callback (tritonclient turns ``error_message`` into an InferenceServerException)
while the stream stays open for the requests after it.
"""

from __future__ import annotations

import queue
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
from tritonclient.utils import InferenceServerException

from scripts.harness import ServerProcess

Answer = tuple[grpcclient.InferResult | None, InferenceServerException | None]


class Stream:
    """One open stream whose callback queues (result, error) pairs."""

    def __init__(self, client: grpcclient.InferenceServerClient) -> None:
        self.client = client
        self.answers: queue.Queue[Answer] = queue.Queue()
        client.start_stream(callback=lambda result, error: self.answers.put((result, error)))

    def receive(self, count: int, timeout: float = 30.0) -> list[Answer]:
        return [self.answers.get(timeout=timeout) for _ in range(count)]


@pytest.fixture
def stream(server: ServerProcess) -> Iterator[Stream]:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        opened = Stream(client)
        try:
            yield opened
        finally:
            client.stop_stream()


def simple_inputs(value: int, rows: int = 1, first_name: str = "INPUT0") -> list[grpcclient.InferInput]:
    inputs = []
    for name, array in ((first_name, np.full((rows, 16), value, np.int32)), ("INPUT1", np.ones((rows, 16), np.int32))):
        item = grpcclient.InferInput(name, [rows, 16], "INT32")
        item.set_data_from_numpy(array)
        inputs.append(item)
    return inputs


def check_simple(result: grpcclient.InferResult, value: int, rows: int) -> None:
    np.testing.assert_array_equal(result.as_numpy("OUTPUT0"), np.full((rows, 16), value + 1, np.int32))
    np.testing.assert_array_equal(result.as_numpy("OUTPUT1"), np.full((rows, 16), value - 1, np.int32))


def test_every_streamed_request_is_answered_with_its_id_and_data(stream: Stream) -> None:
    count = 64
    for index in range(count):
        stream.client.async_stream_infer("simple", simple_inputs(index, rows=1 + index % 4), request_id=f"s{index}")
    answers = stream.receive(count)
    seen = []
    for result, error in answers:
        assert error is None, error
        assert result is not None
        response = result.get_response()
        index = int(response.id.removeprefix("s"))
        assert (response.model_name, response.model_version) == ("simple", "1")
        check_simple(result, index, rows=1 + index % 4)
        seen.append(index)
    assert sorted(seen) == list(range(count))


def test_a_bad_request_mid_stream_errors_alone_and_the_stream_stays_open(stream: Stream) -> None:
    for index in range(20):
        bad = index == 10
        stream.client.async_stream_infer("simple", simple_inputs(index, first_name="BAD" if bad else "INPUT0"), request_id=f"m{index}")
    answers = stream.receive(20)
    errors = [error for _, error in answers if error is not None]
    assert len(errors) == 1
    assert str(errors[0].message()) == "unexpected inference input 'BAD' for model 'simple'"
    good = {result.get_response().id: result for result, error in answers if error is None and result is not None}
    assert sorted(good) == sorted(f"m{i}" for i in range(20) if i != 10)
    for request_id, result in good.items():
        check_simple(result, int(request_id.removeprefix("m")), rows=1)
    # The same stream keeps serving after the error has been delivered.
    stream.client.async_stream_infer("simple", simple_inputs(99), request_id="after")
    ((result, error),) = stream.receive(1)
    assert error is None and result is not None
    assert result.get_response().id == "after"
    check_simple(result, 99, rows=1)


@pytest.mark.parametrize(
    ("model", "version", "expected"),
    [
        pytest.param("no_such_model", "", "Request for unknown model: 'no_such_model' is not found", id="unknown-model"),
        pytest.param("corrupt", "1", "Request for unknown model: 'corrupt' version 1 is not at ready state", id="unready-version"),
        pytest.param("simple", "x", "failed to get model version from specified version string 'x'", id="bad-version"),
    ],
)
def test_lookup_errors_arrive_on_the_stream(stream: Stream, model: str, version: str, expected: str) -> None:
    stream.client.async_stream_infer(model, simple_inputs(1), model_version=version, request_id="lookup")
    stream.client.async_stream_infer("simple", simple_inputs(2), request_id="next")
    answers = stream.receive(2)
    (error,) = [error for _, error in answers if error is not None]
    assert str(error.message()).startswith(expected)
    (result,) = [result for result, error in answers if error is None]
    assert result is not None and result.get_response().id == "next"
    check_simple(result, 2, rows=1)


def test_streamed_versions_and_parameters(stream: Stream) -> None:
    values = np.zeros((1, 4), np.float32)
    for version in ("2", "3", ""):
        item = grpcclient.InferInput("INPUT0", [1, 4], "FP32")
        item.set_data_from_numpy(values)
        stream.client.async_stream_infer(
            "versioned", [item], model_version=version, request_id=f"v{version or 'latest'}", parameters={"custom": "kept"}
        )
    results = {}
    for result, error in stream.receive(3):
        assert error is None and result is not None
        results[result.get_response().id] = result
    np.testing.assert_array_equal(results["v2"].as_numpy("OUTPUT0"), values + 200)
    np.testing.assert_array_equal(results["v3"].as_numpy("OUTPUT0"), values + 300)
    np.testing.assert_array_equal(results["vlatest"].as_numpy("OUTPUT0"), values + 300)
    assert results["vlatest"].get_response().model_version == "3"


def mlp_input(rows: int = 4) -> list[grpcclient.InferInput]:
    item = grpcclient.InferInput("input", [rows, 256], "FP32")
    item.set_data_from_numpy(np.ones((rows, 256), np.float32))
    return [item]


def test_closing_the_stream_delivers_every_pending_response(server: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        stream = Stream(client)
        for index in range(40):
            client.async_stream_infer("mlp", mlp_input(), request_id=f"c{index}")
        client.stop_stream()  # half-closes, then blocks until the server has answered everything
        assert stream.answers.qsize() == 40
        answers = stream.receive(40, timeout=1)
    assert all(error is None for _, error in answers)
    assert sorted(result.get_response().id for result, _ in answers) == sorted(f"c{i}" for i in range(40))  # type: ignore[union-attr]


def test_cancelling_a_stream_leaves_the_server_serving(server: ServerProcess) -> None:
    with grpcclient.InferenceServerClient(server.grpc_url) as client:
        Stream(client)
        for index in range(40):
            client.async_stream_infer("mlp", mlp_input(), request_id=f"x{index}")
        client.stop_stream(cancel_requests=True)
        result = client.infer("mlp", mlp_input(1))
    assert result.as_numpy("output").shape == (1, 10)
