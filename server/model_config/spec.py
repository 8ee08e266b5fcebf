"""What a request to one model version must look like, derived once from its completed config."""

from __future__ import annotations

from collections.abc import Hashable
from dataclasses import dataclass, field
from typing import Any

from server.datatypes import config_to_wire
from server.model_config.signature import GraphSignature, GraphTensor
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
    # ONNX Runtime sees this tensor as a scalar (no dims besides the batch dim) while the config
    # describes it with dims of ones, as Triton does ([1]); a request may send either shape.
    scalar: bool = False
    # allow_ragged_batch: requests of different shapes batch together; fed flat, concatenated.
    ragged: bool = False


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
    # Class labels of outputs with a label_filename (classification extension), one per index.
    labels: dict[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    # Inputs whose request shapes batch inputs (config batch_input) are computed from.
    batch_input_sources: frozenset[str] = frozenset()

    @property
    def batching(self) -> bool:
        return self.max_batch_size > 0

    def wire_shape(self, tensor: TensorSpec) -> tuple[int, ...]:
        """The shape clients see in metadata: [-1] + dims when batching, else dims."""
        return (-1, *tensor.dims) if self.batching else tensor.dims


def spec_from_config(
    config: mc.ModelConfig, graph: GraphSignature | None = None, labels: dict[str, tuple[str, ...]] | None = None
) -> ModelSpec:
    """The request spec of a validated config; ``graph`` tells which tensors are ONNX scalars and
    ``labels`` holds the label files' contents by output name."""
    batching = config.max_batch_size > 0
    graph_inputs = {t.name: t for t in graph.inputs} if graph else {}
    graph_outputs = {t.name: t for t in graph.outputs} if graph else {}
    return ModelSpec(
        name=config.name,
        max_batch_size=config.max_batch_size,
        inputs={entry.name: _tensor_spec(entry, graph_inputs.get(entry.name), batching) for entry in config.input},
        outputs={entry.name: _tensor_spec(entry, graph_outputs.get(entry.name), batching) for entry in config.output},
        labels=labels or {},
        batch_input_sources=frozenset(source for batch_input in config.batch_input for source in batch_input.source_input),
    )


def _tensor_spec(entry: mc.ModelInput | mc.ModelOutput, graph_tensor: GraphTensor | None, batching: bool) -> TensorSpec:
    reshape = tuple(entry.reshape.shape) if entry.HasField("reshape") else None
    graph_rank = None if graph_tensor is None else len(graph_tensor.shape) - (1 if batching else 0)
    # Triton feeds a scalar graph tensor as a scalar whatever its config dims of ones say.
    scalar = reshape == () or (graph_rank == 0 and all(d == 1 for d in entry.dims))
    return TensorSpec(
        name=entry.name,
        datatype=config_to_wire(mc.DataType.Name(entry.data_type)),
        dims=tuple(entry.dims),
        reshape=() if scalar else reshape,
        optional=getattr(entry, "optional", False),
        scalar=scalar,
        ragged=getattr(entry, "allow_ragged_batch", False),
    )
