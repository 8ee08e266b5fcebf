"""Fill a model config from its ONNX graph, following Triton's core and ORT-backend rules.

Pure: takes the (possibly empty) config from config.pbtxt and the graph signature, returns the
completed config that ModelConfig answers with. See the reference's section 3.
"""

from __future__ import annotations

import logging
from typing import cast

from server.datatypes import WIRE_DATATYPES, wire_to_config
from server.errors import ServerError
from server.model_config.sequence_config import sequence_tensor_names
from server.model_config.signature import GraphSignature, GraphTensor
from server.proto import model_config_pb2 as mc

log = logging.getLogger(__name__)

ONNX_PLATFORM = "onnxruntime_onnx"
ONNX_BACKEND = "onnxruntime"
DEFAULT_MODEL_FILENAME = "model.onnx"
# Triton's `--backend-config=onnxruntime,default-max-batch-size` default.
DEFAULT_MAX_BATCH_SIZE = 4


def complete_core_fields(
    config: mc.ModelConfig,
    model_name: str,
    platform: str = ONNX_PLATFORM,
    backend: str = ONNX_BACKEND,
    default_filename: str = DEFAULT_MODEL_FILENAME,
) -> mc.ModelConfig:
    """Fields Triton's core fills before the backend runs: name, platform/backend, policy, filename.

    ``platform``, ``backend`` and ``default_filename`` are those of the servable kind chosen for
    the config (lifecycle/kinds.py decides which kinds exist). Raises INVALID_ARG when the config
    names another model, or a platform or backend other than the kind's.
    """
    completed = mc.ModelConfig()
    completed.CopyFrom(config)
    if completed.name and completed.name != model_name:
        raise ServerError.invalid_arg(f"model config name '{completed.name}' does not match the model directory name '{model_name}'")
    completed.name = model_name
    if completed.platform not in ("", platform) or completed.backend not in ("", backend):
        raise ServerError.invalid_arg(
            f"model '{model_name}' has platform '{completed.platform}' / backend '{completed.backend}'; "
            f"this kind of model is platform '{platform}', backend '{backend}'"
        )
    completed.platform, completed.backend = platform, backend
    if not completed.default_model_filename:
        completed.default_model_filename = default_filename
    if not completed.HasField("version_policy"):
        completed.version_policy.latest.num_versions = 1
    return completed


def complete_from_graph(
    config: mc.ModelConfig, graph: GraphSignature, default_max_batch_size: int = DEFAULT_MAX_BATCH_SIZE
) -> mc.ModelConfig:
    """The ORT backend's auto-complete; it only runs when inputs or outputs are missing.

    Raises INVALID_ARG when the config asks for batching that the graph cannot do.
    """
    completed = mc.ModelConfig()
    completed.CopyFrom(config)
    if completed.input and completed.output:
        return completed
    if graph.supports_batching():
        if completed.max_batch_size == 0:
            completed.max_batch_size = default_max_batch_size
            log.warning(
                "model '%s': max_batch_size not set, using the default %d (every input and output has a dynamic first dim)",
                completed.name,
                default_max_batch_size,
            )
    elif completed.max_batch_size != 0:
        raise ServerError.invalid_arg(
            f"autofill failed for model '{completed.name}': model does not support batching while non-zero max_batch_size is specified"
        )
    if completed.max_batch_size > 1 and completed.WhichOneof("scheduling_choice") is None:
        completed.dynamic_batching.SetInParent()
    batching = completed.max_batch_size > 0
    # Control and state tensors are the sequence batcher's, never the client's.
    sequence_inputs, sequence_outputs = sequence_tensor_names(completed)
    known_inputs = {t.name for t in completed.input} | sequence_inputs
    for tensor in graph.inputs:
        if tensor.name not in known_inputs:
            _fill_tensor(completed.input.add(), tensor, batching)
    known_outputs = {t.name for t in completed.output} | sequence_outputs
    for tensor in graph.outputs:
        if tensor.name not in known_outputs:
            _fill_tensor(completed.output.add(), tensor, batching)
    return completed


def _fill_tensor(entry: mc.ModelInput | mc.ModelOutput, tensor: GraphTensor, batching: bool) -> None:
    if tensor.datatype not in WIRE_DATATYPES:
        raise ServerError.invalid_arg(f"tensor '{tensor.name}' has ONNX type '{tensor.datatype}', which has no Triton datatype")
    entry.name = tensor.name
    entry.data_type = cast(mc.DataType, mc.DataType.Value(wire_to_config(tensor.datatype)))
    dims = tensor.shape[1:] if batching else tensor.shape
    if dims:
        entry.dims.extend(dims)
        return
    # A rank-1 batched tensor or a scalar: clients send [batch, 1] / [1], the model sees [batch]
    # / []. Triton's backend adds the empty reshape only when batching (its core refuses an empty
    # reshape without batching); a scalar graph tensor is fed as a scalar anyway (see spec.py).
    entry.dims.append(1)
    if batching:
        entry.reshape.SetInParent()


def complete_instance_groups(config: mc.ModelConfig, gpu_count: int) -> None:
    """Triton's NormalizeInstanceGroup, in place: one group by default; KIND_AUTO resolved.

    CPU groups default to count 1 (Triton uses 2 for ORT; one instance with all intra-op threads
    measured faster here, see runtime/threads.py). GPU groups default to one instance per GPU.
    """
    if not config.instance_group:
        config.instance_group.add(name=config.name)  # Triton names the group it adds after the model
    for index, group in enumerate(config.instance_group):
        if not group.name:
            group.name = f"{config.name}_{index}"
        if group.kind == mc.ModelInstanceGroup.KIND_AUTO:
            group.kind = mc.ModelInstanceGroup.KIND_GPU if gpu_count > 0 else mc.ModelInstanceGroup.KIND_CPU
        if group.count < 1:
            group.count = 1
        if group.kind == mc.ModelInstanceGroup.KIND_GPU and not group.gpus:
            group.gpus.extend(range(gpu_count))


def complete_batching_defaults(config: mc.ModelConfig) -> None:
    """Triton fills preferred_batch_size = [max_batch_size] when dynamic batching has none."""
    batching = config.HasField("dynamic_batching") and config.max_batch_size > 0
    if batching and not config.dynamic_batching.preferred_batch_size:
        config.dynamic_batching.preferred_batch_size.append(config.max_batch_size)


def complete_optimization_defaults(config: mc.ModelConfig) -> None:
    """Triton's core turns pinned host memory on for inputs and outputs unless the config says.

    ortserve reports them as Triton does (clients and tools read the completed config); ONNX
    Runtime on CPU has no pinned staging, so they change nothing there.
    """
    optimization = config.optimization
    if not optimization.HasField("input_pinned_memory"):
        optimization.input_pinned_memory.enable = True
    if not optimization.HasField("output_pinned_memory"):
        optimization.output_pinned_memory.enable = True
