"""The /metrics text: valid Prometheus exposition (checked with prometheus_client's own parser),
Triton's names without ``_total``, and histograms consistent with the counters."""

from __future__ import annotations

import asyncio

import onnxruntime as ort
from prometheus_client.parser import text_string_to_metric_families

from scripts import onnx_models
from server.errors import FailureReason
from server.lifecycle.onnx_servable import OnnxServable
from server.model_config.autocomplete import complete_core_fields, complete_from_graph, complete_instance_groups
from server.observability.histograms import Histogram, VersionHistograms
from server.observability.metrics import render_inference_metrics, render_latency_histograms
from server.observability.statistics import RequestTiming
from server.proto import model_config_pb2 as mc
from server.runtime.instance import ModelInstance, graph_signature


def serving_version() -> OnnxServable:
    session = ort.InferenceSession(
        onnx_models.add_constant("FP32", ["batch", 4], 1.0).SerializeToString(), providers=["CPUExecutionProvider"]
    )
    config = complete_from_graph(complete_core_fields(mc.ModelConfig(), "add"), graph_signature(session))
    complete_instance_groups(config, gpu_count=0)
    config.metric_tags["team"] = "vision"
    return OnnxServable("add", 3, config, [ModelInstance("add_0", session, "cpu")], VersionHistograms())


def record_traffic(serving: OnnxServable) -> None:
    for rows, latency_ns in ((1, 80_000), (4, 2_000_000), (2, 30_000_000)):
        timing = RequestTiming(
            received_ns=0, enqueued_ns=10_000, exec_start_ns=40_000, input_done_ns=50_000, infer_done_ns=60_000, output_done_ns=70_000
        )
        serving.stats.record_execution(rows, timing)
        serving.stats.record_success(timing, rows, latency_ns)
    serving.stats.record_failure(FailureReason.REJECTED, 0, 5_000)


def exposition() -> tuple[str, dict[str, object]]:
    async def build() -> str:
        serving = serving_version()
        record_traffic(serving)
        text = "\n".join(render_inference_metrics([serving]) + render_latency_histograms([serving])) + "\n"
        await serving.close(1)
        return text

    text = asyncio.run(build())
    return text, {family.name: family for family in text_string_to_metric_families(text)}


def sample_value(families: dict[str, object], family: str, sample: str, **labels: str) -> float:
    for item in families[family].samples:  # type: ignore[attr-defined]
        if item.name == sample and all(item.labels.get(k) == v for k, v in labels.items()):
            return item.value
    raise AssertionError(f"no {sample}{labels}")


def test_triton_names_have_no_total_suffix_and_parse_as_counters() -> None:
    text, families = exposition()
    assert "# TYPE nv_inference_request_success counter" in text
    assert "nv_inference_request_success_total" not in text and "_created" not in text
    assert 'nv_inference_request_success{model="add",version="3",_team="vision"} 3' in text
    # The parser names counter samples *_total by its own convention; the text above has none.
    assert sample_value(families, "nv_inference_count", "nv_inference_count_total", model="add") == 7
    assert sample_value(families, "nv_inference_exec_count", "nv_inference_exec_count_total", model="add") == 3
    failures = {s.labels["reason"]: s.value for s in families["nv_inference_request_failure"].samples}  # type: ignore[attr-defined]
    assert failures == {"REJECTED": 1, "CANCELED": 0, "BACKEND": 0, "OTHER": 0}


def test_histograms_agree_with_the_counters() -> None:
    _, families = exposition()
    assert sample_value(families, "ortserve_request_duration_seconds", "ortserve_request_duration_seconds_count") == 3
    assert sample_value(families, "ortserve_batch_size", "ortserve_batch_size_sum") == 7
    buckets = {s.labels["le"]: s.value for s in families["ortserve_request_duration_seconds"].samples if s.name.endswith("_bucket")}  # type: ignore[attr-defined]
    assert buckets["0.0001"] == 1  # 80 µs
    assert buckets["0.0025"] == 2  # + 2 ms
    assert buckets["0.05"] == 3 and buckets["+Inf"] == 3  # + 30 ms


def test_histogram_bucket_bounds_are_inclusive() -> None:
    histogram = Histogram((1.0, 2.0))
    for value in (1.0, 1.5, 2.0, 3.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("1.0", 1), ("2.0", 3), ("+Inf", 4)]
    assert histogram.sum == 7.5 and histogram.count == 4


def test_no_histograms_when_turned_off() -> None:
    async def build() -> list[str]:
        serving = serving_version()
        serving.stats.histograms = None
        lines = render_latency_histograms([serving])
        await serving.close(1)
        return lines

    assert asyncio.run(build()) == []
