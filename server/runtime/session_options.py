"""Map a model config's ``parameters`` and ``optimization`` to ORT session options.

Follows the keys of Triton's ONNX Runtime backend so existing configs keep their meaning.
"""

from __future__ import annotations

import logging

import onnxruntime as ort

from server.errors import ServerError
from server.proto import model_config_pb2 as mc
from server.runtime.threads import ThreadPlan
from server.security.model_encryption import KEY_PARAMETERS

log = logging.getLogger(__name__)

# optimization.graph.level → ORT level (Triton's ORT backend: -1 basic, 1 extended, 2 disabled).
_GRAPH_LEVELS = {
    -1: ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    0: ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
    1: ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    2: ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
}

_KNOWN_KEYS = frozenset(
    {
        "intra_op_thread_count",
        "inter_op_thread_count",
        "execution_mode",
        "enable_mem_arena",
        "enable_mem_pattern",
        "memory.enable_memory_arena_shrinkage",
        "sample_capture_count",  # server/service/sample_capture.py, not ONNX Runtime's, but known
    }
)


def parameter_values(config: mc.ModelConfig) -> dict[str, str]:
    return {key: value.string_value for key, value in config.parameters.items()}


THREAD_COUNT_KEYS = ("intra_op_thread_count", "inter_op_thread_count")
_SPINNING_KEY = "session.intra_op.allow_spinning"


def sets_thread_counts(config: mc.ModelConfig) -> bool:
    """Whether the config asks for its own ONNX Runtime thread counts (Triton's parameters)."""
    return any(key in config.parameters for key in THREAD_COUNT_KEYS)


def build_session_options(config: mc.ModelConfig, threads: ThreadPlan) -> ort.SessionOptions:
    """Session options for one instance. Raises INVALID_ARG for a malformed parameter value.

    Threads follow ``threads`` (runtime/threads.py) unless the config sets its own counts. Keys
    starting with ``session.`` are passed to ORT as session config entries, so any ORT session
    setting can be reached from config.pbtxt (``session.intra_op.allow_spinning`` among them).
    """
    params = parameter_values(config)
    options = ort.SessionOptions()
    intra = _int_param(config.name, params, "intra_op_thread_count", threads.intra_op_threads)
    inter = _int_param(config.name, params, "inter_op_thread_count", threads.inter_op_threads)
    if threads.global_pool:
        # ORT's Python binding refuses a session with its own threads once the global pools exist.
        options.use_per_session_threads = False
        if sets_thread_counts(config):
            log.warning("model '%s': its thread counts are ignored: every session runs on the global thread pool", config.name)
    else:
        options.intra_op_num_threads, options.inter_op_num_threads = intra, inter
        if _SPINNING_KEY not in params:
            options.add_session_config_entry(_SPINNING_KEY, "1" if threads.spinning else "0")
    parallel = _int_param(config.name, params, "execution_mode", 0) == 1
    options.execution_mode = ort.ExecutionMode.ORT_PARALLEL if parallel else ort.ExecutionMode.ORT_SEQUENTIAL
    options.enable_cpu_mem_arena = _bool_param(config.name, params, "enable_mem_arena", True)
    options.enable_mem_pattern = _bool_param(config.name, params, "enable_mem_pattern", True)
    level = config.optimization.graph.level
    if level not in _GRAPH_LEVELS:
        raise ServerError.invalid_arg(f"model '{config.name}': optimization.graph.level must be one of -1, 0, 1, 2, got {level}")
    options.graph_optimization_level = _GRAPH_LEVELS[level]
    for key, value in params.items():
        if key.startswith("session."):
            options.add_session_config_entry(key, value)
        elif key not in _KNOWN_KEYS and key not in KEY_PARAMETERS and not key.startswith("ortserve."):
            # The loader reads KEY_PARAMETERS (encrypted models); ortserve.* are read elsewhere.
            log.info("model '%s': parameter '%s' is not an ONNX Runtime setting; ignored", config.name, key)
    return options


def _int_param(model: str, params: dict[str, str], key: str, default: int) -> int:
    if key not in params:
        return default
    try:
        return int(params[key])
    except ValueError:
        raise ServerError.invalid_arg(f"model '{model}': parameter '{key}' must be an integer, got '{params[key]}'") from None


def _bool_param(model: str, params: dict[str, str], key: str, default: bool) -> bool:
    if key not in params:
        return default
    value = params[key].strip().lower()
    if value in ("1", "true", "yes", "on"):
        return True
    if value in ("0", "false", "no", "off"):
        return False
    raise ServerError.invalid_arg(f"model '{model}': parameter '{key}' must be a boolean, got '{params[key]}'")
