"""Triton's trace file: the JSON of one trace, and which file each trace goes to and when."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

from server.observability.statistics import RequestTiming
from server.observability.trace_file import TraceFileSink, render
from server.observability.tracing import Tracer
from server.settings import TraceOptions
from server.types import TraceOrigin

TIMING = RequestTiming(received_ns=110, enqueued_ns=120, exec_start_ns=130, input_done_ns=140, infer_done_ns=150, output_done_ns=160)


def finished(tracer: Tracer, request_id: str = "", origin: TraceOrigin | None = None, error: str = "") -> str:
    trace = tracer.start("mlp", 3, request_id, origin, 110)
    assert trace is not None
    trace.request_ended(TIMING, error)
    trace.finish()
    return render(trace)


def test_a_trace_is_triton_s_model_object_then_one_object_per_timestamp(tmp_path: Path) -> None:
    sink = TraceFileSink(str(tmp_path / "t.json"))
    tracer = Tracer(TraceOptions(timestamps=True, rate=1, file=str(tmp_path / "t.json")), sink)
    objects = json.loads("[" + finished(tracer, "req-7", TraceOrigin("HTTP", 100)) + "]")
    assert objects[0] == {"id": 1, "model_name": "mlp", "model_version": 3, "request_id": "req-7"}
    names = [item["timestamps"][0]["name"] for item in objects[1:]]
    assert names == [
        "HTTP_RECV_START",
        "REQUEST_START",
        "QUEUE_START",
        "COMPUTE_START",
        "COMPUTE_INPUT_END",
        "COMPUTE_OUTPUT_START",
        "COMPUTE_END",
        "REQUEST_END",
        "HTTP_SEND_START",
    ]
    assert all(set(item) == {"id", "timestamps"} and item["id"] == 1 for item in objects[1:])
    stamps = [item["timestamps"][0]["ns"] for item in objects[1:]]
    assert stamps[:7] == [100, 110, 120, 130, 140, 150, 160] and stamps == sorted(stamps)
    sink.close()


def test_without_a_request_id_the_model_object_has_none_and_a_failure_sends_nothing(tmp_path: Path) -> None:
    sink = TraceFileSink(str(tmp_path / "t.json"))
    tracer = Tracer(TraceOptions(timestamps=True, rate=1, file=str(tmp_path / "t.json")), sink)
    objects = json.loads("[" + finished(tracer, origin=TraceOrigin("GRPC", 100), error="boom") + "]")
    assert objects[0] == {"id": 1, "model_name": "mlp", "model_version": 3}
    names = [item["timestamps"][0]["name"] for item in objects[1:]]
    assert names[0] == "GRPC_WAITREAD_END" and names[-1] == "REQUEST_END"
    sink.close()


def read_array(path: Path) -> list[dict[str, object]]:
    document = json.loads(path.read_text())
    assert isinstance(document, list)
    return document


def model_objects(items: list[dict[str, object]]) -> list[object]:
    return [item["id"] for item in items if "model_name" in item]


def test_with_a_log_frequency_every_n_traces_go_to_the_next_indexed_file(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    sink = TraceFileSink(str(path))
    tracer = Tracer(TraceOptions(timestamps=True, rate=1, log_frequency=2, file=str(path)), sink)
    for _ in range(5):
        finished(tracer)
    tracer.retire_all()  # shutdown: the fifth goes to its own indexed file
    tracer.close()
    assert [model_objects(read_array(tmp_path / f"t.json.{i}")) for i in range(3)] == [[1, 2], [3, 4], [5]]
    assert not path.exists()


def test_without_a_log_frequency_traces_go_to_the_file_itself_closed_at_shutdown(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    sink = TraceFileSink(str(path))
    tracer = Tracer(TraceOptions(timestamps=True, rate=1, file=str(path)), sink)
    for _ in range(3):
        finished(tracer)
    tracer.retire_all()
    tracer.close()
    assert model_objects(read_array(path)) == [1, 2, 3]


def test_a_count_that_runs_out_writes_what_was_collected(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    sink = TraceFileSink(str(path))
    tracer = Tracer(TraceOptions(timestamps=True, rate=1, count=2, file=str(path)), sink)
    finished(tracer)
    finished(tracer)
    assert tracer.start("mlp", 3, "", None, 0) is None
    sink.close()  # waits for the writer thread
    assert model_objects(read_array(tmp_path / "t.json.0")) == [1, 2]


def test_a_trace_crossing_a_process_boundary_ends_there_and_travels_as_none(tmp_path: Path) -> None:
    path = tmp_path / "t.json"
    sink = TraceFileSink(str(path))
    tracer = Tracer(TraceOptions(timestamps=True, rate=1, log_frequency=1, file=str(path)), sink)
    trace = tracer.start("mlp", 3, "", None, 110)
    assert trace is not None
    trace.request_ended(TIMING)
    assert pickle.loads(pickle.dumps(trace)) is None
    assert trace.finished_ns
    sink.close()
    assert model_objects(read_array(tmp_path / "t.json.0")) == [1]
