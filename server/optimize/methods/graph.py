"""ONNX Runtime's offline graph optimization at the EXTENDED level, saved to a file.

EXTENDED (constant folding, redundant-node removal and fusions such as Gelu, LayerNorm, MatMul +
Add) is the highest level whose result stays portable; ALL adds layout changes for one execution
provider on one machine, which ONNX Runtime itself advises against saving.
"""

from __future__ import annotations

from pathlib import Path

import onnxruntime as ort

from server.optimize.failure import OptimizeError
from server.optimize.methods.spec import Candidate


def optimize_graph(source: Path, workdir: Path) -> Candidate:
    """Raises OptimizeError when ONNX Runtime cannot load or optimize the model."""
    output = workdir / "graph.onnx"
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED
    options.optimized_model_filepath = str(output)
    try:
        ort.InferenceSession(str(source), options, providers=["CPUExecutionProvider"])
    except Exception as error:  # ORT raises its own pybind exception types
        raise OptimizeError(f"graph: ONNX Runtime cannot optimize the model: {error}") from None
    return Candidate(output, "graph", {"level": "ORT_ENABLE_EXTENDED", "optimized_for": "CPUExecutionProvider"})
