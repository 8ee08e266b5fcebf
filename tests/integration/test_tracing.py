"""Triton's trace extension end to end: tritonclient's trace settings over gRPC and HTTP, Triton's
JSON trace file, OpenTelemetry spans received by a real OTLP/HTTP collector, W3C traceparent
continuation, and Triton's refusals.

Every wait is for an observable state (a file holding a request's trace, the collector holding
a trace's spans); nothing assumes how fast the machine is.
"""

from __future__ import annotations

import json
import queue
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import tritonclient.grpc as grpcclient
import tritonclient.http as httpclient
from tritonclient.utils import InferenceServerException

from scripts import onnx_models
from scripts.harness import ServerProcess, wait_until
from tests.integration.otlp_collector import OtlpCollector, ReceivedSpan
from tests.repository_builder import write_model

# Pairs run as one batch as soon as both are queued; a lone request waits for its partner.
GATHER = "max_batch_size: 2\ndynamic_batching { preferred_batch_size: [2] max_queue_delay_microseconds: 30000000 }"
TRITON_TIMESTAMPS = [
    "REQUEST_START",
    "QUEUE_START",
    "COMPUTE_START",
    "COMPUTE_INPUT_END",
    "COMPUTE_OUTPUT_START",
    "COMPUTE_END",
    "REQUEST_END",
]


def repository(root: Path) -> Path:
    write_model(root, "mlp", onnx_models.mlp())
    write_model(root, "mlp_b", onnx_models.mlp())
    write_model(root, "gather", onnx_models.gather_rows(), GATHER)
    return root


def start(root: Path, trace_args: list[str], name: str) -> ServerProcess:
    """A ready server on a fresh copy of the repository (stopped again if it does not get ready)."""
    args = [f"--trace-config={entry}" for entry in trace_args]
    process = ServerProcess([repository(root / "repo")], args, log_path=root / f"{name}.log")
    try:
        process.start("ready")
    except BaseException:
        process.__exit__(None, None, None)
        raise
    return process


@pytest.fixture(scope="module")
def triton_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, Path]]:
    root = tmp_path_factory.mktemp("trace-triton")
    trace_file = root / "trace.json"
    settings = [f"triton,file={trace_file}", "triton,log-frequency=1", "level=TIMESTAMPS", "rate=1"]
    with start(root, settings, "triton") as process:
        yield process, trace_file


def mlp_input(module: Any) -> Any:
    tensor = module.InferInput("input", [1, 256], "FP32")
    tensor.set_data_from_numpy(np.random.default_rng(0).random((1, 256), dtype=np.float32))
    return tensor


def index_input(value: int) -> grpcclient.InferInput:
    tensor = grpcclient.InferInput("index", [1, 1], "INT64")
    tensor.set_data_from_numpy(np.array([[value]], dtype=np.int64))
    return tensor


def refusal(call: Any) -> tuple[str | None, str]:
    with pytest.raises(InferenceServerException) as raised:
        call()
    return raised.value.status(), raised.value.message()


# ---- settings over both protocols ------------------------------------------------------------------


def test_server_metadata_advertises_trace(triton_server: tuple[ServerProcess, Path]) -> None:
    server, _ = triton_server
    assert "trace" in grpcclient.InferenceServerClient(server.grpc_url).get_server_metadata().extensions
    assert "trace" in httpclient.InferenceServerClient(server.http_url).get_server_metadata()["extensions"]


def test_the_command_line_s_setting_reads_the_same_over_both_protocols(triton_server: tuple[ServerProcess, Path]) -> None:
    server, trace_file = triton_server
    expected = {"trace_level": ["TIMESTAMPS"], "trace_rate": "1", "trace_count": "-1", "log_frequency": "1", "trace_file": str(trace_file)}
    assert httpclient.InferenceServerClient(server.http_url).get_trace_settings() == expected
    grpc_settings = grpcclient.InferenceServerClient(server.grpc_url).get_trace_settings(as_json=True)["settings"]
    assert {name: value["value"] for name, value in grpc_settings.items()} == {
        name: value if isinstance(value, list) else [value] for name, value in expected.items()
    }


def test_a_model_setting_set_over_grpc_is_read_over_http_and_follows_the_global_one(triton_server: tuple[ServerProcess, Path]) -> None:
    server, _ = triton_server
    grpc_client, http_client = grpcclient.InferenceServerClient(server.grpc_url), httpclient.InferenceServerClient(server.http_url)
    updated = grpc_client.update_trace_settings("mlp_b", {"trace_rate": "7", "trace_count": "3"}, as_json=True)["settings"]
    assert updated["trace_rate"]["value"] == ["7"] and updated["trace_count"]["value"] == ["3"]
    assert http_client.get_trace_settings("mlp_b")["trace_rate"] == "7"
    assert http_client.get_trace_settings("mlp")["trace_rate"] == "1"  # other models keep the global setting
    try:
        http_client.update_trace_settings(settings={"log_frequency": "5"})
        assert http_client.get_trace_settings("mlp_b")["log_frequency"] == "5"  # not specified by mlp_b: mirrored
    finally:
        http_client.update_trace_settings(settings={"log_frequency": None})
    assert http_client.get_trace_settings()["log_frequency"] == "1"  # cleared: the command line's value again
    cleared = http_client.update_trace_settings("mlp_b", {"trace_rate": None, "trace_count": None})
    assert cleared["trace_rate"] == "1" and cleared["trace_count"] == "-1"


def test_refusals_are_triton_s(triton_server: tuple[ServerProcess, Path]) -> None:
    server, _ = triton_server
    grpc_client, http_client = grpcclient.InferenceServerClient(server.grpc_url), httpclient.InferenceServerClient(server.http_url)
    file_refused = "trace file location can not be updated through network protocol"
    assert refusal(lambda: grpc_client.update_trace_settings(settings={"trace_file": "/tmp/x"})) == (
        "StatusCode.UNIMPLEMENTED",
        file_refused,
    )
    assert refusal(lambda: http_client.update_trace_settings(settings={"trace_file": "/tmp/x"})) == ("501", file_refused)
    unknown = "Request for unknown model : nope"
    assert refusal(lambda: grpc_client.get_trace_settings("nope")) == ("StatusCode.INVALID_ARGUMENT", unknown)
    assert refusal(lambda: http_client.update_trace_settings("nope", {"trace_rate": "2"})) == ("400", unknown)
    assert refusal(lambda: http_client.update_trace_settings(settings={"trace_rate": "x"})) == (
        "400",
        "Unable to parse 'trace_rate', got: x",
    )
    assert refusal(lambda: grpc_client.update_trace_settings(settings={"trace_level": ["OFF", "TIMESTAMPS"]})) == (
        "StatusCode.INVALID_ARGUMENT",
        "Expect only one trace level 'OFF' is specified",
    )
    assert http_client.get_trace_settings()["trace_rate"] == "1"  # nothing refused changed anything


# ---- Triton's trace file ---------------------------------------------------------------------------


def traces_in(trace_file: Path) -> dict[str, list[dict[str, Any]]]:
    """Every complete indexed file's traces, by request id: the model object then the timestamps."""
    objects: list[dict[str, Any]] = []
    for path in trace_file.parent.glob(trace_file.name + ".*"):
        try:
            objects += json.loads(path.read_text())
        except json.JSONDecodeError:  # still being written
            continue
    by_id: dict[int, list[dict[str, Any]]] = {}
    for item in objects:
        by_id.setdefault(item["id"], []).append(item)
    return {items[0].get("request_id", ""): items for items in by_id.values() if "model_name" in items[0]}


def test_each_traced_request_is_written_in_triton_s_json(triton_server: tuple[ServerProcess, Path]) -> None:
    server, trace_file = triton_server
    grpcclient.InferenceServerClient(server.grpc_url).infer("mlp", [mlp_input(grpcclient)], request_id="grpc-1")
    httpclient.InferenceServerClient(server.http_url).infer("mlp", [mlp_input(httpclient)], request_id="http-1")
    wait_until(lambda: {"grpc-1", "http-1"} <= set(traces_in(trace_file)), 60, "both requests' traces in the trace files")
    for request_id, first, last in (("grpc-1", "GRPC_WAITREAD_END", "GRPC_SEND_START"), ("http-1", "HTTP_RECV_START", "HTTP_SEND_START")):
        model, *stamps = traces_in(trace_file)[request_id]
        assert set(model) == {"id", "model_name", "model_version", "request_id"}
        assert (model["model_name"], model["model_version"]) == ("mlp", 1)
        assert all(set(item) == {"id", "timestamps"} and len(item["timestamps"]) == 1 for item in stamps)
        names = [item["timestamps"][0]["name"] for item in stamps]
        assert names == [first, *TRITON_TIMESTAMPS, last]
        ns = [item["timestamps"][0]["ns"] for item in stamps]
        assert ns == sorted(ns) and all(isinstance(value, int) and value > 0 for value in ns)


def test_with_workers_every_frontend_notes_its_instants(tmp_path: Path) -> None:
    """--workers 2: a request traced in the engine still carries the instants of whichever
    frontend process received it, and a trace setting changed through one frontend reaches both."""
    trace_file = tmp_path / "trace.json"
    args = ["--workers", "2", f"--trace-config=triton,file={trace_file}", "--trace-config=triton,log-frequency=1"]
    args += ["--trace-config=level=TIMESTAMPS", "--trace-config=rate=1"]
    process = ServerProcess([repository(tmp_path / "repo")], args, log_path=tmp_path / "workers.log")
    with process.start("ready"):
        channel_args = [("grpc.use_local_subchannel_pool", 1)]  # a connection of its own, so both frontends serve
        ids = [f"w{index}" for index in range(16)]
        for request_id in ids:
            with grpcclient.InferenceServerClient(process.grpc_url, channel_args=channel_args) as client:
                client.infer("mlp", [mlp_input(grpcclient)], request_id=request_id)
        wait_until(lambda: set(ids) <= set(traces_in(trace_file)), 60, "every request's trace in the trace files")
        for request_id in ids:
            names = [item["timestamps"][0]["name"] for item in traces_in(trace_file)[request_id][1:]]
            assert names == ["GRPC_WAITREAD_END", *TRITON_TIMESTAMPS, "GRPC_SEND_START"], (request_id, names)
        httpclient.InferenceServerClient(process.http_url).update_trace_settings(settings={"trace_level": ["OFF"]})
        after = [f"off{index}" for index in range(16)]
        for request_id in after:
            with grpcclient.InferenceServerClient(process.grpc_url, channel_args=channel_args) as client:
                client.infer("mlp", [mlp_input(grpcclient)], request_id=request_id)
        assert process.terminate() == 0  # the trace files are complete once the server has stopped
    assert not set(after) & set(traces_in(trace_file))


def test_without_a_log_frequency_the_file_is_one_array_written_at_shutdown(tmp_path: Path) -> None:
    trace_file = tmp_path / "trace.json"
    server = start(tmp_path, [f"triton,file={trace_file}", "level=TIMESTAMPS", "rate=2"], "at-shutdown")
    try:
        client = grpcclient.InferenceServerClient(server.grpc_url)
        for index in range(4):
            client.infer("mlp", [mlp_input(grpcclient)], request_id=f"r{index}")
    finally:
        assert server.terminate() == 0
    traces = [item for item in json.loads(trace_file.read_text()) if "model_name" in item]
    assert [item["request_id"] for item in traces] == ["r1", "r3"]  # every second request (rate 2)


def test_tracing_cannot_be_turned_on_without_a_file_from_the_command_line(server: ServerProcess) -> None:
    http_client = httpclient.InferenceServerClient(server.http_url)
    assert http_client.get_trace_settings() == {
        "trace_level": ["OFF"],
        "trace_rate": "1000",
        "trace_count": "-1",
        "log_frequency": "0",
        "trace_file": "",
    }
    assert refusal(lambda: http_client.update_trace_settings(settings={"trace_level": ["TIMESTAMPS"]})) == (
        "400",
        "Attempting to set invalid trace setting :trace file name is not given",
    )


# ---- OpenTelemetry ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def otel_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[ServerProcess, OtlpCollector]]:
    root = tmp_path_factory.mktemp("trace-otel")
    with OtlpCollector() as collector:
        settings = ["mode=opentelemetry", f"opentelemetry,url={collector.url}", "level=TIMESTAMPS", "rate=1"]
        settings.append("opentelemetry,resource=deployment.environment=test")
        with pytest.MonkeyPatch.context() as env:
            env.setenv("OTEL_BSP_SCHEDULE_DELAY", "50")  # the server exports within 50 ms rather than 5 s
            process = start(root, settings, "otel")
        with process:
            yield process, collector


def spans_of(collector: OtlpCollector, trace_id: str, count: int = 7) -> dict[str, ReceivedSpan]:
    collector.wait_for(lambda: len(collector.trace(trace_id)) >= count, f"{count} spans of trace {trace_id}")
    return {span.name: span for span in collector.trace(trace_id)}


def check_span_tree(spans: dict[str, ReceivedSpan], model: str, parent_span_id: str) -> None:
    root, request = spans["InferRequest"], spans[model]
    assert root.parent_id == parent_span_id
    assert {spans[name].parent_id for name in ("decode", "encode")} == {root.span_id}
    assert request.parent_id == root.span_id
    assert {spans[name].parent_id for name in ("queue", "batch", "compute")} == {request.span_id}
    assert request.attributes()["triton.model_name"] == model and request.attributes()["triton.model_version"] == 1
    assert request.events() == ["REQUEST_START", "QUEUE_START", "REQUEST_END"]
    assert spans["compute"].events() == ["COMPUTE_START", "COMPUTE_INPUT_END", "COMPUTE_OUTPUT_START", "COMPUTE_END"]
    assert spans["batch"].attributes() == {"ortserve.batch_size": 1, "ortserve.batch_requests": 1}
    assert root.span.start_time_unix_nano <= request.span.start_time_unix_nano <= request.span.end_time_unix_nano
    assert request.span.end_time_unix_nano <= root.span.end_time_unix_nano
    assert root.resource["service.name"] == "ortserve" and root.resource["deployment.environment"] == "test"


def test_an_http_traceparent_continues_the_client_s_trace(otel_server: tuple[ServerProcess, OtlpCollector]) -> None:
    server, collector = otel_server
    trace_id, parent = "4bf92f3577b34da6a3ce929d0e0e4736", "00f067aa0ba902b7"
    client = httpclient.InferenceServerClient(server.http_url)
    client.infer("mlp", [mlp_input(httpclient)], headers={"traceparent": f"00-{trace_id}-{parent}-01"})
    spans = spans_of(collector, trace_id)
    check_span_tree(spans, "mlp", parent)
    assert spans["InferRequest"].events() == ["HTTP_RECV_START", "HTTP_SEND_START"]


def test_grpc_metadata_traceparent_continues_the_client_s_trace(otel_server: tuple[ServerProcess, OtlpCollector]) -> None:
    server, collector = otel_server
    trace_id, parent = "0af7651916cd43dd8448eb211c80319c", "b7ad6b7169203331"
    client = grpcclient.InferenceServerClient(server.grpc_url)
    client.infer("mlp", [mlp_input(grpcclient)], headers={"traceparent": f"00-{trace_id}-{parent}-01"}, request_id="abc")
    spans = spans_of(collector, trace_id)
    check_span_tree(spans, "mlp", parent)
    assert spans["mlp"].attributes()["triton.request_id"] == "abc"
    assert spans["InferRequest"].events() == ["GRPC_WAITREAD_END", "GRPC_SEND_START"]


def test_without_a_traceparent_each_request_starts_its_own_trace(otel_server: tuple[ServerProcess, OtlpCollector]) -> None:
    server, collector = otel_server
    grpcclient.InferenceServerClient(server.grpc_url).infer("mlp", [mlp_input(grpcclient)], request_id="no-parent")

    def root_of_request() -> ReceivedSpan | None:
        named = [s for s in list(collector.spans) if s.attributes().get("triton.request_id") == "no-parent"]
        return next((s for s in collector.trace(named[0].trace_id) if s.name == "InferRequest"), None) if named else None

    collector.wait_for(lambda: root_of_request() is not None, "the root span of the request without a traceparent")
    root = root_of_request()
    assert root is not None and root.parent_id == ""


def test_a_batch_span_links_the_traced_requests_it_ran_together(otel_server: tuple[ServerProcess, OtlpCollector]) -> None:
    server, collector = otel_server
    client = grpcclient.InferenceServerClient(server.grpc_url)
    answers: queue.Queue[object] = queue.Queue()
    trace_ids = ["a" * 31 + "1", "a" * 31 + "2"]
    for value, trace_id in enumerate(trace_ids):
        headers = {"traceparent": f"00-{trace_id}-{'b' * 16}-01"}
        client.async_infer("gather", [index_input(value)], lambda result, error: answers.put(error or result), headers=headers)
    assert all(not isinstance(answers.get(timeout=60), InferenceServerException) for _ in trace_ids)
    first, second = (spans_of(collector, trace_id) for trace_id in trace_ids)
    for spans, other in ((first, second), (second, first)):
        batch = spans["batch"]
        assert batch.attributes() == {"ortserve.batch_size": 2, "ortserve.batch_requests": 2}
        assert [(link.trace_id.hex(), link.span_id.hex()) for link in batch.span.links] == [
            (other["gather"].trace_id, other["gather"].span_id)
        ]


def test_trace_settings_apply_in_opentelemetry_mode_too(otel_server: tuple[ServerProcess, OtlpCollector]) -> None:
    server, _ = otel_server
    client = httpclient.InferenceServerClient(server.http_url)
    assert client.update_trace_settings("mlp_b", {"trace_level": ["OFF"]})["trace_level"] == ["OFF"]
    assert client.get_trace_settings("mlp_b")["trace_rate"] == "1"
    assert client.get_trace_settings()["trace_file"] == ""
