"""Turn one version directory into a completed config and ready ORT sessions (blocking work).

Runs on a model-load thread, never on the event loop. Everything that can be wrong with a model
(config, file, graph, providers) surfaces here as a ServerError whose message becomes the
version's UNAVAILABLE reason.
"""

from __future__ import annotations

import logging
import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import onnxruntime as ort

from server.errors import ServerError
from server.model_config import autocomplete
from server.model_config.batching_validation import validate_batching
from server.model_config.ensemble_config import refuse_ensemble_scheduling
from server.model_config.io_validation import validate_io_config
from server.model_config.labels import read_labels
from server.model_config.sequence_config import complete_sequence_defaults
from server.model_config.sequence_validation import validate_sequence_config, validate_sequence_graph
from server.model_config.spec import ModelSpec, spec_from_config
from server.model_config.validation import validate_config
from server.proto import model_config_pb2 as mc
from server.repository.confined import inside_model_dir
from server.runtime.devices import DeviceChoice, device_choices
from server.runtime.gpus import CUDA_PROVIDER, usable_gpu_count
from server.runtime.initial_state import read_initial_states
from server.runtime.instance import ModelInstance, graph_signature
from server.runtime.session_options import build_session_options
from server.runtime.threads import ThreadPlan
from server.runtime.warmup import NETWORK_WARMUP_LIMITS, run_warmup
from server.security.model_encryption import ENCRYPTED_SUFFIX, decrypt_model
from server.security.settings import ModelKeySource

log = logging.getLogger(__name__)


@dataclass(frozen=True, slots=True)
class LoadOptions:
    default_max_batch_size: int
    # ONNX Runtime threads of a session whose config does not set them (see runtime/threads.py).
    threads: ThreadPlan
    # The config came with a load request (not from the repository): its warmup is bounded.
    network_config: bool = False
    # The key of encrypted model files whose config names none (--model-key-file / --model-key-env).
    model_key: ModelKeySource = field(default_factory=ModelKeySource)


@dataclass(slots=True)
class LoadedVersion:
    config: mc.ModelConfig
    spec: ModelSpec
    instances: list[ModelInstance]
    # Each implicit state's first value (sequence_batching state), by state input name.
    initial_states: dict[str, np.ndarray] = field(default_factory=dict)


def model_file(version_dir: Path, config: mc.ModelConfig) -> Path:
    """The ONNX file: ``<version>/<default_model_filename>``, or the file of that name inside it
    when it is a directory holding external data (Triton's layout).

    Raises INVALID_ARG when ``default_model_filename`` would leave the version directory (an
    absolute path, "..", a symlink out), UNAVAILABLE with Triton's message when the file is
    missing; the path is shown relative to the model directory.
    """
    path = inside_model_dir(version_dir, config.default_model_filename, "default_model_filename", config.name)
    if path.is_dir():
        path = inside_model_dir(path, config.default_model_filename, "default_model_filename", config.name)
    if not path.is_file():
        raise ServerError.unavailable(f"unable to find '{shown_path(path, version_dir.parent)}' for model instance '{config.name}'")
    return path


def load_version(
    file_config: mc.ModelConfig, model_name: str, version: int, version_dir: Path, model_dir: Path, options: LoadOptions
) -> LoadedVersion:
    """Complete the config from the graph, validate it, open one session per instance, warm up.

    Raises ServerError; sessions opened before a failure are released.
    """
    config = autocomplete.complete_core_fields(file_config, model_name)
    refuse_ensemble_scheduling(config)
    validate_sequence_config(config)
    path, plaintext = _model_source(version_dir, model_dir, config, options)
    probe = _open_session(path, model_dir, config, DeviceChoice.cpu(), options, plaintext)
    config = autocomplete.complete_from_graph(config, graph_signature(probe), options.default_max_batch_size)
    autocomplete.complete_instance_groups(config, gpu_count=usable_gpu_count())
    autocomplete.complete_batching_defaults(config)
    complete_sequence_defaults(config)
    autocomplete.complete_optimization_defaults(config)
    validate_io_config(config)
    graph = graph_signature(probe)
    validate_config(config, graph)
    validate_batching(config)
    validate_sequence_graph(config, graph)
    initial_states = read_initial_states(config, model_dir)
    spec = spec_from_config(config, graph, read_output_labels(config, model_dir))
    devices = device_choices(config)
    instances: list[ModelInstance] = []
    try:
        for index, device in enumerate(devices):
            # The CPU session opened for auto-complete serves as the first plain CPU instance.
            reuse = index == 0 and device == DeviceChoice.cpu()
            session = probe if reuse else _open_session(path, model_dir, config, device, options, plaintext)
            instances.append(ModelInstance(f"{model_name}_v{version}_{index}", session, device.label, use_io_binding=not device.is_cpu))
        warmup = run_warmup(config, spec, instances, model_dir, NETWORK_WARMUP_LIMITS if options.network_config else None)
    except BaseException:
        for instance in instances:
            instance.close()
        raise
    if warmup.executions:
        log.info("model '%s' version %d: warmup ran %d execution(s) in %.3fs", model_name, version, warmup.executions, warmup.seconds)
    return LoadedVersion(config=config, spec=spec, instances=instances, initial_states=initial_states)


def _model_source(version_dir: Path, model_dir: Path, config: mc.ModelConfig, options: LoadOptions) -> tuple[Path, bytes | None]:
    """The model file, and its decrypted bytes when only ``<default_model_filename>.enc`` is there
    (security/model_encryption.py: decrypted in memory, never written)."""
    plain = inside_model_dir(version_dir, config.default_model_filename, "default_model_filename", config.name)
    encrypted = inside_model_dir(version_dir, config.default_model_filename + ENCRYPTED_SUFFIX, "default_model_filename", config.name)
    if plain.exists() or not encrypted.is_file():
        return model_file(version_dir, config), None
    return encrypted, decrypt_model(encrypted, shown_path(encrypted, model_dir), config, options.model_key, options.network_config)


def read_output_labels(config: mc.ModelConfig, model_dir: Path) -> dict[str, tuple[str, ...]]:
    """The label file of every output that names one (classification extension).

    Blocking; raises INVALID_ARG for a file outside the model directory or one that cannot be read.
    """
    labels: dict[str, tuple[str, ...]] = {}
    for output in config.output:
        if not output.label_filename:
            continue
        path = inside_model_dir(model_dir, output.label_filename, f"label_filename of output '{output.name}'", config.name)
        try:
            labels[output.name] = read_labels(path.read_text(encoding="utf-8", errors="replace"))
        except OSError as exc:
            raise ServerError.invalid_arg(
                f"model '{config.name}': failed to open text file for read {output.label_filename}: {exc.strerror}"
            ) from None
    return labels


def _open_session(
    path: Path, model_dir: Path, config: mc.ModelConfig, device: DeviceChoice, options: LoadOptions, plaintext: bytes | None = None
) -> ort.InferenceSession:
    session_options = build_session_options(config, options.threads)
    # A GPU provider that fails to start must fail the load: by default ORT's Python layer would
    # retry on CPU and the instance would claim a GPU it does not use.
    fallback = {} if device.is_cpu else {"enable_fallback": 0}
    try:
        model = str(path) if plaintext is None else plaintext  # an encrypted model's bytes, decrypted in memory
        session = ort.InferenceSession(model, sess_options=session_options, providers=device.providers, **fallback)
    except Exception as exc:  # ORT raises its own exception types for bad files
        # A file ONNX Runtime cannot open is the model's fault, not the server's: INVALID_ARG.
        # Clients see the file relative to the model directory, not the server's filesystem.
        raise ServerError.invalid_arg(_without_host_paths(onnxruntime_error_text(str(exc)), path, model_dir)) from None
    if not device.is_cpu and CUDA_PROVIDER not in session.get_providers():
        # ORT drops a provider whose library does not load with only a log line.
        raise ServerError.unavailable(
            f"model '{config.name}': ONNX Runtime did not start {CUDA_PROVIDER} on {device.label} (the session got "
            f"{session.get_providers()}); its log lines say why"
        )
    return session


def _without_host_paths(text: str, path: Path, model_dir: Path) -> str:
    """ORT names the model file and, for external data it refuses, the model's directory."""
    text = text.replace(str(path), shown_path(path, model_dir))
    directories = {str(path.parent.resolve()), str(path.parent), str(model_dir.resolve()), str(model_dir)}
    for directory in sorted(directories, key=len, reverse=True):  # the version directory before its parent
        text = text.replace(directory, "<model directory>")
    return text


def shown_path(path: Path, model_dir: Path) -> str:
    """How an error names a model file: relative to its model directory, never the host's layout."""
    return str(path.relative_to(model_dir)) if path.is_relative_to(model_dir) else path.name


_ORT_ERROR = re.compile(r"^\[ONNXRuntimeError\] : (\d+) : \w+ : (.*)$", re.DOTALL)


def onnxruntime_error_text(message: str) -> str:
    """Triton's wording of an ONNX Runtime error, "onnx runtime error <code>: <message>", from the
    Python binding's "[ONNXRuntimeError] : <code> : <NAME> : <message>"."""
    match = _ORT_ERROR.match(message)
    return f"onnx runtime error {match[1]}: {match[2]}" if match else f"onnx runtime error: {message}"
