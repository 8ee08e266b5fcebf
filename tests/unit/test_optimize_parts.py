"""The pure parts of ``ortserve optimize``: CPU flags, metrics, the gate, methods, the writer."""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnx
import onnxruntime as ort
import pytest

from scripts import onnx_models
from server.optimize import accuracy, version_writer
from server.optimize.cpu import parse_cpuinfo
from server.optimize.evaluation import explain_load_failure
from server.optimize.failure import OptimizeError
from server.optimize.gate import judge, parse_thresholds
from server.optimize.methods import MethodSpec, parse_method

XEON = """processor\t: 0
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni amx_int8

processor\t: 1
model name\t: Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz
flags\t\t: fpu sse2 avx2 avx512f avx512bw avx512_vnni amx_int8
"""


def test_cpu_flags_decide_reduce_range() -> None:
    vnni = parse_cpuinfo(XEON, "x86_64")
    assert (vnni.model_name, vnni.vnni, vnni.avx512) == ("Intel(R) Xeon(R) Gold 6338 CPU @ 2.00GHz", True, True)
    assert vnni.reduce_range() == (False, "the CPU has VNNI: full 8-bit weights")
    assert vnni.to_json()["flags"] == ["avx2", "avx512f", "avx512bw", "avx512_vnni", "amx_int8"]

    older = parse_cpuinfo("model name\t: Intel(R) Xeon(R) CPU E5-2680 v4\nflags\t\t: sse2 avx2\n", "x86_64")
    assert (older.vnni, older.avx512, older.reduce_range()[0]) == (False, False, True)
    # An AVX-VNNI client CPU (no AVX-512) has the instruction too.
    assert parse_cpuinfo("flags : avx2 avx_vnni\n", "x86_64").reduce_range()[0] is False
    assert parse_cpuinfo("Features : fp asimd asimddp\n", "aarch64").reduce_range()[0] is False


def test_metrics_match_numpy_on_known_arrays() -> None:
    reference = [np.array([[0.9, 0.1], [0.2, 0.8]], np.float32), np.array([[0.6, 0.4]], np.float32)]
    candidate = [np.array([[0.7, 0.3], [0.6, 0.4]], np.float32), np.array([[0.6, 0.4]], np.float32)]

    result = accuracy.compare_output(reference, candidate, classes=True)

    a, b = np.concatenate([r.ravel() for r in reference]), np.concatenate([c.ravel() for c in candidate])
    assert result.max_abs_error == pytest.approx(0.4)
    assert result.mean_abs_error == pytest.approx(np.abs(a - b).mean())
    assert result.cosine == pytest.approx(a @ b / np.linalg.norm(a) / np.linalg.norm(b))
    assert result.top1_agreement == pytest.approx(2 / 3)  # the second row flips class
    assert accuracy.cosine(np.zeros(3), np.zeros(3)) == 1.0 and accuracy.cosine(np.zeros(3), np.ones(3)) == 0.0


def test_class_outputs_are_recognised_by_name_labels_flag_or_probabilities() -> None:
    rng = np.random.default_rng(0)
    probs = rng.dirichlet(np.ones(5), 4).astype(np.float32)
    outputs = {
        "softmax_out": [probs],
        "y": [probs],  # probabilities without a telling name
        "logits": [rng.standard_normal((4, 5)).astype(np.float32)],
        "hidden": [rng.standard_normal((4, 5)).astype(np.float32)],
        "named": [rng.standard_normal((4, 5)).astype(np.float32)],
        "labelled": [rng.standard_normal((4, 5)).astype(np.float32)],
        "scalar_score": [np.zeros((4, 1), np.float32)],  # one entry: no classes to choose from
    }
    assert accuracy.class_like_outputs(outputs, labelled={"labelled"}, named={"named"}) == {
        "softmax_out",
        "y",
        "logits",
        "named",
        "labelled",
    }


def test_gate_defaults_overrides_and_failures() -> None:
    measured = {
        "a": accuracy.OutputAccuracy(0.5, 0.01, 0.995, 0.97),
        "b": accuracy.OutputAccuracy(0.5, 0.01, 0.98, None),
    }
    default = judge(measured, parse_thresholds([]))
    assert default.thresholds == {"a": {"cosine": 0.01, "top1": 0.02}, "b": {"cosine": 0.01}}
    assert default.failures == ["a: top1 drop 0.03 > 0.02", "b: cosine drop 0.02 > 0.01"]

    relaxed = judge(measured, parse_thresholds(["top1=0.05", "b:cosine=0.03,mean_abs=0.02"]))
    assert relaxed.passed and relaxed.thresholds["b"] == {"cosine": 0.03, "mean_abs": 0.02}
    assert judge(measured, parse_thresholds(["cosine=off", "top1=off"])).passed
    nan = {"a": accuracy.OutputAccuracy(float("nan"), float("nan"), float("nan"), None)}
    assert not judge(nan, parse_thresholds([])).passed
    for bad in ("cosine", "speed=0.1", "cosine=-1", "cosine=x"):
        with pytest.raises(OptimizeError, match="--max-accuracy-drop"):
            parse_thresholds([bad])
    with pytest.raises(OptimizeError, match="names output 'c', which the model does not have"):
        judge(measured, parse_thresholds(["c:cosine=0.1"]))


def test_methods_parse() -> None:
    assert parse_method("prune:0.3") == MethodSpec("prune", 0.3) and parse_method("prune:0.3").label == "prune:0.3"
    assert parse_method("int8-static") == MethodSpec("int8-static")
    for bad in ("prune:1", "prune:0", "prune:x", "int4", "prune:RATIO"):
        with pytest.raises(OptimizeError, match="--method"):
            parse_method(bad)


def test_a_missing_kernel_is_named_with_what_to_do(tmp_path: Path) -> None:
    # A real ORT refusal: its CPU provider has no Relu for int16 (ONNX allows it).
    model = onnx_models.unary("Relu", "INT16", ["batch", 4])
    path = tmp_path / "relu_int16.onnx"
    onnx.save(model, str(path))
    with pytest.raises(Exception) as error:  # ORT's own pybind exception type
        ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])

    message = explain_load_failure("int8-static", str(error.value), "CPUExecutionProvider")

    assert message.startswith("int8-static: ONNX Runtime's CPUExecutionProvider has no kernel for Relu (opset ")
    assert message.endswith("keep Relu in FP32: list the op types to quantize with --op-types, without Relu")
    assert "ConvInteger" in explain_load_failure(
        "int8-dynamic", "Could not find an implementation for ConvInteger(10) node with name 'conv1_quant'", "CPUExecutionProvider"
    )


def test_a_version_appears_whole_or_not_at_all(tmp_path: Path) -> None:
    model_dir = tmp_path / "m"
    (model_dir / "1").mkdir(parents=True)
    candidate = tmp_path / "candidate.onnx"
    candidate.write_bytes(b"model bytes")

    written = version_writer.write_version(model_dir, 2, candidate, "model.onnx", {"method": "graph"})

    assert written == model_dir / "2" and (written / "model.onnx").read_bytes() == b"model bytes"
    assert oct(written.stat().st_mode & 0o777) == oct(0o777 & ~_umask())
    with pytest.raises(OptimizeError, match="cannot write version 3"):
        version_writer.write_version(model_dir, 3, tmp_path / "missing.onnx", "model.onnx", {})
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]  # no staging directory left behind


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask
