"""Which device and execution providers each configured instance runs on."""

from __future__ import annotations

from dataclasses import dataclass

from server.errors import ServerError
from server.proto import model_config_pb2 as mc

ProviderList = list[str | tuple[str, dict[str, str]]]


@dataclass(frozen=True, slots=True)
class DeviceChoice:
    label: str
    providers: ProviderList
    is_cpu: bool

    @classmethod
    def cpu(cls) -> DeviceChoice:
        return cls(label="cpu", providers=["CPUExecutionProvider"], is_cpu=True)


def device_choices(config: mc.ModelConfig) -> list[DeviceChoice]:
    """One entry per instance, in instance_group order. Raises for kinds ortserve cannot run."""
    choices: list[DeviceChoice] = []
    for group in config.instance_group:
        if group.kind == mc.ModelInstanceGroup.KIND_CPU:
            choices.extend(DeviceChoice.cpu() for _ in range(group.count))
        else:
            kind = mc.ModelInstanceGroup.Kind.Name(group.kind)
            raise ServerError.invalid_arg(
                f"model '{config.name}': instance group '{group.name}' has kind {kind}, which this "
                "server cannot run (GPU instances need onnxruntime-gpu and a CUDA device)"
            )
    return choices
