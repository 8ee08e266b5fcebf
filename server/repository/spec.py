"""What a request to one model version must look like, derived once from its completed config."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from server.datatypes import config_to_wire
from server.proto import model_config_pb2 as mc


@dataclass(frozen=True, slots=True)
class TensorSpec:
    name: str
    datatype: str
    # Config dims without the batch dim; -1 accepts any size.
    dims: tuple[int, ...]
    # The shape the ONNX graph sees (without batch dim) when the config has a reshape, else None.
    reshape: tuple[int, ...] | None
    optional: bool = False


@dataclass(frozen=True, slots=True)
class ModelSpec:
    name: str
    max_batch_size: int
    inputs: dict[str, TensorSpec]
    outputs: dict[str, TensorSpec]
    # Request signatures already validated against this spec (see request_inputs): requests
    # mostly repeat a few shapes and output lists, so each is checked once, not per request.
    input_plans: dict[Hashable, Any] = field(default_factory=dict, compare=False, repr=False)
    output_plans: dict[tuple[str, ...], tuple[str, ...]] = field(default_factory=dict, compare=False, repr=False)

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def wire_shape(self, tensor: TensorSpec) -> tuple[int, ...]:
        """The shape clients see in metadata: [-1] + dims when batching, else dims."""
        return (-1, *tensor.dims) if self.batching else tensor.dims


def spec_from_config(config: mc.ModelConfig) -> ModelSpec:
    return ModelSpec(
        name=config.name,
        max_batch_size=config.max_batch_size,
        inputs={entry.name: _tensor_spec(entry) for entry in config.input},
        outputs={entry.name: _tensor_spec(entry) for entry in config.output},
    )


def _tensor_spec(entry: mc.ModelInput | mc.ModelOutput) -> TensorSpec:
    return TensorSpec(
        name=entry.name,
        datatype=config_to_wire(mc.DataType.Name(entry.data_type)),
        dims=tuple(entry.dims),
        reshape=tuple(entry.reshape.shape) if entry.HasField("reshape") else None,
        optional=getattr(entry, "optional", False),
    )
