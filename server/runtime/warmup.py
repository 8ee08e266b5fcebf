"""``model_warmup`` from config.pbtxt: run samples on every instance before a version is READY.

Triton's semantics: each ModelWarmup entry is one request of ``batch_size`` rows (0 for models
without batching), with each input filled by zero_data, random_data or input_data_file (raw
bytes under ``<model>/warmup/``), run ``count`` times (at least once) on each instance.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass
from math import prod
from pathlib import Path

import numpy as np

from server.datatypes import SUPPORTED_DATATYPES, config_to_wire, decode_raw, numpy_dtype
from server.errors import ServerError
from server.model_config.batch_inputs import batch_input_array, batch_input_specs
from server.model_config.spec import ModelSpec
from server.proto import model_config_pb2 as mc
from server.repository.confined import inside_model_dir
from server.runtime.instance import ModelInstance

log = logging.getLogger(__name__)
WARMUP_DIR = "warmup"


@dataclass(frozen=True, slots=True)
class WarmupLimits:
    """Bounds on a warmup that a load request supplied (a repository's own config is trusted)."""

    # Bytes of one sample's inputs (elements x item size; 8 bytes per BYTES element), checked
    # before anything is allocated.
    max_sample_bytes: int
    # Executions of one sample on one instance, and executions in all.
    max_count: int
    max_executions: int


NETWORK_WARMUP_LIMITS = WarmupLimits(max_sample_bytes=64 * 2**20, max_count=16, max_executions=64)


@dataclass(frozen=True, slots=True)
class WarmupReport:
    executions: int
    seconds: float


def warmup_feeds(config: mc.ModelConfig, spec: ModelSpec, sample: mc.ModelWarmup, model_dir: Path) -> dict[str, np.ndarray]:
    """The ORT feeds of one warmup sample. Raises INVALID_ARG naming the sample and input."""
    feeds: dict[str, np.ndarray] = {}
    for name, tensor in spec.inputs.items():
        if name not in sample.inputs:
            if tensor.optional:
                continue
            raise _error(config, sample, f"input '{name}' is missing")
        feeds[name] = _sample_input(config, spec, sample, name, sample.inputs[name], model_dir)
    unknown = set(sample.inputs) - set(spec.inputs)
    if unknown:
        raise _error(config, sample, f"unknown input(s) {sorted(unknown)}")
    # A warmup sample is one request: its batch inputs are computed as for a batch of one.
    for batch_input in batch_input_specs(config):
        source = sample.inputs[batch_input.source]
        shape = ((max(sample.batch_size, 1),) if spec.batching else ()) + tuple(source.dims)
        feeds.update(dict.fromkeys(batch_input.targets, batch_input_array(batch_input, [shape])))
    return feeds


def _sample_input(
    config: mc.ModelConfig, spec: ModelSpec, sample: mc.ModelWarmup, name: str, given: mc.ModelWarmup.Input, model_dir: Path
) -> np.ndarray:
    tensor = spec.inputs[name]
    wire = config_to_wire(mc.DataType.Name(given.data_type))
    if wire != tensor.datatype:
        raise _error(config, sample, f"input '{name}' has data_type {wire} but the model expects {tensor.datatype}")
    dims = tuple(given.dims)
    shape = ((max(sample.batch_size, 1),) if spec.batching else ()) + dims
    if any(d < 0 for d in shape):
        raise _error(config, sample, f"input '{name}' needs fixed dims, got {list(dims)}")
    source = given.WhichOneof("input_data_type")
    if source == "random_data":
        array = _random(wire, shape)
    elif source == "input_data_file":
        path = inside_model_dir(
            model_dir / WARMUP_DIR, given.input_data_file, f"warmup sample '{sample.name}' input_data_file", config.name
        )
        if not path.is_file():
            raise _error(config, sample, f"input_data_file '{given.input_data_file}' not found in the model's {WARMUP_DIR}/ directory")
        try:
            array = decode_raw(path.read_bytes(), wire, shape, name, config.name)
        except ServerError as exc:  # say which sample and file; decode_raw speaks of requests
            raise _error(config, sample, f"input_data_file '{given.input_data_file}': {exc.message}") from None
    else:  # zero_data is the default
        array = np.full(shape, "", dtype=object) if wire == "BYTES" else np.zeros(shape, dtype=numpy_dtype(wire))
    if tensor.ragged:
        return array.reshape(-1)
    if tensor.reshape is not None:
        array = array.reshape(shape[:1] + tensor.reshape if spec.batching else tensor.reshape)
    return array


def check_warmup_limits(config: mc.ModelConfig, spec: ModelSpec, instance_count: int, limits: WarmupLimits) -> None:
    """Refuse (INVALID_ARG) a warmup past ``limits`` before any of it is allocated or run."""
    network = "the limit for a config sent over the network"
    executions = 0
    for sample in config.model_warmup:
        count = max(sample.count, 1)
        if count > limits.max_count:
            raise _error(config, sample, f"count {sample.count} is above {limits.max_count}, {network}")
        executions += count * instance_count
        rows = max(sample.batch_size, 1) if spec.batching else 1
        size = sum(rows * prod(max(d, 0) for d in given.dims) * _item_size(given.data_type) for given in sample.inputs.values())
        if size > limits.max_sample_bytes:
            raise _error(config, sample, f"its inputs take {size} bytes, above {limits.max_sample_bytes}, {network}")
    if executions > limits.max_executions:
        raise ServerError.invalid_arg(
            f"model '{config.name}': warmup would run {executions} executions, above {limits.max_executions}, {network}"
        )


def _item_size(data_type: int) -> int:
    """Bytes per element, counting a BYTES element as 8 (its smallest in-memory cost)."""
    wire = config_to_wire(mc.DataType.Name(data_type))
    return numpy_dtype(wire).itemsize if wire in SUPPORTED_DATATYPES and wire != "BYTES" else 8


def _random(wire: str, shape: tuple[int, ...]) -> np.ndarray:
    rng = np.random.default_rng(0)
    if wire == "BYTES":
        array = np.empty(shape, dtype=object)
        array.flat[:] = [str(v) for v in rng.integers(0, 1_000_000, size=int(np.prod(shape)))]
        return array
    dtype = numpy_dtype(wire)
    if dtype.kind == "b":
        return rng.integers(0, 2, size=shape).astype(bool)
    if dtype.kind in "iu":
        return rng.integers(0, 100, size=shape).astype(dtype)
    return rng.standard_normal(shape).astype(dtype)


def _error(config: mc.ModelConfig, sample: mc.ModelWarmup, detail: str) -> ServerError:
    return ServerError.invalid_arg(f"model '{config.name}': warmup sample '{sample.name}': {detail}")


def run_warmup(
    config: mc.ModelConfig, spec: ModelSpec, instances: list[ModelInstance], model_dir: Path, limits: WarmupLimits | None = None
) -> WarmupReport:
    """Blocking (a load thread). Raises INVALID_ARG for a bad sample or one past ``limits``, INTERNAL if ORT fails."""
    if limits is not None:
        check_warmup_limits(config, spec, len(instances), limits)
    started = time.monotonic()
    executions = 0
    outputs = [output.name for output in config.output]
    for sample in config.model_warmup:
        feeds = warmup_feeds(config, spec, sample, model_dir)
        for instance in instances:
            for _ in range(max(sample.count, 1)):
                try:
                    instance.run(feeds, outputs)
                except Exception as exc:  # ORT's own failure: the version must not become READY
                    raise ServerError.internal(f"model '{config.name}': warmup sample '{sample.name}' failed: {exc}") from None
                executions += 1
    return WarmupReport(executions, time.monotonic() - started)
