"""Triton's batch inputs: tensors the server computes for each formed batch from the shapes of the
requests in it (config ``batch_input``), so a model with ragged inputs can tell where each
request's elements start and end in the flattened, concatenated feed.

Pure numpy on the request shapes (batch dim included); the arrays follow Triton's backend
utilities (BackendInputCollector), kind by kind.
"""

from __future__ import annotations

from dataclasses import dataclass
from math import prod

import numpy as np

from server.proto import model_config_pb2 as mc

_Kind = mc.BatchInput


@dataclass(frozen=True, slots=True)
class BatchInputSpec:
    kind: int
    # ONNX graph inputs that receive the computed tensor.
    targets: tuple[str, ...]
    # The request input whose shapes the tensor describes.
    source: str
    dtype: np.dtype

    @classmethod
    def from_config(cls, entry: mc.BatchInput) -> BatchInputSpec:
        dtype = np.dtype(np.float32) if entry.data_type == mc.TYPE_FP32 else np.dtype(np.int32)
        return cls(entry.kind, tuple(entry.target_name), entry.source_input[0], dtype)


def batch_input_specs(config: mc.ModelConfig) -> tuple[BatchInputSpec, ...]:
    """The validated config's batch inputs (io_validation has checked each has one source)."""
    return tuple(BatchInputSpec.from_config(entry) for entry in config.batch_input)


def batch_input_array(spec: BatchInputSpec, shapes: list[tuple[int, ...]]) -> np.ndarray:
    """The tensor for one batch whose requests' source inputs have ``shapes``, in batch order."""
    counts = [prod(shape) for shape in shapes]
    if spec.kind == _Kind.BATCH_ELEMENT_COUNT:
        return np.array(counts, dtype=spec.dtype)
    if spec.kind == _Kind.BATCH_ACCUMULATED_ELEMENT_COUNT:
        return np.cumsum(counts, dtype=np.int64).astype(spec.dtype)
    if spec.kind == _Kind.BATCH_ACCUMULATED_ELEMENT_COUNT_WITH_ZERO:
        return np.concatenate([[0], np.cumsum(counts, dtype=np.int64)]).astype(spec.dtype)
    if spec.kind == _Kind.BATCH_MAX_ELEMENT_COUNT_AS_SHAPE:
        # Only the shape carries information; Triton leaves the contents undefined, we zero them.
        return np.zeros(max(counts, default=0), dtype=spec.dtype)
    # BATCH_ITEM_SHAPE / _FLATTEN: each batch item's shape without its batch dim, one row per item.
    rows = [shape[1:] for shape in shapes for _ in range(shape[0] if shape else 0)]
    rank = max((len(shape) - 1 for shape in shapes), default=0)
    items = np.array(rows, dtype=spec.dtype).reshape(len(rows), rank)
    return items.reshape(-1) if spec.kind == _Kind.BATCH_ITEM_SHAPE_FLATTEN else items
