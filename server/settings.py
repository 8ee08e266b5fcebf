"""Typed, validated server settings. Built once by ``cli.parse_settings`` from argv and the environment."""

from __future__ import annotations

import enum
from dataclasses import dataclass, field
from pathlib import Path

from server.security.settings import SecuritySettings


class ModelControlMode(enum.Enum):
    NONE = "none"
    POLL = "poll"
    EXPLICIT = "explicit"


class LogFormat(enum.Enum):
    TEXT = "text"
    JSON = "json"


class TraceMode(enum.Enum):
    TRITON = "triton"
    OPENTELEMETRY = "opentelemetry"


@dataclass(frozen=True, slots=True)
class TraceOptions:
    """``--trace-config`` (Triton's flag, parsed by observability/trace_options.py): the global
    trace setting at start, and the mode's own settings. The file is only ever set here."""

    timestamps: bool = False  # level=TIMESTAMPS; False is level OFF
    rate: int = 1000
    count: int = -1
    log_frequency: int = 0
    file: str = ""
    mode: TraceMode = TraceMode.TRITON
    otel_url: str = "http://localhost:4318/v1/traces"
    otel_resource: tuple[tuple[str, str], ...] = ()


class SettingsError(ValueError):
    """A setting that cannot work; the message is shown to the user as is."""


@dataclass(frozen=True, slots=True)
class OrtThreadSettings:
    """ONNX Runtime's CPU threads (``--backend-config=onnxruntime,...``, Triton's setting names;
    runtime/threads.py says how they are used)."""

    # enable-global-threadpool: one process-wide pool instead of a pool per session.
    global_pool: bool = False
    # intra_op_thread_count / inter_op_thread_count: the global pool's sizes, or each session's
    # default when its config does not say (0: every core / 1).
    intra_op_threads: int = 0
    inter_op_threads: int = 0


# A request body or message may take this much by default, on the wire and decoded: enough for a
# batch of large images, small enough that a few at once cannot exhaust a node. Raise it per
# deployment (at most 2 GiB - 1, gRPC's own ceiling).
DEFAULT_MAX_INPUT_BYTES = 128 * 2**20
MAX_MESSAGE_BYTES = 2**31 - 1


@dataclass(frozen=True, slots=True)
class Settings:
    model_repositories: tuple[Path, ...]
    host: str = "0.0.0.0"
    http_port: int = 8000
    grpc_port: int = 8001
    metrics_port: int = 8002
    allow_http: bool = True
    allow_grpc: bool = True
    allow_metrics: bool = True
    strict_readiness: bool = True
    exit_on_error: bool = False
    exit_timeout_secs: float = 30.0
    # How long a replaced or unloaded version may drain its queued requests (not the shutdown's bound).
    version_drain_timeout_secs: float = 30.0
    log_verbose: int = 0
    log_format: LogFormat = LogFormat.TEXT
    model_control_mode: ModelControlMode = ModelControlMode.NONE
    repository_poll_secs: float = 15.0
    load_models: tuple[str, ...] = ()
    model_load_thread_count: int = 4
    # Triton's --backend-config=onnxruntime,default-max-batch-size=N (used by auto-complete).
    default_max_batch_size: int = 4
    # --backend-config=onnxruntime,enable-global-threadpool / intra_op_thread_count / inter_op_thread_count.
    ort_threads: OrtThreadSettings = OrtThreadSettings()
    server_id: str = "ortserve"
    allow_cpu_metrics: bool = True
    allow_gpu_metrics: bool = True
    metrics_interval_ms: int = 2000
    # --metrics-config histogram_latencies=false turns the ortserve_* histograms off.
    histogram_latencies: bool = True
    # Name for a --model-repository that is a single model (KServe's /mnt/models); None = dir name.
    model_name: str | None = None
    # Close gRPC connections after this age so clients re-resolve and spread over replicas (0 = never).
    grpc_max_connection_age_ms: int = 0
    grpc_max_connection_age_grace_ms: int = 0
    # Largest HTTP request body, before and after Content-Encoding decoding (413 above it).
    http_max_input_bytes: int = DEFAULT_MAX_INPUT_BYTES
    # Largest gRPC request message, compressed or decoded (gRPC answers RESOURCE_EXHAUSTED).
    grpc_max_receive_bytes: int = DEFAULT_MAX_INPUT_BYTES
    # Open connections per port; more are closed as they arrive.
    grpc_max_connections: int = 1024
    http_max_connections: int = 1024
    # A gRPC connection that has not finished its HTTP/2 preface by then is closed; one with no
    # call for the idle time gets GOAWAY (0 = never).
    grpc_handshake_timeout_secs: float = 10.0
    grpc_max_connection_idle_secs: float = 900.0
    # An HTTP connection without a complete request head for this long is closed (also the
    # keep-alive idle time); a request body must arrive within the body timeout.
    http_idle_timeout_secs: float = 30.0
    http_body_timeout_secs: float = 60.0
    # Request bytes held at once, queued or running (0 = a quarter of the memory limit).
    max_inflight_bytes: int = 0
    # The response cache (--cache-config local,size=N[,ttl_secs=T]): its byte budget (0 = no
    # cache) and how long an entry may answer (0 = until evicted).
    cache_size_bytes: int = 0
    cache_ttl_secs: float = 0.0
    # System shared memory (--allow-client-shm): off by default (README "System shared memory").
    allow_client_shm: bool = False
    max_shm_regions: int = 128
    # Client shared memory mapped at once (0 = the machine's memory).
    max_shm_bytes: int = 0
    # Keep real request inputs for `ortserve optimize --samples` (server/service/sample_capture.py); off when None.
    sample_capture_dir: Path | None = None
    sample_capture_count: int = 256  # requests per model
    sample_capture_bytes: int = 64 * 2**20  # bytes per model
    # TLS, access control, the health port, model keys (server/security/, docs/security.md).
    security: SecuritySettings = field(default_factory=SecuritySettings)
    # Frontend processes (--workers; 1 = everything in this process). See server/workers/.
    workers: int = 1
    trace: TraceOptions = TraceOptions()

    def __post_init__(self) -> None:
        if not self.model_repositories:
            raise SettingsError("at least one --model-repository is required")
        for repository in self.model_repositories:
            if not repository.is_dir():
                raise SettingsError(f"model repository '{repository}' does not exist or is not a directory")
        ports = [self.http_port, self.grpc_port, self.metrics_port]
        for port in ports:
            if not 0 <= port <= 65535:
                raise SettingsError(f"port {port} is outside 0-65535")
        enabled = [p for p, on in zip(ports, (self.allow_http, self.allow_grpc, self.allow_metrics)) if on and p]
        if len(enabled) != len(set(enabled)):
            raise SettingsError(f"the HTTP, gRPC and metrics ports must differ, got {ports}")
        if self.security.health_port and self.security.health_port in enabled:
            raise SettingsError(f"--http-health-port {self.security.health_port} must differ from the HTTP, gRPC and metrics ports")
        if self.grpc_max_connection_age_ms < 0 or self.grpc_max_connection_age_grace_ms < 0:
            raise SettingsError("--grpc-max-connection-age-ms and its grace must be >= 0")
        for flag, value in (
            ("--http-max-input-bytes", self.http_max_input_bytes),
            ("--grpc-max-receive-bytes", self.grpc_max_receive_bytes),
        ):
            if not 1 <= value <= MAX_MESSAGE_BYTES:
                raise SettingsError(f"{flag} must be between 1 and {MAX_MESSAGE_BYTES}")
        if self.version_drain_timeout_secs < 0:
            raise SettingsError("--version-drain-timeout-secs must be >= 0")
        if self.max_inflight_bytes < 0:
            raise SettingsError("--max-inflight-bytes must be >= 0 (0 = a quarter of the memory limit)")
        if self.grpc_max_connections < 1 or self.http_max_connections < 1:
            raise SettingsError("--grpc-max-connections and --http-max-connections must be >= 1")
        timeouts = (self.grpc_handshake_timeout_secs, self.http_idle_timeout_secs, self.http_body_timeout_secs)
        if min(timeouts) <= 0 or self.grpc_max_connection_idle_secs < 0:
            raise SettingsError("connection timeouts must be > 0 (--grpc-max-connection-idle-secs: >= 0, 0 = never)")
        if self.cache_size_bytes < 0 or not 0 <= self.cache_ttl_secs < 1e9:
            raise SettingsError("--cache-config local: size must be >= 0 and ttl_secs between 0 and 1e9")
        if self.max_shm_regions < 1 or self.max_shm_bytes < 0:
            raise SettingsError("--max-shm-regions must be >= 1 and --max-shm-bytes >= 0 (0 = the machine's memory)")
        if self.sample_capture_count < 0 or self.sample_capture_bytes < 0:
            raise SettingsError("--sample-capture-count and --sample-capture-bytes must be >= 0")
        if self.metrics_interval_ms < 1:
            raise SettingsError("--metrics-interval-ms must be >= 1")
        if self.exit_timeout_secs < 0:
            raise SettingsError("--exit-timeout-secs must be >= 0")
        if self.workers < 1:
            raise SettingsError("--workers must be >= 1 or 'auto'")
        if self.workers > 1 and 0 in [p for p, on in zip(ports[:2], (self.allow_http, self.allow_grpc)) if on]:
            raise SettingsError("--workers > 1 needs fixed HTTP and gRPC ports (the frontends share them), not port 0")
        if self.model_load_thread_count < 1:
            raise SettingsError("--model-load-thread-count must be >= 1")
        if self.default_max_batch_size < 0:
            raise SettingsError("default-max-batch-size must be >= 0")
        if self.ort_threads.intra_op_threads < 0 or self.ort_threads.inter_op_threads < 0:
            raise SettingsError("--backend-config onnxruntime thread counts must be >= 0")
        if self.repository_poll_secs <= 0 and self.model_control_mode is ModelControlMode.POLL:
            raise SettingsError("--repository-poll-secs must be > 0 in poll mode")
        if self.load_models and self.model_control_mode is not ModelControlMode.EXPLICIT:
            raise SettingsError("--load-model requires --model-control-mode=explicit")
        if "*" in self.load_models and len(self.load_models) > 1:
            raise SettingsError("--load-model=* must be the only --load-model")
