"""FP16 weights and compute with onnxconverter-common, inputs and outputs kept FP32
(``keep_io_types``) so clients send and receive exactly what they did before."""

from __future__ import annotations

import warnings
from pathlib import Path

import onnx
from onnxconverter_common import float16

from server.optimize.failure import OptimizeError
from server.optimize.methods.spec import Candidate, MethodOptions


def convert_float16(source: Path, model_name: str, workdir: Path, options: MethodOptions) -> Candidate:
    """Raises OptimizeError when the model has no FP32 tensor to convert or the converter fails."""
    model = onnx.load(str(source))
    if not _has_float_weights(model.graph):
        raise OptimizeError(f"fp16: model '{model_name}' has no FP32 weights to convert")
    blocked = list(float16.DEFAULT_OP_BLOCK_LIST) + list(options.fp32_ops)
    with warnings.catch_warnings():
        # One warning per weight too small for FP16 ("will be truncated to 1e-07"): not news.
        warnings.simplefilter("ignore", UserWarning)
        try:
            converted = float16.convert_float_to_float16(model, keep_io_types=True, op_block_list=blocked)
        except Exception as error:  # the converter raises whatever onnx raises
            raise OptimizeError(f"fp16: onnxconverter-common failed on model '{model_name}': {type(error).__name__}: {error}") from None
    output = workdir / "fp16.onnx"
    onnx.save(converted, str(output))
    settings: dict[str, object] = {"keep_io_types": True, "fp32_ops": sorted(set(options.fp32_ops))}
    return Candidate(output, "fp16", settings)


def _has_float_weights(graph: onnx.GraphProto) -> bool:
    """FP32 initializers, or FP32 Constant nodes (exporters such as Paddle2ONNX use those)."""
    if any(tensor.data_type == onnx.TensorProto.FLOAT for tensor in graph.initializer):
        return True
    constants = (a.t for node in graph.node if node.op_type == "Constant" for a in node.attribute if a.name == "value")
    return any(tensor.data_type == onnx.TensorProto.FLOAT for tensor in constants)
