"""Turn one version directory into a completed config and ready ORT sessions (blocking work).

Runs on a model-load thread, never on the event loop. Everything that can be wrong with a model
(config, file, graph, providers) surfaces here as a ServerError whose message becomes the
version's UNAVAILABLE reason.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path

import onnxruntime as ort

from server.errors import ServerError
from server.proto import model_config_pb2 as mc
from server.repository import autocomplete
from server.repository.batching_validation import validate_batching
from server.repository.validation import validate_config
from server.runtime.devices import DeviceChoice, device_choices
from server.runtime.gpus import CUDA_PROVIDER, usable_gpu_count
from server.runtime.instance import ModelInstance, graph_signature
from server.runtime.session_options import build_session_options
from server.runtime.warmup import WarmupReport, run_warmup

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    default_max_batch_size: int
    # Intra-op threads per CPU instance when the config does not say (see runtime/threads.py).
    default_intra_op_threads: int


@dataclass(slots=True)
class LoadedVersion:
    config: mc.ModelConfig
    instances: list[ModelInstance]
    warmup: WarmupReport


def model_file(version_dir: Path, config: mc.ModelConfig) -> Path:
    """The ONNX file: ``<version>/<default_model_filename>``, or the file of that name inside it
    when it is a directory holding external data (Triton's layout)."""
    path = version_dir / config.default_model_filename
    if path.is_dir():
        path = path / config.default_model_filename
    if not path.is_file():
        raise ServerError.invalid_arg(f"model file not found: {path}")
    return path


def load_version(
    file_config: mc.ModelConfig, model_name: str, version: int, version_dir: Path, model_dir: Path, options: LoadOptions
) -> LoadedVersion:
    """Complete the config from the graph, validate it, open one session per instance, warm up.

    Raises ServerError; sessions opened before a failure are released.
    """
    config = autocomplete.complete_core_fields(file_config, model_name)
    path = model_file(version_dir, config)
    probe = _open_session(path, config, DeviceChoice.cpu(), options)
    config = autocomplete.complete_from_graph(config, graph_signature(probe), options.default_max_batch_size)
    autocomplete.complete_instance_groups(config, gpu_count=usable_gpu_count())
    autocomplete.complete_batching_defaults(config)
    validate_config(config, graph_signature(probe))
    validate_batching(config)
    devices = device_choices(config)
    instances: list[ModelInstance] = []
    try:
        for index, device in enumerate(devices):
            # The CPU session opened for auto-complete serves as the first plain CPU instance.
            reuse = index == 0 and device == DeviceChoice.cpu()
            session = probe if reuse else _open_session(path, config, device, options)
            instances.append(ModelInstance(f"{model_name}_v{version}_{index}", session, device.label, use_io_binding=not device.is_cpu))
        warmup = run_warmup(config, instances, model_dir)
    except BaseException:
        for instance in instances:
            instance.close()
        raise
    if warmup.executions:
        log.info("model '%s' version %d: warmup ran %d execution(s) in %.3fs", model_name, version, warmup.executions, warmup.seconds)
    return LoadedVersion(config=config, instances=instances, warmup=warmup)


def _open_session(path: Path, config: mc.ModelConfig, device: DeviceChoice, options: LoadOptions) -> ort.InferenceSession:
    session_options = build_session_options(config, options.default_intra_op_threads)
    # A GPU provider that fails to start must fail the load: by default ORT's Python layer would
    # retry on CPU and the instance would claim a GPU it does not use.
    fallback = {} if device.is_cpu else {"enable_fallback": 0}
    try:
        session = ort.InferenceSession(str(path), sess_options=session_options, providers=device.providers, **fallback)
    except Exception as exc:  # ORT raises its own exception types for bad files
        raise ServerError.invalid_arg(f"failed to load '{path}' with ONNX Runtime: {exc}") from None
    if not device.is_cpu and CUDA_PROVIDER not in session.get_providers():
        # ORT drops a provider whose library does not load with only a log line.
        raise ServerError.invalid_arg(
            f"model '{config.name}': ONNX Runtime did not start {CUDA_PROVIDER} on {device.label} (the session got "
            f"{session.get_providers()}); its log lines say why"
        )
    return session
