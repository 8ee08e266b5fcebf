"""Every metric family ortserve exposes, defined once: name, Prometheus type, help text and, for
histograms, bucket bounds; plus the text-exposition helpers that render them.

Triton's names (``nv_*``) keep Triton's help texts so dashboards and perf_analyzer read them
unchanged; ortserve's own additions are ``ortserve_*``. The modules that hold values
(metrics.py per model, histograms.py per version, system_metrics.py per machine) render through
these definitions and define none of their own.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

Sample = tuple[dict[str, str], float]

# 50 µs … 10 s: small CPU models answer in well under a millisecond.
LATENCY_BUCKETS_SECS = (
    0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
)  # fmt: skip
BATCH_SIZE_BUCKETS = (1.0, 2.0, 4.0, 8.0, 16.0, 32.0, 64.0, 128.0, 256.0, 512.0, 1024.0)


@dataclass(frozen=True, slots=True)
class Family:
    name: str
    kind: str  # "counter", "gauge" or "histogram"
    help: str
    buckets: tuple[float, ...] = ()

    def header(self) -> list[str]:
        return [f"# HELP {self.name} {self.help}", f"# TYPE {self.name} {self.kind}"]

    def render(self, samples: Iterable[Sample]) -> list[str]:
        return self.header() + [f"{self.name}{format_labels(labels)} {_format_value(value)}" for labels, value in samples]


# ---- per model version (Triton's) -------------------------------------------------------------
REQUEST_FAILURE = Family("nv_inference_request_failure", "counter", "Number of failed inference requests, all batch sizes")
REQUEST_SUCCESS = Family("nv_inference_request_success", "counter", "Number of successful inference requests, all batch sizes")
INFERENCE_COUNT = Family("nv_inference_count", "counter", "Number of inferences performed (does not include cached requests)")
EXEC_COUNT = Family("nv_inference_exec_count", "counter", "Number of model executions performed (does not include cached requests)")
REQUEST_DURATION = Family(
    "nv_inference_request_duration_us", "counter", "Cumulative inference request duration in microseconds (includes cached requests)"
)
QUEUE_DURATION = Family(
    "nv_inference_queue_duration_us", "counter", "Cumulative inference queuing duration in microseconds (includes cached requests)"
)
COMPUTE_INPUT_DURATION = Family(
    "nv_inference_compute_input_duration_us",
    "counter",
    "Cumulative compute input duration in microseconds (does not include cached requests)",
)
COMPUTE_INFER_DURATION = Family(
    "nv_inference_compute_infer_duration_us",
    "counter",
    "Cumulative compute inference duration in microseconds (does not include cached requests)",
)
COMPUTE_OUTPUT_DURATION = Family(
    "nv_inference_compute_output_duration_us",
    "counter",
    "Cumulative inference compute output duration in microseconds (does not include cached requests)",
)
PENDING_REQUESTS = Family(
    "nv_inference_pending_request_count", "gauge", "Instantaneous number of pending requests awaiting execution per-model."
)
LOAD_DURATION = Family("nv_model_load_duration_secs", "gauge", "Model load time in seconds (including warmup)")
# Only for versions that answer from the response cache (Triton shows them only then).
CACHE_HITS = Family("nv_cache_num_hits_per_model", "counter", "Number of cache hits per model")
CACHE_MISSES = Family("nv_cache_num_misses_per_model", "counter", "Number of cache misses per model")
CACHE_HIT_DURATION = Family("nv_cache_hit_duration_per_model", "counter", "Total cache hit duration per model, in microseconds")
CACHE_MISS_DURATION = Family(
    "nv_cache_miss_duration_per_model", "counter", "Total cache miss (insert+lookup) duration per model, in microseconds"
)

# ---- the server's response cache and shared memory (ortserve's) ------------------------------
CACHE_ENTRIES = Family("ortserve_cache_entries", "gauge", "Responses held in the response cache")
CACHE_BYTES = Family("ortserve_cache_bytes", "gauge", "Bytes the response cache holds, counted against its budget")
CACHE_CAPACITY = Family("ortserve_cache_capacity_bytes", "gauge", "The response cache's byte budget (--cache-config local,size)")
CACHE_EVICTIONS = Family(
    "ortserve_cache_evictions", "counter", "Responses evicted from the response cache to make room within its byte budget"
)
SHM_REGIONS = Family("ortserve_shm_regions", "gauge", "System shared-memory regions registered by clients")
SHM_MAPPED_BYTES = Family(
    "ortserve_shm_mapped_bytes", "gauge", "Bytes of client shared memory mapped, including unregistered regions still in use"
)

# ---- per model version and instance (ortserve's) ---------------------------------------------
EXECUTING_REQUESTS = Family(
    "ortserve_inference_executing_request_count",
    "gauge",
    "Instantaneous number of requests handed to a model instance and not answered yet, per-model.",
)
INSTANCE_EXECUTION_DURATION = Family(
    "ortserve_instance_execution_duration_us", "counter", "Cumulative time each model instance spent running ONNX Runtime, in microseconds"
)
INSTANCE_EXECUTION_COUNT = Family("ortserve_instance_execution_count", "counter", "Number of batches each model instance ran")
BATCH_DELAY = Family(
    "ortserve_batch_queue_delay_us",
    "gauge",
    "Current max queue delay of the dynamic batcher in microseconds (tuned online under ortserve.target_latency_p99_ms)",
)

# ---- sequence batching and ensembles, per model version (ortserve's) ---------------------------
SEQUENCE_ACTIVE = Family("ortserve_sequence_active", "gauge", "Instantaneous number of sequences holding a batch slot, per-model.")
SEQUENCE_BACKLOG = Family(
    "ortserve_sequence_backlog", "gauge", "Instantaneous number of sequences waiting in the backlog for a batch slot, per-model."
)
SEQUENCE_IDLE_RELEASED = Family(
    "ortserve_sequence_idle_released", "counter", "Number of sequences whose slot was released after max_sequence_idle_microseconds"
)
SEQUENCE_ENDED_BY_FAILURE = Family(
    "ortserve_sequence_ended_by_failure", "counter", "Number of sequences ended because their batch failed on its model instance"
)
ENSEMBLE_STEP_SUCCESS = Family(
    "ortserve_ensemble_step_success", "counter", "Number of successful requests of each ensemble step to its member model"
)
ENSEMBLE_STEP_FAILURE = Family("ortserve_ensemble_step_failure", "counter", "Number of failed requests of each ensemble step")
ENSEMBLE_STEP_DURATION = Family(
    "ortserve_ensemble_step_duration_us", "counter", "Cumulative duration of each ensemble step's successful requests in microseconds"
)

# ---- histograms per model version (ortserve's), in VersionHistograms order -------------------
REQUEST_SECONDS = Family(
    "ortserve_request_duration_seconds", "histogram", "End-to-end inference request duration in the server, seconds", LATENCY_BUCKETS_SECS
)
QUEUE_SECONDS = Family(
    "ortserve_queue_duration_seconds",
    "histogram",
    "Time a request waited in the scheduler queue before its batch started, seconds",
    LATENCY_BUCKETS_SECS,
)
COMPUTE_SECONDS = Family(
    "ortserve_compute_duration_seconds",
    "histogram",
    "Time one batch took on an instance (merge inputs, run, split outputs), seconds",
    LATENCY_BUCKETS_SECS,
)
BATCH_SIZE = Family("ortserve_batch_size", "histogram", "Rows in each batch the scheduler formed and executed", BATCH_SIZE_BUCKETS)
HISTOGRAMS = (REQUEST_SECONDS, QUEUE_SECONDS, COMPUTE_SECONDS, BATCH_SIZE)

# ---- access control (ortserve's) -------------------------------------------------------------
AUTH_FAILURES = Family(
    "ortserve_auth_failures", "counter", "Calls refused by authentication or authorisation, by protocol, API group and reason"
)
AUDIT_EVENTS = Family("ortserve_audit_events", "counter", "Audited events: model loads and unloads by outcome, and refused calls by reason")
AUTH_CONFIG_RELOADS = Family("ortserve_auth_config_reloads", "counter", "Reloads of the --auth-config file after it changed, by outcome")

# ---- the machine (Triton's) ------------------------------------------------------------------
CPU_UTILIZATION = Family("nv_cpu_utilization", "gauge", "CPU utilization rate [0.0 - 1.0]")
CPU_MEMORY_TOTAL = Family("nv_cpu_memory_total_bytes", "gauge", "CPU total memory (RAM), in bytes")
CPU_MEMORY_USED = Family("nv_cpu_memory_used_bytes", "gauge", "CPU used memory (RAM), in bytes")
GPU_UTILIZATION = Family("nv_gpu_utilization", "gauge", "GPU utilization rate [0.0 - 1.0)")
GPU_MEMORY_TOTAL = Family("nv_gpu_memory_total_bytes", "gauge", "GPU total memory, in bytes")
GPU_MEMORY_USED = Family("nv_gpu_memory_used_bytes", "gauge", "GPU used memory, in bytes")
GPU_POWER_USAGE = Family("nv_gpu_power_usage", "gauge", "GPU power usage in watts")
GPU_POWER_LIMIT = Family("nv_gpu_power_limit", "gauge", "GPU power management limit in watts")

# ---- frontend processes (--workers; served by the engine) ---------------------------------------
FRONTEND_REQUESTS = Family("ortserve_frontend_requests", "counter", "Inference requests each frontend process handed to the engine")
FRONTEND_RESTARTS = Family("ortserve_frontend_restarts", "counter", "Frontend processes restarted after they exited unasked")
FRONTENDS_CONNECTED = Family("ortserve_frontends_connected", "gauge", "Frontend processes connected to the engine")


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def format_labels(labels: dict[str, str]) -> str:
    if not labels:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in labels.items()) + "}"


def _format_value(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
