"""Structured pruning: remove the least important channels of every chain, in both layers.

A channel's importance is the L2 norm of its incoming weights (the producer's slice) times that
of its outgoing weights (the consumer's slice): a unit that barely receives or barely passes on
signal matters least. Removing it shrinks both weight matrices (and the biases and per-channel
constants between them), so the model really computes less; zeroing weights instead would leave
every multiplication in place, and ONNX Runtime's CPU kernels do not skip zeros.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import numpy_helper

from server.optimize.failure import OptimizeError
from server.optimize.methods.prune_chains import Axis, Chain, find_chains
from server.optimize.methods.spec import Candidate


def prune(source: Path, model_name: str, workdir: Path, ratio: float) -> Candidate:
    """Raises OptimizeError when the model has no chain to prune."""
    model = onnx.load(str(source))
    chains = find_chains(model.graph)
    if not chains:
        raise OptimizeError(
            f"prune: model '{model_name}' has no layers to prune: no MatMul/Gemm -> activation -> MatMul/Gemm or "
            "Conv -> activation -> Conv chain whose channels are used nowhere else"
        )
    weights = {tensor.name: numpy_helper.to_array(tensor) for tensor in model.graph.initializer}
    changed: set[str] = set()
    widths: list[dict[str, object]] = []
    kept_total = 0
    for chain in chains:
        kept = _kept_channels(chain, weights, ratio)
        kept_total += len(kept)
        for axis in (chain.producer_weight, chain.consumer_weight, *chain.channel_vectors):
            weights[axis.name] = np.take(weights[axis.name], kept, axis=axis.axis)
            changed.add(axis.name)
        widths.append(
            {"kind": chain.kind, "producer": chain.producer, "consumer": chain.consumer, "before": chain.width, "after": len(kept)}
        )
    _replace_initializers(model, weights, changed)
    output = workdir / "pruned.onnx"
    onnx.save(model, str(output))
    before = sum(chain.width for chain in chains)
    note = f"{len(chains)} chain(s) pruned: {before - kept_total} of {before} channels removed"
    return Candidate(output, f"prune:{ratio:g}", {"ratio": ratio, "importance": "L2(in) x L2(out)", "chains": widths}, [note])


def _kept_channels(chain: Chain, weights: dict[str, np.ndarray], ratio: float) -> np.ndarray:
    """Indices of the channels to keep, in their original order."""
    importance = _norms(weights, chain.producer_weight) * _norms(weights, chain.consumer_weight)
    keep = max(1, chain.width - round(ratio * chain.width))
    return np.sort(np.argsort(-importance, kind="stable")[:keep])


def _norms(weights: dict[str, np.ndarray], axis: Axis) -> np.ndarray:
    moved = np.moveaxis(weights[axis.name].astype(np.float64), axis.axis, 0)
    moved = moved.reshape(moved.shape[0], -1)
    norms: np.ndarray = np.linalg.norm(moved, axis=1)
    return norms


def _replace_initializers(model: onnx.ModelProto, weights: dict[str, np.ndarray], changed: set[str]) -> None:
    """Write the shrunk initializers back; drop inferred shapes, which no longer hold."""
    for position, tensor in enumerate(model.graph.initializer):
        if tensor.name in changed:
            model.graph.initializer[position].CopyFrom(numpy_helper.from_array(weights[tensor.name], tensor.name))
    del model.graph.value_info[:]
