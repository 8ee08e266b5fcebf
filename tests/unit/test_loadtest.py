"""The load tester's pure parts: percentiles, merging workers' samples, splitting the load, the
open-loop schedule, input synthesis, statistics deltas and the report files."""

from __future__ import annotations

import struct
from array import array
from collections import Counter
from pathlib import Path

import numpy as np
import pytest

from loadtest import report
from loadtest.ceiling import mix_sizes, mix_throughput
from loadtest.inputs import InputSpec, build_request, random_tensor_bytes, request_shapes, rows_per_request, with_id
from loadtest.pool import split_concurrency, split_rate
from loadtest.runner import RunReport, StepResult, Target
from loadtest.samples import WorkerSamples, merge_sorted, percentile, summarize
from loadtest.server_stats import difference, snapshot
from loadtest.worker import Recorder, StepPlan, schedule
from server.proto import grpc_service_pb2 as pb

# ---- percentiles and aggregation ---------------------------------------------------------------


def test_percentile_is_nearest_rank() -> None:
    values = np.arange(1, 101)
    assert [percentile(values, p) for p in (50, 90, 95, 99, 100)] == [50, 90, 95, 99, 100]
    assert percentile(np.array([7]), 99) == 7
    assert percentile(np.array([1, 2]), 50) == 1  # at least half the samples are <= 1
    assert percentile(np.array([], dtype=np.int64), 50) is None


def test_merge_sorted_concatenates_and_sorts() -> None:
    assert merge_sorted([array("q", [5, 1]), array("q", [3]), array("q")]).tolist() == [1, 3, 5]
    assert merge_sorted([]).tolist() == []


def samples(latencies_us: list[int], errors: dict[str, int] | None = None, cpu_s: float = 0.5) -> WorkerSamples:
    worker = WorkerSamples(latencies_ns=array("q", [v * 1000 for v in latencies_us]), cpu_s=cpu_s, wall_s=2.0)
    worker.errors.update(errors or {})
    return worker


def test_summarize_takes_percentiles_over_merged_samples_not_averages() -> None:
    fast = samples([100] * 90)
    slow = samples([10_000] * 10, errors={"UNAVAILABLE": 2}, cpu_s=1.5)
    summary = summarize([fast, slow], duration_s=2.0, rows=4)

    assert summary.requests == 100
    assert summary.throughput_rps == 50.0 and summary.infer_per_s == 200.0
    # The merged p50 is the fast worker's; averaging per-worker p50s would give 5050 µs.
    assert summary.p50_us == 100.0 and summary.p90_us == 100.0 and summary.p95_us == 10_000.0
    assert summary.avg_us == pytest.approx(1090.0)
    assert summary.errors == {"UNAVAILABLE": 2}
    assert summary.client_cpu == 1.0  # (0.5 + 1.5) CPU seconds over 2 s of wall time
    assert summary.client_cpu_max_process == 0.75


def test_summarize_with_no_samples() -> None:
    summary = summarize([WorkerSamples()], duration_s=1.0, rows=1)
    assert summary.requests == 0 and summary.p99_us is None and summary.avg_us is None and summary.client_cpu == 0.0


# ---- splitting the load and the schedule -------------------------------------------------------


@pytest.mark.parametrize(("concurrency", "processes", "expected"), [(16, 3, [6, 5, 5]), (1, 4, [1, 0, 0, 0]), (64, 1, [64])])
def test_split_concurrency(concurrency: int, processes: int, expected: list[int]) -> None:
    assert split_concurrency(concurrency, processes) == expected


def test_split_rate_interleaves_workers() -> None:
    shares = split_rate(1000.0, 4)
    assert [rate for rate, _ in shares] == [250.0] * 4
    assert [phase for _, phase in shares] == pytest.approx([0.0, 0.001, 0.002, 0.003])


def plan(**changes: object) -> StepPlan:
    base = {"start_ns": 0, "warmup_s": 1.0, "duration_s": 2.0, "concurrency": 0, "rate": 100.0, "phase_s": 0.0}
    base |= {"poisson": False, "max_in_flight": 10, "seed": 3}
    base |= changes
    return StepPlan(**base)  # type: ignore[arg-type]


def test_constant_schedule_is_evenly_spaced_through_the_window() -> None:
    times = list(schedule(plan(phase_s=0.005)))
    assert len(times) == 300  # 3 s (warm-up and window) at 100/s
    assert times[0] == 5_000_000 and set(np.diff(times)) <= {9_999_999, 10_000_000, 10_000_001}


def test_poisson_schedule_has_the_mean_rate() -> None:
    times = list(schedule(plan(rate=2000.0, poisson=True)))
    assert 5400 < len(times) < 6600  # 3 s at 2000/s, a Poisson count (sd ~77)
    assert len(set(np.diff(times))) > 100


def test_recorder_keeps_only_the_measurement_window() -> None:
    recorder = Recorder(plan())  # window [1 s, 3 s]
    recorder.outcome(0, 500_000_000, None)  # warm-up
    recorder.outcome(900_000_000, 1_100_000_000, None)
    recorder.outcome(2_000_000_000, 2_500_000_000, "UNAVAILABLE")
    recorder.outcome(2_900_000_000, 3_100_000_000, None)  # ends after the window
    recorder.sent(1_500_000_000, 1_500_300_000)
    recorder.skip(500_000_000)
    recorder.skip(1_500_000_000)
    assert list(recorder.samples.latencies_ns) == [200_000_000]
    assert recorder.samples.errors == Counter({"UNAVAILABLE": 1})
    assert list(recorder.samples.send_lag_ns) == [300_000] and recorder.samples.skipped == 1


# ---- input synthesis ---------------------------------------------------------------------------


def metadata(*inputs: tuple[str, str, list[int]]) -> pb.ModelMetadataResponse:
    response = pb.ModelMetadataResponse(name="m")
    for name, datatype, shape in inputs:
        response.inputs.add(name=name, datatype=datatype, shape=shape)
    return response


def test_batching_model_shapes_take_the_batch_and_fill_dynamic_dims() -> None:
    meta = metadata(("x", "FP32", [-1, 3, 48, -1]), ("y", "INT64", [-1, 4]))
    specs = request_shapes(meta, batching=True, batch=8, shapes={"x": [3, 48, 320]})
    assert specs == [InputSpec("x", "FP32", (8, 3, 48, 320)), InputSpec("y", "INT64", (8, 4))]
    assert rows_per_request(specs, batching=True) == 8


def test_non_batching_model_shapes_are_given_whole() -> None:
    specs = request_shapes(metadata(("x", "FP32", [-1, 5])), batching=False, batch=1, shapes={"x": [2, 5]})
    assert specs == [InputSpec("x", "FP32", (2, 5))]
    assert rows_per_request(specs, batching=False) == 1


@pytest.mark.parametrize(
    ("shapes", "message"),
    [({}, "pass --shape x:"), ({"x": [3, 48]}, "does not fit"), ({"x": [4, 48, 320]}, "does not fit")],
)
def test_shapes_that_do_not_fit_are_refused(shapes: dict[str, list[int]], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        request_shapes(metadata(("x", "FP32", [-1, 3, 48, -1])), batching=True, batch=1, shapes=shapes)


@pytest.mark.parametrize(
    ("datatype", "item_bytes"),
    [("FP32", 4), ("FP16", 2), ("BF16", 2), ("FP64", 8), ("INT8", 1), ("UINT64", 8), ("BOOL", 1)],
)
def test_fixed_size_datatypes_have_their_byte_size(datatype: str, item_bytes: int) -> None:
    data = random_tensor_bytes(InputSpec("x", datatype, (2, 3)), np.random.default_rng(0))
    assert len(data) == 6 * item_bytes


def test_bytes_elements_are_length_prefixed() -> None:
    data = random_tensor_bytes(InputSpec("s", "BYTES", (2, 2)), np.random.default_rng(0), string_length=5)
    elements, offset = [], 0
    while offset < len(data):
        (length,) = struct.unpack_from("<I", data, offset)
        elements.append(data[offset + 4 : offset + 4 + length])
        offset += 4 + length
    assert len(elements) == 4 and all(len(e) == 5 and e.isalpha() for e in elements)


def test_unknown_datatype_is_refused() -> None:
    with pytest.raises(ValueError, match="cannot fabricate"):
        random_tensor_bytes(InputSpec("x", "COMPLEX", (1,)), np.random.default_rng(0))


def test_built_request_parses_back() -> None:
    specs = [InputSpec("INPUT0", "INT32", (4, 16)), InputSpec("TEXT", "BYTES", (4, 1))]
    request = pb.ModelInferRequest.FromString(build_request("simple", "1", specs, string_length=3))
    assert request.model_name == "simple" and request.model_version == "1" and request.id == ""
    assert [(t.name, t.datatype, list(t.shape)) for t in request.inputs] == [("INPUT0", "INT32", [4, 16]), ("TEXT", "BYTES", [4, 1])]
    assert [len(raw) for raw in request.raw_input_contents] == [4 * 16 * 4, 4 * (4 + 3)]


@pytest.mark.parametrize("request_id", ["1", "12345", "x" * 200])  # 200 bytes: a two-byte length varint
def test_with_id_sets_the_id_without_reserializing(request_id: str) -> None:
    base = build_request("simple", "", [InputSpec("INPUT0", "INT32", (1, 16))])
    request = pb.ModelInferRequest.FromString(with_id(base, request_id))
    assert request.id == request_id and request.model_name == "simple" and len(request.raw_input_contents[0]) == 64


# ---- server statistics -------------------------------------------------------------------------


def statistics_response(inferences: int, executions: int, queue_ns: int, batches: dict[int, int]) -> pb.ModelStatisticsResponse:
    response = pb.ModelStatisticsResponse()
    stats = response.model_stats.add(name="mlp", version="1", inference_count=inferences, execution_count=executions)
    stats.inference_stats.success.count = stats.inference_stats.queue.count = inferences
    stats.inference_stats.compute_infer.count = inferences
    stats.inference_stats.queue.ns = queue_ns
    stats.inference_stats.compute_infer.ns = inferences * 50_000
    for size, count in batches.items():
        batch = stats.batch_stats.add(batch_size=size)
        batch.compute_infer.count = count
        batch.compute_infer.ns = count * 1_000_000  # 1 ms per execution
    response.model_stats.add(name="other", inference_count=999, execution_count=1)  # another model: ignored
    return response


def test_difference_gives_the_windows_formed_batch_and_averages() -> None:
    before = snapshot(statistics_response(10, 10, 1_000_000, {1: 10}), "mlp")
    after = snapshot(statistics_response(110, 30, 3_000_000, {1: 10, 4: 10, 6: 10}), "mlp")
    window = difference(before, after, window_s=0.1)
    assert (window.inferences, window.executions, window.avg_batch) == (100, 20, 5.0)
    assert window.queue_avg_us == 20.0  # 2 ms of queueing over 100 requests
    assert window.compute_infer_avg_us == 50.0 and window.compute_avg_us == 50.0
    assert window.batch_executions == {4: 10, 6: 10}
    assert window.busy_share == 0.2  # 20 executions of 1 ms in a 100 ms window


def test_difference_without_executions_has_no_averages() -> None:
    same = snapshot(statistics_response(5, 5, 0, {1: 5}), "mlp")
    window = difference(same, same, window_s=1.0)
    assert window.avg_batch is None and window.queue_avg_us is None and window.batch_executions == {}


# ---- the ceiling for a formed mix of batch sizes -----------------------------------------------


def test_mix_sizes_take_the_extremes_and_the_sizes_carrying_most_rows() -> None:
    assert mix_sizes({1: 45, 31: 23}) == {1, 31}
    assert mix_sizes({1: 10, 2: 10, 8: 100, 9: 1, 16: 1}) == {1, 8, 16}
    assert mix_sizes({}) == set()
    # One batch of each size: the six carrying most rows are the largest; the smallest is added.
    assert mix_sizes({size: 1 for size in range(1, 64)}, cap=6) == {1, 58, 59, 60, 61, 62, 63}


def test_mix_throughput_is_all_rows_over_the_raw_time_of_every_batch() -> None:
    measured = {1: 100.0, 31: 62.0}  # 10 ms for one row, 500 ms for 31 rows
    # 45 batches of 1 (0.45 s) and 23 of 31 (11.5 s): 758 rows in 11.95 s.
    assert mix_throughput({1: 45, 31: 23}, measured) == pytest.approx(758 / 11.95, abs=0.1)
    # Batches of 16 are interpolated between 10 ms and 500 ms: 10 + 15/30 * 490 = 255 ms.
    assert mix_throughput({16: 4}, measured) == pytest.approx(64 / 1.02, abs=0.1)
    assert mix_throughput({}, measured) is None and mix_throughput({4: 1}, {}) is None


# ---- the report files --------------------------------------------------------------------------


def small_report() -> RunReport:
    client = summarize([samples([100, 200, 300])], duration_s=1.0, rows=1)
    target = Target("127.0.0.1:1", "mlp", "", 4, True, [InputSpec("input", "FP32", (1, 256))], 1, False, 1)
    steps = [StepResult("concurrency", 1.0, client, None), StepResult("rate", 500.0, client, None, achieved_ratio=0.006)]
    return RunReport(target, steps)


def test_report_writes_json_csv_and_plot(tmp_path: Path) -> None:
    pytest.importorskip("matplotlib")
    paths = report.write(small_report(), tmp_path, "mlp")
    assert [p.name for p in paths] == ["mlp.json", "mlp.csv", "mlp.png"]
    lines = (tmp_path / "mlp.csv").read_text().splitlines()
    assert lines[0].startswith("model,mode,level,requests") and len(lines) == 3
    assert (tmp_path / "mlp.png").read_bytes()[:4] == b"\x89PNG"
    assert "c=1" in report.render(small_report()) and "r=500/s (1%)" in report.render(small_report())
