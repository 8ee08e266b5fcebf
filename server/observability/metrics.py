"""Prometheus text exposition with Triton's metric names (no ``_total`` suffix, no ``_created``).

prometheus_client renames counters to ``*_total``, which would break dashboards built for
Triton, so the nv_* families are rendered here straight from the same ModelStats that answer
ModelStatistics. Values are read on the event loop, where they are written.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from server.errors import FailureReason
from server.observability.histograms import VersionHistograms, render_histograms
from server.observability.statistics import ModelStats
from server.repository.model_version import ServingVersion

Sample = tuple[dict[str, str], float]

# (name, help, value from one version's stats); all are counters.
_COUNTERS: list[tuple[str, str, Callable[[ModelStats], float]]] = [
    (
        "nv_inference_request_success",
        "Number of successful inference requests, all batch sizes",
        lambda s: s.success.count,
    ),
    (
        "nv_inference_count",
        "Number of inferences performed (does not include cached requests)",
        lambda s: s.inference_count,
    ),
    (
        "nv_inference_exec_count",
        "Number of model executions performed (does not include cached requests)",
        lambda s: s.execution_count,
    ),
    (
        "nv_inference_request_duration_us",
        "Cumulative inference request duration in microseconds (includes cached requests)",
        lambda s: s.success.ns // 1000,
    ),
    (
        "nv_inference_queue_duration_us",
        "Cumulative inference queuing duration in microseconds (includes cached requests)",
        lambda s: s.queue.ns // 1000,
    ),
    (
        "nv_inference_compute_input_duration_us",
        "Cumulative compute input duration in microseconds (does not include cached requests)",
        lambda s: s.compute_input.ns // 1000,
    ),
    (
        "nv_inference_compute_infer_duration_us",
        "Cumulative compute inference duration in microseconds (does not include cached requests)",
        lambda s: s.compute_infer.ns // 1000,
    ),
    (
        "nv_inference_compute_output_duration_us",
        "Cumulative inference compute output duration in microseconds (does not include cached requests)",
        lambda s: s.compute_output.ns // 1000,
    ),
]


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _format_labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


def render_family(name: str, kind: str, help_text: str, samples: Iterable[Sample]) -> list[str]:
    lines = [f"# HELP {name} {help_text}", f"# TYPE {name} {kind}"]
    lines.extend(f"{name}{_format_labels(labels)} {_format_value(value)}" for labels, value in samples)
    return lines


def version_labels(serving: ServingVersion) -> dict[str, str]:
    labels = {"model": serving.name, "version": serving.version_str}
    labels.update({f"_{key}": value for key, value in serving.config.metric_tags.items()})
    return labels


def render_latency_histograms(versions: list[ServingVersion]) -> list[str]:
    """The ortserve_* histograms of the versions that keep them (none when turned off)."""
    series = [
        (_format_labels(version_labels(s))[1:-1], s.stats.histograms) for s in versions if isinstance(s.stats.histograms, VersionHistograms)
    ]
    return render_histograms(series) if series else []


def render_inference_metrics(versions: list[ServingVersion]) -> list[str]:
    """Triton's per-model families for every loaded version."""
    lines: list[str] = []
    lines += render_family(
        "nv_inference_request_failure",
        "counter",
        "Number of failed inference requests, all batch sizes",
        (({**version_labels(s), "reason": reason.value}, s.stats.failures[reason]) for s in versions for reason in FailureReason),
    )
    for name, help_text, value in _COUNTERS:
        lines += render_family(name, "counter", help_text, ((version_labels(s), value(s.stats)) for s in versions))
    lines += render_family(
        "nv_inference_pending_request_count",
        "gauge",
        "Instantaneous number of pending requests awaiting execution per-model.",
        ((version_labels(s), s.scheduler.pending_count) for s in versions),
    )
    lines += render_family(
        "ortserve_inference_executing_request_count",
        "gauge",
        "Instantaneous number of requests handed to a model instance and not answered yet, per-model.",
        ((version_labels(s), s.scheduler.executing_count) for s in versions),
    )
    lines += render_family(
        "nv_model_load_duration_secs",
        "gauge",
        "Model load time in seconds (including warmup)",
        ((version_labels(s), round(s.load_duration_secs, 6)) for s in versions),
    )
    return lines
