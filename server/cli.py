"""Command-line flags (Triton's spelling) and their ORTSERVE_* environment twins → Settings.

Every flag can also come from the environment, for containers and Kubernetes: ``--grpc-port``
is ``ORTSERVE_GRPC_PORT``; repeatable flags take comma-separated values there. A flag on the
command line wins over the environment.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any, NoReturn

from server.observability.trace_options import DeprecatedTraceFlags, parse_trace_options
from server.security.flags import add_security_flags, security_settings
from server.settings import DEFAULT_MAX_INPUT_BYTES, LogFormat, ModelControlMode, OrtThreadSettings, Settings, SettingsError

ENV_PREFIX = "ORTSERVE_"


def parse_bool(text: str) -> bool:
    value = text.strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise argparse.ArgumentTypeError(f"expected true or false, got '{text}'")


def add_switch(parser: argparse.ArgumentParser, name: str, default: bool, help: str | None = None) -> None:
    """A boolean flag in Triton's forms: ``--name``, ``--name=true|false`` (also 1/0, yes/no, on/off)."""
    parser.add_argument(name, type=parse_bool, nargs="?", const=True, default=default, help=help)


class OneLineParser(argparse.ArgumentParser):
    """Errors are one line on stderr and exit status 2 (no usage dump)."""

    def error(self, message: str) -> NoReturn:
        self.exit(2, f"ortserve: error: {message}\n")


class _Repeatable(argparse._AppendAction):
    """A repeatable flag whose command-line values replace its default (e.g. one from the environment).

    argparse's own append action extends the default list, which would merge the environment's
    repositories with the command line's instead of letting the command line win.
    """

    env_separator = ","  # between the values of its ORTSERVE_* twin

    def __call__(
        self,
        parser: argparse.ArgumentParser,
        namespace: argparse.Namespace,
        values: str | Sequence[Any] | None,
        option_string: str | None = None,
    ) -> None:
        if getattr(namespace, self.dest, None) is self.default:
            setattr(namespace, self.dest, None)
        super().__call__(parser, namespace, values, option_string)


class _SemicolonRepeatable(_Repeatable):
    """A repeatable flag whose environment twin separates values with ';' (the values themselves
    hold commas, e.g. ``triton,file=/tmp/t.json``)."""

    env_separator = ";"


def parse_workers(text: str) -> int | str:
    if text.strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number of processes or 'auto', got '{text}'") from None


def _workers(value: int | str) -> int:
    from server.runtime.threads import available_cores
    from server.workers.sizing import auto_workers

    return auto_workers(available_cores()) if value == "auto" else int(value)


def env_name(flag: str) -> str:
    return ENV_PREFIX + flag.lstrip("-").replace("-", "_").upper()


def build_parser() -> OneLineParser:
    p = OneLineParser(
        prog="ortserve", description="Serve ONNX models over Triton's gRPC/HTTP protocol (see also: ortserve optimize --help)."
    )
    p.add_argument("--model-repository", "--model-store", action=_Repeatable, help="repository path (repeatable)")
    p.add_argument("--host", default="0.0.0.0", help="address every port binds to")
    p.add_argument("--http-port", type=int, default=8000)
    p.add_argument("--grpc-port", type=int, default=8001)
    p.add_argument("--metrics-port", type=int, default=8002)
    for name in ("--allow-http", "--allow-grpc", "--allow-metrics"):
        add_switch(p, name, True)
    add_switch(p, "--strict-readiness", True, "ready only when every model that should load is READY (default true)")
    add_switch(p, "--exit-on-error", False, "fail startup if any model fails to load (default false)")
    p.add_argument("--exit-timeout-secs", type=float, default=30.0, help="bound on the graceful drain after SIGTERM/SIGINT")
    p.add_argument("--version-drain-timeout-secs", type=float, default=30.0, help="time a replaced or unloaded model version gets to drain")
    p.add_argument("--log-verbose", type=int, default=0)
    p.add_argument("--log-format", choices=[f.value for f in LogFormat], default="text")
    p.add_argument("--model-control-mode", choices=[m.value for m in ModelControlMode], default="none")
    p.add_argument("--repository-poll-secs", type=float, default=15.0)
    p.add_argument("--load-model", action=_Repeatable, default=None, help="model to load in explicit mode (repeatable, * = all)")
    p.add_argument("--model-load-thread-count", type=int, default=4)
    p.add_argument(
        "--backend-config",
        action=_Repeatable,
        default=None,
        help="onnxruntime,<setting>=<value> (Triton's spelling): default-max-batch-size, enable-global-threadpool, "
        "intra_op_thread_count, inter_op_thread_count",
    )
    p.add_argument("--id", default="ortserve", help="server name reported by ServerMetadata")
    for name in ("--allow-cpu-metrics", "--allow-gpu-metrics"):
        add_switch(p, name, True)
    p.add_argument("--model-name", default=None, help="name for a --model-repository that is a single model (KServe)")
    p.add_argument(
        "--grpc-max-connection-age-ms",
        type=int,
        default=0,
        help="close gRPC connections after this age so clients re-balance over replicas (0 = never)",
    )
    p.add_argument("--grpc-max-connection-age-grace-ms", type=int, default=0, help="time calls on an aged connection get to finish")
    p.add_argument(
        "--http-max-input-bytes",
        "--http-max-input-size",
        type=int,
        default=DEFAULT_MAX_INPUT_BYTES,
        help="largest HTTP request body in bytes, on the wire and decoded (413 above it; default 128 MiB, at most 2 GiB - 1)",
    )
    p.add_argument(
        "--grpc-max-receive-bytes",
        type=int,
        default=DEFAULT_MAX_INPUT_BYTES,
        help="largest gRPC request message in bytes, compressed or decoded (default 128 MiB, at most 2 GiB - 1)",
    )
    p.add_argument("--grpc-max-connections", type=int, default=1024, help="open gRPC connections (more are closed)")
    p.add_argument("--http-max-connections", type=int, default=1024, help="open HTTP connections (more are closed)")
    p.add_argument("--grpc-handshake-timeout-secs", type=float, default=10.0, help="time a gRPC connection gets for its preface")
    p.add_argument(
        "--grpc-max-connection-idle-secs", type=float, default=900.0, help="GOAWAY to a gRPC connection without calls (0 = never)"
    )
    p.add_argument("--http-idle-timeout-secs", type=float, default=30.0, help="time to send a request head, and keep-alive idle time")
    p.add_argument("--http-body-timeout-secs", type=float, default=60.0, help="time a request body gets to arrive")
    p.add_argument(
        "--max-inflight-bytes", type=int, default=0, help="request bytes held at once, queued or running (0 = a quarter of memory)"
    )
    p.add_argument(
        "--cache-config",
        action="append",
        default=None,
        help="response cache: local,size=<bytes> (Triton's spelling), and optionally local,ttl_secs=<seconds>",
    )
    add_switch(p, "--allow-client-shm", False, "let clients register system shared memory (default false: see the README)")
    p.add_argument("--max-shm-regions", type=int, default=128, help="shared-memory regions registered at once")
    p.add_argument("--max-shm-bytes", type=int, default=0, help="client shared memory mapped at once (0 = the machine's memory)")
    p.add_argument("--metrics-interval-ms", type=int, default=2000, help="how often CPU/GPU gauges are sampled")
    p.add_argument("--sample-capture-dir", type=Path, default=None, help="keep real request inputs here, per model (off by default)")
    p.add_argument("--sample-capture-count", type=int, default=256, help="requests kept per model (default 256)")
    p.add_argument("--sample-capture-bytes", type=int, default=64 * 2**20, help="bytes kept per model (default 64 MiB)")
    p.add_argument(
        "--workers",
        type=parse_workers,
        default="auto",
        help="frontend processes sharing the gRPC/HTTP ports, one engine process behind them (1 = one process; "
        "auto = 1 below 8 cores, else one per 4 cores up to 8)",
    )
    p.add_argument(
        "--metrics-config", action="append", default=None, help="histogram_latencies=true|false (ortserve_* histograms, default true)"
    )
    _add_trace_flags(p)
    add_security_flags(p, parse_bool)
    return p


def _add_trace_flags(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--trace-config",
        action=_SemicolonRepeatable,
        default=None,
        help="[<mode>,]<setting>=<value> (Triton's): level=TIMESTAMPS, rate=N, count=N, mode=triton|opentelemetry, "
        "triton,file=PATH, triton,log-frequency=N, opentelemetry,url=URL, opentelemetry,resource=KEY=VALUE (repeatable)",
    )
    # Triton's deprecated spellings of the same settings; --trace-config wins over them.
    p.add_argument("--trace-file", default=None, help=argparse.SUPPRESS)
    p.add_argument("--trace-level", action=_Repeatable, default=None, help=argparse.SUPPRESS)
    for name in ("--trace-rate", "--trace-count", "--trace-log-frequency"):
        p.add_argument(name, default=None, help=argparse.SUPPRESS)


def _apply_environment(parser: argparse.ArgumentParser, environ: Mapping[str, str]) -> None:
    """Use ORTSERVE_* variables as defaults, validated by the flag's own type."""
    for action in parser._actions:  # argparse exposes no public iterator over actions
        if not action.option_strings or action.dest == "help":
            continue
        value = environ.get(env_name(action.option_strings[0]))
        if value is None:
            continue
        convert: Callable[[str], object] = action.type if callable(action.type) else str
        try:
            if isinstance(action, argparse._AppendAction):
                separator = getattr(action, "env_separator", ",")
                default: object = [convert(v) for v in value.split(separator) if v]
            else:
                default = convert(value)
        except (argparse.ArgumentTypeError, ValueError) as exc:
            parser.error(f"{env_name(action.option_strings[0])}: {exc}")
        if action.choices is not None and default not in action.choices:
            parser.error(f"{env_name(action.option_strings[0])}: '{value}' is not one of {list(action.choices)}")
        action.default = default


_INT_BACKEND_SETTINGS = ("default-max-batch-size", "intra_op_thread_count", "inter_op_thread_count")
_BACKEND_SETTINGS = (*_INT_BACKEND_SETTINGS, "enable-global-threadpool")


def _backend_config(backend_configs: list[str]) -> tuple[int, OrtThreadSettings]:
    """Triton's ``--backend-config=onnxruntime,<setting>=<value>`` (or ``<setting>=<value>`` for
    every backend): auto-complete's default max_batch_size and ONNX Runtime's thread pools.
    A setting given twice keeps its last value."""
    values: dict[str, int | bool] = {}
    for entry in backend_configs:
        backend, _, setting = entry.partition(",") if "," in entry else ("onnxruntime", "", entry)
        key, _, value = setting.partition("=")
        if backend != "onnxruntime" or not key or not value:
            raise SettingsError(f"--backend-config '{entry}': expected onnxruntime,<key>=<value>")
        if key not in _BACKEND_SETTINGS:
            supported = ", ".join(_BACKEND_SETTINGS)
            raise SettingsError(f"--backend-config '{entry}': unknown onnxruntime setting '{key}' (supported: {supported})")
        try:
            values[key] = int(value) if key in _INT_BACKEND_SETTINGS else parse_bool(value)
        except ValueError:
            raise SettingsError(f"--backend-config '{entry}': '{value}' is not an integer") from None
        except argparse.ArgumentTypeError as exc:
            raise SettingsError(f"--backend-config '{entry}': {exc}") from None
    threads = OrtThreadSettings(
        global_pool=bool(values.get("enable-global-threadpool", False)),
        intra_op_threads=int(values.get("intra_op_thread_count", 0)),
        inter_op_threads=int(values.get("inter_op_thread_count", 0)),
    )
    return int(values.get("default-max-batch-size", 4)), threads


def _distinct_paths(paths: Sequence[str]) -> tuple[Path, ...]:
    """Each repository once: the same directory given twice (even spelled differently) is one
    repository, as in Triton, not two that hold the same models."""
    seen: dict[Path, Path] = {}
    for text in paths:
        path = Path(text)
        seen.setdefault(path.resolve(), path)
    return tuple(seen.values())


def _histogram_latencies(metrics_configs: list[str]) -> bool:
    enabled = True
    for entry in metrics_configs:
        key, _, value = entry.partition("=")
        if key != "histogram_latencies":
            raise SettingsError(f"--metrics-config '{entry}': unknown setting '{key}' (supported: histogram_latencies)")
        try:
            enabled = parse_bool(value)
        except argparse.ArgumentTypeError as exc:
            raise SettingsError(f"--metrics-config '{entry}': {exc}") from None
    return enabled


def _cache_settings(cache_configs: list[str]) -> tuple[int, float]:
    """(size bytes, ttl seconds) from Triton's ``<cache>,<setting>=<value>`` entries. From the
    environment they arrive split at commas ("local", "size=N"): a bare name names the cache of
    the settings after it."""
    size, ttl, cache = 0, 0.0, ""
    for entry in cache_configs:
        if "=" not in entry:
            cache = entry
            continue
        name, _, setting = entry.rpartition(",")
        cache = name or cache
        key, _, value = setting.partition("=")
        if not cache:
            raise SettingsError(f"No cache specified. --cache-config option format is <cache name>,<setting>=<value>. Got {entry}")
        if cache != "local":
            raise SettingsError(f"--cache-config '{entry}': ortserve has only the 'local' cache")
        if key not in ("size", "ttl_secs"):
            raise SettingsError(f"--cache-config '{entry}': unknown local cache setting '{key}' (supported: size, ttl_secs)")
        try:
            if key == "size":
                size = int(value)
            else:
                ttl = float(value)
        except ValueError:
            raise SettingsError(f"--cache-config '{entry}': '{value}' is not a number") from None
    if cache_configs and size <= 0:
        raise SettingsError("--cache-config local needs size=<bytes> > 0")
    return size, ttl


def parse_settings(argv: Sequence[str], environ: Mapping[str, str] | None = None) -> Settings:
    """Raises SystemExit(2) with a one-line message for bad flags or settings."""
    parser = build_parser()
    _apply_environment(parser, os.environ if environ is None else environ)
    args = parser.parse_args(argv)
    try:
        cache_size, cache_ttl = _cache_settings(args.cache_config or [])
        default_max_batch_size, ort_threads = _backend_config(args.backend_config or [])
        return Settings(
            model_repositories=_distinct_paths(args.model_repository or ()),
            host=args.host,
            http_port=args.http_port,
            grpc_port=args.grpc_port,
            metrics_port=args.metrics_port,
            allow_http=args.allow_http,
            allow_grpc=args.allow_grpc,
            allow_metrics=args.allow_metrics,
            strict_readiness=args.strict_readiness,
            exit_on_error=args.exit_on_error,
            exit_timeout_secs=args.exit_timeout_secs,
            version_drain_timeout_secs=args.version_drain_timeout_secs,
            log_verbose=args.log_verbose,
            log_format=LogFormat(args.log_format),
            model_control_mode=ModelControlMode(args.model_control_mode),
            repository_poll_secs=args.repository_poll_secs,
            load_models=tuple(args.load_model or ()),
            model_load_thread_count=args.model_load_thread_count,
            default_max_batch_size=default_max_batch_size,
            ort_threads=ort_threads,
            server_id=args.id,
            allow_cpu_metrics=args.allow_cpu_metrics,
            allow_gpu_metrics=args.allow_gpu_metrics,
            metrics_interval_ms=args.metrics_interval_ms,
            histogram_latencies=_histogram_latencies(args.metrics_config or []),
            model_name=args.model_name,
            grpc_max_connection_age_ms=args.grpc_max_connection_age_ms,
            grpc_max_connection_age_grace_ms=args.grpc_max_connection_age_grace_ms,
            http_max_input_bytes=args.http_max_input_bytes,
            grpc_max_receive_bytes=args.grpc_max_receive_bytes,
            grpc_max_connections=args.grpc_max_connections,
            http_max_connections=args.http_max_connections,
            grpc_handshake_timeout_secs=args.grpc_handshake_timeout_secs,
            grpc_max_connection_idle_secs=args.grpc_max_connection_idle_secs,
            http_idle_timeout_secs=args.http_idle_timeout_secs,
            http_body_timeout_secs=args.http_body_timeout_secs,
            max_inflight_bytes=args.max_inflight_bytes,
            cache_size_bytes=cache_size,
            cache_ttl_secs=cache_ttl,
            allow_client_shm=args.allow_client_shm,
            max_shm_regions=args.max_shm_regions,
            max_shm_bytes=args.max_shm_bytes,
            trace=parse_trace_options(
                args.trace_config or [],
                DeprecatedTraceFlags(args.trace_file, args.trace_level or [], args.trace_rate, args.trace_count, args.trace_log_frequency),
            ),
            sample_capture_dir=args.sample_capture_dir,
            sample_capture_count=args.sample_capture_count,
            sample_capture_bytes=args.sample_capture_bytes,
            security=security_settings(args),
            workers=_workers(args.workers),
        )
    except SettingsError as exc:
        parser.error(str(exc))


def _disable_onnxruntime_telemetry() -> None:
    """A server should not phone home; recent ORT builds also write a device id under $HOME."""
    import onnxruntime

    onnxruntime.disable_telemetry_events()


def _encrypt_model(argv: Sequence[str]) -> int:
    from server.security.encrypt_cli import main as encrypt_model_main

    return encrypt_model_main(argv)


def _optimize(argv: Sequence[str]) -> int:
    from server.optimize.command import main as optimize_main

    return optimize_main(argv)


# `ortserve <subcommand> ...`: anything else is the server's own flags.
SUBCOMMANDS: dict[str, Callable[[Sequence[str]], int]] = {"encrypt-model": _encrypt_model, "optimize": _optimize}


def main(argv: Sequence[str] | None = None) -> int:
    arguments = sys.argv[1:] if argv is None else list(argv)
    if arguments and arguments[0] in SUBCOMMANDS:  # a command of its own, in this process, never in a server
        return SUBCOMMANDS[arguments[0]](arguments[1:])
    # Imported here so `ortserve --help` and flag errors stay fast.
    import uvloop

    from server.app import StartupError, serve
    from server.errors import ServerError
    from server.observability.logging import configure_logging
    from server.workers.engine import serve_workers

    settings = parse_settings(arguments)
    configure_logging(settings.log_format, settings.log_verbose)
    _disable_onnxruntime_telemetry()
    try:
        uvloop.run(serve_workers(settings) if settings.workers > 1 else serve(settings))
    except StartupError as exc:
        print(f"ortserve: error: {exc}", file=sys.stderr)
        return 1
    except ServerError as exc:  # e.g. ALREADY_EXISTS: one model name in two repositories
        print(f"ortserve: error: {exc.message}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130
    return 0
