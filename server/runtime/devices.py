"""Which device and execution providers each configured instance runs on.

KIND_CPU → CPUExecutionProvider (or OpenVINO when the config asks for it as a CPU accelerator).
KIND_GPU → CUDAExecutionProvider on each listed GPU, with TensorRT first when the config lists
the ``tensorrt`` GPU accelerator; the CPU provider stays last for ops the GPU providers lack.
Anything the machine cannot do fails the model with a reason naming what is missing.
"""

from __future__ import annotations

from dataclasses import dataclass

from server.errors import ServerError
from server.proto import model_config_pb2 as mc
from server.runtime.gpus import CUDA_PROVIDER, TENSORRT_PROVIDER, available_providers, cuda_provider_problem, visible_gpu_count

ProviderList = list[str | tuple[str, dict[str, str]]]

_OPENVINO_PROVIDER = "OpenVINOExecutionProvider"
# Triton ORT-backend TensorRT accelerator parameters → ORT TensorRT EP options.
_TENSORRT_KEYS = {
    "max_workspace_size_bytes": "trt_max_workspace_size",
    "trt_engine_cache_enable": "trt_engine_cache_enable",
    "trt_engine_cache_path": "trt_engine_cache_path",
    "max_partition_iterations": "trt_max_partition_iterations",
    "min_subgraph_size": "trt_min_subgraph_size",
}
_PRECISION_FLAGS = {"FP16": "trt_fp16_enable", "INT8": "trt_int8_enable", "BF16": "trt_bf16_enable"}


@dataclass(frozen=True, slots=True)
class DeviceChoice:
    label: str
    providers: ProviderList
    gpu_id: int | None = None

    @property
    def is_cpu(self) -> bool:
        return self.gpu_id is None

    @classmethod
    def cpu(cls) -> DeviceChoice:
        return cls(label="cpu", providers=["CPUExecutionProvider"])


def device_choices(config: mc.ModelConfig) -> list[DeviceChoice]:
    """One entry per instance, in instance_group order (KIND_AUTO must already be resolved).

    Raises UNAVAILABLE naming the group when this machine lacks what it needs (a GPU, a CUDA
    provider, an execution provider the config names) and INVALID_ARG for what no machine could run (an unknown kind or accelerator).
    """
    choices: list[DeviceChoice] = []
    for group in config.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_CPU:
            choices.extend(_cpu_choice(config) for _ in range(group.count))
        elif group.kind == mc.ModelInstanceGroup.KIND_GPU:
            # No listed GPU means "every visible GPU" (auto-complete fills them); none visible
            # must fail here rather than leave the model with zero instances.
            for gpu in group.gpus or [0]:
                choices.extend(_gpu_choice(config, group, gpu) for _ in range(group.count))
        else:
            kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
            raise ServerError.invalid_arg(
                f"model '{config.name}': instance group '{group.name}' has kind {kind}, which ortserve does not support"
            )
    return choices


def _cpu_choice(config: mc.ModelConfig) -> DeviceChoice:
    accelerators = config.optimization.execution_accelerators.cpu_execution_accelerator
    for accelerator in accelerators:
        if accelerator.name != "openvino":
            raise ServerError.invalid_arg(f"model '{config.name}': unknown CPU execution accelerator '{accelerator.name}'")
        if _OPENVINO_PROVIDER not in available_providers():
            raise ServerError.unavailable(
                f"model '{config.name}' asks for the openvino CPU accelerator, but this onnxruntime has no {_OPENVINO_PROVIDER}"
            )
        return DeviceChoice("cpu", [(_OPENVINO_PROVIDER, dict(accelerator.parameters)), "CPUExecutionProvider"])
    return DeviceChoice.cpu()


def _gpu_choice(config: mc.ModelConfig, group: mc.ModelInstanceGroup, gpu: int) -> DeviceChoice:
    # What this machine lacks (a GPU, a working CUDA provider) is UNAVAILABLE, not a bad config:
    # the same config loads on a machine that has it.
    problem = cuda_provider_problem()
    if problem is not None:
        raise ServerError.unavailable(f"model '{config.name}': instance group '{group.name}' is KIND_GPU, but {problem}")
    providers = available_providers()
    gpu_count = visible_gpu_count()
    if not 0 <= gpu < gpu_count:
        raise ServerError.unavailable(
            f"model '{config.name}': instance group '{group.name}' asks for GPU {gpu}, but {gpu_count} GPU(s) are visible"
        )
    chosen: ProviderList = []
    cuda_options = {"device_id": str(gpu)}
    for accelerator in config.optimization.execution_accelerators.gpu_execution_accelerator:
        if accelerator.name == "tensorrt":
            if TENSORRT_PROVIDER not in providers:
                raise ServerError.unavailable(
                    f"model '{config.name}' asks for the tensorrt GPU accelerator, but this onnxruntime has no {TENSORRT_PROVIDER}"
                )
            chosen.append((TENSORRT_PROVIDER, tensorrt_options(dict(accelerator.parameters), gpu)))
        elif accelerator.name == "cuda":
            cuda_options.update(accelerator.parameters)
        else:
            raise ServerError.invalid_arg(f"model '{config.name}': unknown GPU execution accelerator '{accelerator.name}'")
    chosen += [(CUDA_PROVIDER, cuda_options), "CPUExecutionProvider"]
    return DeviceChoice(label=f"cuda:{gpu}", providers=chosen, gpu_id=gpu)


def tensorrt_options(parameters: dict[str, str], gpu: int) -> dict[str, str]:
    """Triton's tensorrt accelerator parameters as ORT TensorRT EP options."""
    options = {"device_id": str(gpu)}
    for key, value in parameters.items():
        if key == "precision_mode":
            flag = _PRECISION_FLAGS.get(value.upper())
            if flag:
                options[flag] = "True"
        elif key in _TENSORRT_KEYS:
            options[_TENSORRT_KEYS[key]] = value
        elif key.startswith("trt_"):
            options[key] = value
    return options
