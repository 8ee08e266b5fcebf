"""Typed, validated server settings. Built once by ``__main__`` from argv and the environment."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from pathlib import Path


class ModelControlMode(enum.Enum):
    NONE = "none"
    POLL = "poll"
    EXPLICIT = "explicit"


class LogFormat(enum.Enum):
    TEXT = "text"
    JSON = "json"


class SettingsError(ValueError):
    """A setting that cannot work; the message is shown to the user as is."""


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
    log_verbose: int = 0
    log_format: LogFormat = LogFormat.TEXT
    model_control_mode: ModelControlMode = ModelControlMode.NONE
    repository_poll_secs: float = 15.0
    load_models: tuple[str, ...] = ()
    model_load_thread_count: int = 4
    # Triton's --backend-config=onnxruntime,default-max-batch-size=N (used by auto-complete).
    default_max_batch_size: int = 4
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
    # gRPC's 2 GiB - 1, so a tensor that fits one protocol fits the other.
    http_max_input_bytes: int = 2**31 - 1

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
        if self.grpc_max_connection_age_ms < 0 or self.grpc_max_connection_age_grace_ms < 0:
            raise SettingsError("--grpc-max-connection-age-ms and its grace must be >= 0")
        if self.http_max_input_bytes < 1:
            raise SettingsError("--http-max-input-bytes must be >= 1")
        if self.metrics_interval_ms < 1:
            raise SettingsError("--metrics-interval-ms must be >= 1")
        if self.exit_timeout_secs < 0:
            raise SettingsError("--exit-timeout-secs must be >= 0")
        if self.model_load_thread_count < 1:
            raise SettingsError("--model-load-thread-count must be >= 1")
        if self.default_max_batch_size < 0:
            raise SettingsError("default-max-batch-size must be >= 0")
        if self.repository_poll_secs <= 0 and self.model_control_mode is ModelControlMode.POLL:
            raise SettingsError("--repository-poll-secs must be > 0 in poll mode")
        if self.load_models and self.model_control_mode is not ModelControlMode.EXPLICIT:
            raise SettingsError("--load-model requires --model-control-mode=explicit")
        if "*" in self.load_models and len(self.load_models) > 1:
            raise SettingsError("--load-model=* must be the only --load-model")
