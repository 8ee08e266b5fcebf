"""INT8 quantization with ``onnxruntime.quantization``: dynamic, and static QDQ with calibration.

Both first prepare the model as ONNX Runtime recommends (``quant_pre_process``: shape inference
and the basic graph optimizations, e.g. BatchNormalization folded into Conv) and, for per-channel
weights, raise an opset below 13 to 13 (per-channel DequantizeLinear needs its ``axis``).
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Iterator
from pathlib import Path

import onnx
from onnx import version_converter
from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, quantize_dynamic, quantize_static
from onnxruntime.quantization.shape_inference import quant_pre_process

from server.optimize.failure import OptimizeError
from server.optimize.methods.spec import Candidate, MethodOptions
from server.optimize.samples import Feeds

log = logging.getLogger(__name__)

PER_CHANNEL_OPSET = 13
# Static QDQ default: the compute-heavy ops with weights. Quantizing every op ORT can (Add, Mul,
# Clip, ...) keeps more of the graph in INT8 and can run faster, but on the OCR recognizer it cost
# 5 points of top-1 agreement (README, "Model optimization"); --op-types all asks for it.
STATIC_OP_TYPES = ("Conv", "MatMul", "Gemm")
CALIBRATION = {"minmax": CalibrationMethod.MinMax, "entropy": CalibrationMethod.Entropy, "percentile": CalibrationMethod.Percentile}
# Node types whose presence shows that something was quantized.
QUANTIZED_OPS = frozenset(
    {"QuantizeLinear", "DequantizeLinear", "DynamicQuantizeLinear", "MatMulInteger", "ConvInteger", "QLinearConv", "QLinearMatMul"}
)


class SampleReader(CalibrationDataReader):  # type: ignore[misc]  # onnxruntime ships no types: its base class is Any
    """Hands the calibration feeds to ORT's calibrator one batch at a time."""

    def __init__(self, feeds: list[Feeds]) -> None:
        self._feeds = feeds
        self._iterator: Iterator[Feeds] = iter(feeds)

    def get_next(self) -> Feeds | None:
        return next(self._iterator, None)

    def rewind(self) -> None:
        self._iterator = iter(self._feeds)


def quantize_dynamic_int8(source: Path, model_name: str, workdir: Path, options: MethodOptions) -> Candidate:
    """Weights INT8 ahead of time, activations quantized per run (no calibration data needed)."""
    reduce_range, why = options.cpu.reduce_range()
    prepared, notes = prepare(source, workdir, min_opset=None)
    output = workdir / "int8-dynamic.onnx"
    with _quantizer_errors("int8-dynamic", model_name):
        quantize_dynamic(
            prepared,
            output,
            weight_type=QuantType.QInt8,
            reduce_range=reduce_range,
            op_types_to_quantize=list(options.op_types) if options.op_types else None,
            nodes_to_exclude=list(options.exclude_nodes) or None,
        )
    _require_quantized(output, source, model_name, "int8-dynamic")
    settings = {"weight_type": "int8", "activations": "uint8, quantized per run", "reduce_range": reduce_range}
    settings["op_types"] = list(options.op_types) if options.op_types else "onnxruntime's default"
    return Candidate(output, "int8-dynamic", settings, [*notes, f"reduce_range={reduce_range}: {why}"])


def quantize_static_int8(source: Path, model_name: str, workdir: Path, options: MethodOptions) -> Candidate:
    """QDQ INT8 with activation ranges from calibration; per-channel weights when they help."""
    reduce_range, why = options.cpu.reduce_range()
    choices = {"auto": (True, False), "true": (True,), "false": (False,)}[options.per_channel]
    prepared, notes = prepare(source, workdir, min_opset=PER_CHANNEL_OPSET if True in choices else None)
    if True in choices and _opset(onnx.load(str(prepared), load_external_data=False)) < PER_CHANNEL_OPSET:
        choices = (False,)
        notes.append("per-channel weights need opset 13 and the model could not be converted: per-tensor weights")
    op_types = None if options.op_types == ("all",) else list(options.op_types or STATIC_OP_TYPES)
    outputs = {}
    for per_channel in choices:
        outputs[per_channel] = workdir / f"int8-static-{'channel' if per_channel else 'tensor'}.onnx"
        with _quantizer_errors("int8-static", model_name):
            quantize_static(
                prepared,
                outputs[per_channel],
                SampleReader(options.calibration),
                quant_format=QuantFormat.QDQ,
                activation_type=QuantType.QUInt8,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                reduce_range=reduce_range,
                calibrate_method=CALIBRATION[options.calibration_method],
                op_types_to_quantize=op_types,
                nodes_to_exclude=list(options.exclude_nodes) or None,
            )
        _require_quantized(outputs[per_channel], source, model_name, "int8-static")
    per_channel = _more_accurate(outputs, options, notes)
    settings: dict[str, object] = {"format": "QDQ", "activations": "uint8", "weights": "int8", "per_channel": per_channel}
    settings.update(calibration=options.calibration_method, reduce_range=reduce_range, op_types=op_types or "all onnxruntime quantizes")
    return Candidate(outputs[per_channel], "int8-static", settings, [*notes, f"reduce_range={reduce_range}: {why}"])


def prepare(source: Path, workdir: Path, min_opset: int | None) -> tuple[Path, list[str]]:
    """The model as the quantizers want it; notes say what was changed or could not be."""
    notes: list[str] = []
    current = source
    model = onnx.load(str(source))
    opset = _opset(model)
    if min_opset is not None and opset < min_opset:
        try:
            converted = version_converter.convert_version(model, min_opset)
            current = workdir / "converted.onnx"
            onnx.save(converted, str(current))
            notes.append(f"opset {opset} converted to {min_opset} for per-channel weights")
        except Exception as error:  # the converter raises bare RuntimeErrors
            notes.append(f"opset {opset} could not be converted to {min_opset}: {error}")
    prepared = workdir / "prepared.onnx"
    try:
        quant_pre_process(str(current), str(prepared), skip_symbolic_shape=True)
    except Exception as error:  # shape inference and ORT's optimizer raise many types
        notes.append(f"quantization pre-processing skipped: {error}")
        return current, notes
    return prepared, notes


def _more_accurate(outputs: dict[bool, Path], options: MethodOptions, notes: list[str]) -> bool:
    """The per-channel choice to keep: the only one, or the one that scores better."""
    if len(outputs) == 1 or options.accuracy_score is None:
        return next(iter(outputs))
    scores = {choice: options.accuracy_score(path) for choice, path in outputs.items()}
    chosen = max(scores, key=lambda choice: (scores[choice], choice))
    verdict = "kept" if chosen else "dropped"
    notes.append(f"per-channel weights {verdict}: accuracy score {scores[True]:.5f} per channel, {scores[False]:.5f} per tensor")
    return chosen


def _opset(model: onnx.ModelProto) -> int:
    return next((entry.version for entry in model.opset_import if entry.domain in ("", "ai.onnx")), 0)


def _require_quantized(output: Path, source: Path, model_name: str, method: str) -> None:
    """Raises OptimizeError naming the model's ops when the quantizer changed nothing."""
    quantized = onnx.load(str(output), load_external_data=False)
    if any(node.op_type in QUANTIZED_OPS for node in quantized.graph.node):
        return
    ops = sorted({node.op_type for node in onnx.load(str(source), load_external_data=False).graph.node})
    raise OptimizeError(
        f"{method}: nothing in model '{model_name}' can be quantized: its ops ({', '.join(ops)}) include none that {method} "
        "quantizes with FP32 weights or activations (Conv, MatMul, Gemm, Gather, ...)"
    )


@contextlib.contextmanager
def _quantizer_errors(method: str, model_name: str) -> Iterator[None]:
    """Turns a quantizer failure into OptimizeError with ORT's own words (they name the node)."""
    try:
        yield
    except OptimizeError:
        raise
    except Exception as error:  # the quantizers raise whatever their helpers raise
        raise OptimizeError(f"{method}: ONNX Runtime's quantizer failed on model '{model_name}': {type(error).__name__}: {error}") from None
