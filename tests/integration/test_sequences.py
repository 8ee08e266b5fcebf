"""Sequence batching with implicit state, through unmodified tritonclient (gRPC unary, gRPC
streaming, HTTP) against a real server.

The model is an onnx.helper accumulator whose output depends on every earlier input of its
sequence, in order (state' = 0.5 * state + input, reset at START); each answer is checked against
a numpy reference that replays the sequence. The server keeps the state: clients send only the
new input and tritonclient's ``sequence_id`` / ``sequence_start`` / ``sequence_end``.
"""

from __future__ import annotations

import asyncio
import queue
import threading
from collections.abc import Iterator

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.grpc.aio as grpcaio
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import ServerProcess, wait_until
from tests.repository_builder import write_model

WIDTH = 4
CONTROLS = """
  control_input [
    { name: "START", control [ { kind: CONTROL_SEQUENCE_START, fp32_false_true: [ 0, 1 ] } ] },
    { name: "READY", control [ { kind: CONTROL_SEQUENCE_READY, fp32_false_true: [ 0, 1 ] } ] },
    { name: "CORRID", control [ { kind: CONTROL_SEQUENCE_CORRID, data_type: %(corrid)s } ] }
  ]
  state [ { input_name: "INPUT_STATE", output_name: "OUTPUT_STATE", data_type: TYPE_FP32, dims: [ 4 ] } ]
"""
IO = """
input [ { name: "INPUT", data_type: TYPE_FP32, dims: [ 4 ] } ]
output [
  { name: "OUTPUT", data_type: TYPE_FP32, dims: [ 4 ] },
  { name: "CORRID_OUT", data_type: %(corrid)s, dims: [ 1 ] },
  { name: "READY_OUT", data_type: TYPE_FP32, dims: [ 1 ] }
]
"""


def accumulator_config(
    strategy: str, max_batch_size: int = 8, idle_us: int = 600_000_000, corrid: str = "TYPE_UINT64", extra: str = ""
) -> str:
    values = {"corrid": corrid}
    return (
        f"max_batch_size: {max_batch_size}\n"
        f"sequence_batching {{\n  max_sequence_idle_microseconds: {idle_us}\n  {strategy}\n{CONTROLS % values}}}\n"
        f"{IO % values}{extra}"
    )


FAILING_CONFIG = """
max_batch_size: 4
sequence_batching {
  max_sequence_idle_microseconds: 600000000
  control_input [ { name: "START", control [ { kind: CONTROL_SEQUENCE_START, fp32_false_true: [ 0, 1 ] } ] } ]
  state [ { input_name: "INPUT_STATE", output_name: "OUTPUT_STATE", data_type: TYPE_FP32, dims: [ 1 ] } ]
}
input [ { name: "INPUT", data_type: TYPE_INT64, dims: [ 1 ] } ]
output [ { name: "OUTPUT", data_type: TYPE_FP32, dims: [ 1 ] } ]
"""
TWO_INSTANCES = "instance_group [ { kind: KIND_CPU, count: 2 } ]"


@pytest.fixture(scope="module")
def sequence_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[ServerProcess]:
    repository = tmp_path_factory.mktemp("sequence_repo")
    model = onnx_models.accumulator(WIDTH)
    write_model(repository, "acc_oldest", model, accumulator_config("oldest { max_candidate_sequences: 64 }"))
    write_model(repository, "acc_direct", model, accumulator_config("direct { }", max_batch_size=4))
    write_model(
        repository, "acc_string", onnx_models.accumulator(WIDTH, corrid="BYTES"), accumulator_config("oldest { }", corrid="TYPE_STRING")
    )
    # One slot per instance, two instances: a second sequence lands on the other instance.
    write_model(repository, "acc_sticky", model, accumulator_config("direct { }", max_batch_size=1, extra=TWO_INSTANCES))
    # One slot in all: a second sequence waits in the backlog.
    write_model(repository, "acc_single", model, accumulator_config("direct { }", max_batch_size=1))
    # Waits until all four slots have a request: its batches are exactly four sequences wide.
    full = "direct { max_queue_delay_microseconds: 600000000, minimum_slot_utilization: 1.0 }"
    write_model(repository, "acc_full", model, accumulator_config(full, max_batch_size=4))
    write_model(repository, "acc_idle", model, accumulator_config("oldest { }", idle_us=200_000))
    write_model(repository, "acc_fail", onnx_models.indexed_accumulator(), FAILING_CONFIG)
    # Refused at load: a control the graph lacks, a state whose dims are not the graph's.
    write_model(repository, "bad_control", model, accumulator_config("direct { }").replace('name: "READY"', 'name: "NOT_IN_GRAPH"'))
    write_model(
        repository,
        "bad_state",
        model,
        accumulator_config("direct { }").replace(
            '"OUTPUT_STATE", data_type: TYPE_FP32, dims: [ 4 ]', '"OUTPUT_STATE", data_type: TYPE_FP32, dims: [ 6 ]'
        ),
    )
    log = tmp_path_factory.mktemp("logs") / "sequences.log"
    with ServerProcess([repository], ["--strict-readiness=false"], log_path=log) as process:
        process.wait_until(f"http://{process.http_url}/v2/health/ready", 60)
        yield process


@pytest.fixture
def client(sequence_server: ServerProcess) -> Iterator[grpcclient.InferenceServerClient]:
    with grpcclient.InferenceServerClient(sequence_server.grpc_url) as triton:
        yield triton


def step_input(module: object, value: np.ndarray) -> object:
    item = module.InferInput("INPUT", [1, WIDTH], "FP32")  # type: ignore[attr-defined]
    item.set_data_from_numpy(value.reshape(1, WIDTH).astype(np.float32))
    return item


def reference(inputs: list[np.ndarray]) -> list[np.ndarray]:
    """What the accumulator answers after each input of one sequence."""
    state, answers = None, []
    for value in inputs:
        state = value if state is None else 0.5 * state + value
        answers.append(state)
    return answers


def sequence_inputs(seed: int, steps: int) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.standard_normal(WIDTH).astype(np.float32) for _ in range(steps)]


def flags(step: int, steps: int) -> dict[str, bool]:
    return {"sequence_start": step == 0, "sequence_end": step == steps - 1}


@pytest.mark.parametrize("model", ["acc_oldest", "acc_direct"])
def test_grpc_unary_sequence_matches_the_reference(client: grpcclient.InferenceServerClient, model: str) -> None:
    inputs = sequence_inputs(1, 6)
    for step, (value, expected) in enumerate(zip(inputs, reference(inputs))):
        result = client.infer(model, [step_input(grpcclient, value)], sequence_id=1001, **flags(step, len(inputs)))
        np.testing.assert_allclose(result.as_numpy("OUTPUT")[0], expected, rtol=1e-6)
        assert result.as_numpy("CORRID_OUT").tolist() == [[1001]]
        assert result.as_numpy("READY_OUT").tolist() == [[1.0]]


def test_http_sequence_with_a_string_id_matches_the_reference(sequence_server: ServerProcess) -> None:
    inputs = sequence_inputs(2, 5)
    with httpclient.InferenceServerClient(sequence_server.http_url) as http:
        for step, (value, expected) in enumerate(zip(inputs, reference(inputs))):
            result = http.infer("acc_string", [step_input(httpclient, value)], sequence_id="session-7", **flags(step, len(inputs)))
            np.testing.assert_allclose(result.as_numpy("OUTPUT")[0], expected, rtol=1e-6)
            assert result.as_numpy("CORRID_OUT").tolist() == [[b"session-7"]]


def test_http_sequence_with_an_int_id(sequence_server: ServerProcess) -> None:
    inputs = sequence_inputs(3, 4)
    with httpclient.InferenceServerClient(sequence_server.http_url) as http:
        for step, (value, expected) in enumerate(zip(inputs, reference(inputs))):
            result = http.infer("acc_direct", [step_input(httpclient, value)], sequence_id=77, **flags(step, len(inputs)))
            np.testing.assert_allclose(result.as_numpy("OUTPUT")[0], expected, rtol=1e-6)


def test_streamed_interleaved_sequences_each_match_their_reference(client: grpcclient.InferenceServerClient) -> None:
    """Eight sequences (int and string ids) interleaved on one stream, sent without waiting."""
    answers: queue.Queue[tuple[grpcclient.InferResult | None, InferenceServerException | None]] = queue.Queue()
    client.start_stream(callback=lambda result, error: answers.put((result, error)))
    steps, ids = 5, [201, 202, 203, 204, "a", "b", "c", "d"]
    inputs = {sequence: sequence_inputs(index + 10, steps) for index, sequence in enumerate(ids)}
    try:
        for step in range(steps):
            for sequence in ids:
                model = "acc_string" if isinstance(sequence, str) else "acc_oldest"
                client.async_stream_infer(
                    model,
                    [step_input(grpcclient, inputs[sequence][step])],
                    request_id=f"{sequence}/{step}",
                    sequence_id=sequence,
                    **flags(step, steps),
                )
        received = [answers.get(timeout=60) for _ in range(steps * len(ids))]
    finally:
        client.stop_stream()
    outputs = {}
    for result, error in received:
        assert error is None, error
        assert result is not None
        outputs[result.get_response().id] = result.as_numpy("OUTPUT")[0]
    for sequence in ids:
        for step, expected in enumerate(reference(inputs[sequence])):
            np.testing.assert_allclose(outputs[f"{sequence}/{step}"], expected, rtol=1e-6)


def test_many_concurrent_sequences_over_grpc_each_match_their_reference(sequence_server: ServerProcess) -> None:
    """48 sequences at once, each from its own coroutine: requests of different sequences batch."""
    steps = 12

    async def one(client: grpcaio.InferenceServerClient, sequence: int) -> list[np.ndarray]:
        outputs = []
        for step, value in enumerate(sequence_inputs(sequence, steps)):
            result = await client.infer("acc_oldest", [step_input(grpcaio, value)], sequence_id=sequence, **flags(step, steps))
            outputs.append(result.as_numpy("OUTPUT")[0])
        return outputs

    async def run() -> list[list[np.ndarray]]:
        async with grpcaio.InferenceServerClient(sequence_server.grpc_url) as client:
            return await asyncio.gather(*(one(client, sequence) for sequence in range(5000, 5048)))

    results = asyncio.run(run())
    for sequence, outputs in zip(range(5000, 5048), results):
        for got, expected in zip(outputs, reference(sequence_inputs(sequence, steps))):
            np.testing.assert_allclose(got, expected, rtol=1e-6)
    assert sequence_server.metrics().model("acc_oldest", "ortserve_sequence_active") == 0


def test_states_of_sequences_batched_together_stay_apart(client: grpcclient.InferenceServerClient, sequence_server: ServerProcess) -> None:
    """acc_full runs only once all four slots have a request, so every execution stacks the
    states of four sequences: each answer must still be its own sequence's."""
    steps, ids = 5, [901, 902, 903, 904]
    before = client.get_inference_statistics("acc_full").model_stats[0].execution_count

    async def one(aio: grpcaio.InferenceServerClient, sequence: int) -> list[np.ndarray]:
        outputs = []
        for step, value in enumerate(sequence_inputs(sequence, steps)):
            result = await aio.infer("acc_full", [step_input(grpcaio, value)], sequence_id=sequence, **flags(step, steps))
            outputs.append(result.as_numpy("OUTPUT")[0])
        return outputs

    async def run() -> list[list[np.ndarray]]:
        async with grpcaio.InferenceServerClient(sequence_server.grpc_url) as aio:
            return await asyncio.gather(*(one(aio, sequence) for sequence in ids))

    for sequence, outputs in zip(ids, asyncio.run(run())):
        for got, expected in zip(outputs, reference(sequence_inputs(sequence, steps))):
            np.testing.assert_allclose(got, expected, rtol=1e-6)
    stats = client.get_inference_statistics("acc_full").model_stats[0]
    assert stats.execution_count - before == steps
    assert {batch.batch_size: batch.compute_infer.count for batch in stats.batch_stats} == {4: steps}


def test_a_sequence_sticks_to_its_instance(client: grpcclient.InferenceServerClient, sequence_server: ServerProcess) -> None:
    first, second = sequence_inputs(4, 6), sequence_inputs(5, 1)
    client.infer("acc_sticky", [step_input(grpcclient, first[0])], sequence_id=31, sequence_start=True)
    client.infer("acc_sticky", [step_input(grpcclient, second[0])], sequence_id=32, sequence_start=True)
    before = sequence_server.metrics()
    counts = [before.model("acc_sticky", "ortserve_instance_execution_count", instance=f"acc_sticky_v1_{i}") for i in (0, 1)]
    for step in range(1, 6):
        client.infer("acc_sticky", [step_input(grpcclient, first[step])], sequence_id=31, sequence_end=step == 5)
    after = sequence_server.metrics()
    ran = [after.model("acc_sticky", "ortserve_instance_execution_count", instance=f"acc_sticky_v1_{i}") - counts[i] for i in (0, 1)]
    assert sorted(ran) == [0, 5]  # every later request of sequence 31 ran on the instance it started on
    client.infer("acc_sticky", [step_input(grpcclient, second[0])], sequence_id=32, sequence_end=True)


def test_a_sequence_without_a_free_slot_waits_in_the_backlog(
    client: grpcclient.InferenceServerClient, sequence_server: ServerProcess
) -> None:
    holder, waiting = sequence_inputs(6, 2), sequence_inputs(7, 1)
    client.infer("acc_single", [step_input(grpcclient, holder[0])], sequence_id=41, sequence_start=True)
    answer: queue.Queue[object] = queue.Queue()

    def second_sequence() -> None:
        with grpcclient.InferenceServerClient(sequence_server.grpc_url) as other:
            answer.put(
                other.infer("acc_single", [step_input(grpcclient, waiting[0])], sequence_id=42, sequence_start=True, sequence_end=True)
            )

    thread = threading.Thread(target=second_sequence, daemon=True)
    thread.start()
    wait_until(lambda: sequence_server.metrics().model("acc_single", "ortserve_sequence_backlog") == 1, 60, "sequence 42 backlogged")
    assert answer.empty()
    assert sequence_server.metrics().model("acc_single", "ortserve_sequence_active") == 1
    client.infer("acc_single", [step_input(grpcclient, holder[1])], sequence_id=41, sequence_end=True)
    result = answer.get(timeout=60)
    thread.join(10)
    np.testing.assert_allclose(result.as_numpy("OUTPUT")[0], waiting[0], rtol=1e-6)  # type: ignore[attr-defined]


def test_an_idle_sequence_is_released_and_then_refused(client: grpcclient.InferenceServerClient, sequence_server: ServerProcess) -> None:
    before = sequence_server.metrics().model("acc_idle", "ortserve_sequence_idle_released")
    value = sequence_inputs(8, 1)[0]
    client.infer("acc_idle", [step_input(grpcclient, value)], sequence_id=51, sequence_start=True)
    wait_until(
        lambda: sequence_server.metrics().model("acc_idle", "ortserve_sequence_idle_released") == before + 1,
        60,
        "sequence 51 released as idle",
    )
    assert sequence_server.metrics().model("acc_idle", "ortserve_sequence_active") == 0
    with pytest.raises(InferenceServerException) as caught:
        client.infer("acc_idle", [step_input(grpcclient, value)], sequence_id=51)
    assert "must specify the START flag on the first request of the sequence" in caught.value.message()


@pytest.mark.parametrize("protocol", ["grpc", "http"])
def test_a_request_for_an_unknown_sequence_is_refused_in_tritons_words(sequence_server: ServerProcess, protocol: str) -> None:
    value = sequence_inputs(9, 1)[0]
    module = grpcclient if protocol == "grpc" else httpclient
    url = sequence_server.grpc_url if protocol == "grpc" else sequence_server.http_url
    with module.InferenceServerClient(url) as triton:  # type: ignore[attr-defined]
        with pytest.raises(InferenceServerException) as caught:
            triton.infer("acc_oldest", [step_input(module, value)], sequence_id=999)
        assert caught.value.message() == (
            "inference request for sequence 999 to model 'acc_oldest' must specify the START flag on the first request of the sequence"
        )
        assert caught.value.status() in ("StatusCode.INVALID_ARGUMENT", "400")
        with pytest.raises(InferenceServerException) as caught:
            triton.infer("acc_oldest", [step_input(module, value)])
        assert caught.value.message() == "inference request to model 'acc_oldest' must specify a non-zero or non-empty correlation ID"


def test_a_batch_of_more_than_one_is_refused(client: grpcclient.InferenceServerClient) -> None:
    item = grpcclient.InferInput("INPUT", [2, WIDTH], "FP32")
    item.set_data_from_numpy(np.zeros((2, WIDTH), np.float32))
    with pytest.raises(InferenceServerException) as caught:
        client.infer("acc_oldest", [item], sequence_id=61, sequence_start=True)
    assert (
        caught.value.message()
        == "inference request to model 'acc_oldest' must specify batch-size 1 due to requirements of sequence batcher"
    )


def test_a_string_id_over_128_characters_is_refused(client: grpcclient.InferenceServerClient) -> None:
    with pytest.raises(InferenceServerException) as caught:
        client.infer("acc_string", [step_input(grpcclient, np.zeros(WIDTH))], sequence_id="s" * 129, sequence_start=True)
    assert caught.value.message() == "string correlation ID cannot be longer than 128 characters"
    assert caught.value.status() == "StatusCode.UNIMPLEMENTED"


def test_a_failed_batch_ends_its_sequence_with_an_error(client: grpcclient.InferenceServerClient, sequence_server: ServerProcess) -> None:
    def index(value: int) -> list[grpcclient.InferInput]:
        item = grpcclient.InferInput("INPUT", [1, 1], "INT64")
        item.set_data_from_numpy(np.array([[value]], np.int64))
        return [item]

    assert client.infer("acc_fail", index(3), sequence_id=71, sequence_start=True).as_numpy("OUTPUT").tolist() == [[3.0]]
    assert client.infer("acc_fail", index(4), sequence_id=71).as_numpy("OUTPUT").tolist() == [[7.0]]
    with pytest.raises(InferenceServerException) as caught:
        client.infer("acc_fail", index(1000), sequence_id=71)  # outside the table: ONNX Runtime fails
    assert caught.value.status() == "StatusCode.INTERNAL"
    assert sequence_server.metrics().model("acc_fail", "ortserve_sequence_ended_by_failure") == 1
    with pytest.raises(InferenceServerException) as caught:
        client.infer("acc_fail", index(1), sequence_id=71)
    assert "must specify the START flag" in caught.value.message()
    # The model (and every other) keeps serving: a new sequence runs from a fresh state.
    assert client.infer("acc_fail", index(2), sequence_id=71, sequence_start=True, sequence_end=True).as_numpy("OUTPUT").tolist() == [[2.0]]
    inputs = sequence_inputs(11, 1)
    result = client.infer("acc_oldest", [step_input(grpcclient, inputs[0])], sequence_id=72, sequence_start=True, sequence_end=True)
    np.testing.assert_allclose(result.as_numpy("OUTPUT")[0], inputs[0], rtol=1e-6)


def test_configs_the_graph_contradicts_are_refused_at_load_in_tritons_words(client: grpcclient.InferenceServerClient) -> None:
    reasons = {entry.name: entry.reason for entry in client.get_model_repository_index().models}
    assert (
        reasons["bad_control"] == "Internal: configuration specified sequence control 'NOT_IN_GRAPH', but model does not provide that input"
    )
    assert reasons["bad_state"] == (
        "Invalid argument: unable to load model 'bad_state', configuration expects dims [-1,6] for input state 'INPUT_STATE', "
        "model provides [-1,4]"
    )


def test_the_completed_config_shows_tritons_sequence_defaults(client: grpcclient.InferenceServerClient) -> None:
    config = client.get_model_config("acc_oldest").config
    assert config.WhichOneof("scheduling_choice") == "sequence_batching"
    assert list(config.sequence_batching.oldest.preferred_batch_size) == [8]
    assert [t.name for t in config.input] == ["INPUT"]
    metadata = client.get_model_metadata("acc_oldest")
    assert [t.name for t in metadata.inputs] == ["INPUT"]  # controls and state are the server's


def test_statistics_count_sequence_requests(client: grpcclient.InferenceServerClient) -> None:
    before = client.get_inference_statistics("acc_direct").model_stats[0].inference_count
    inputs = sequence_inputs(12, 3)
    for step, value in enumerate(inputs):
        client.infer("acc_direct", [step_input(grpcclient, value)], sequence_id=81, **flags(step, 3))
    assert client.get_inference_statistics("acc_direct").model_stats[0].inference_count == before + 3


def test_not_ready_rows_leave_a_waiting_sequences_state_alone(client: grpcclient.InferenceServerClient) -> None:
    """direct: while only B (the higher slot) has requests, A's lower slot runs as a not-ready
    row in B's batches; A's state must come through untouched."""
    a, b = sequence_inputs(13, 3), sequence_inputs(14, 4)
    client.infer("acc_direct", [step_input(grpcclient, a[0])], sequence_id=1101, sequence_start=True)
    for step, (value, expected) in enumerate(zip(b, reference(b))):
        result = client.infer("acc_direct", [step_input(grpcclient, value)], sequence_id=1102, **flags(step, len(b)))
        np.testing.assert_allclose(result.as_numpy("OUTPUT")[0], expected, rtol=1e-6)
    for step in (1, 2):
        result = client.infer("acc_direct", [step_input(grpcclient, a[step])], sequence_id=1101, sequence_end=step == 2)
        np.testing.assert_allclose(result.as_numpy("OUTPUT")[0], reference(a)[step], rtol=1e-6)
