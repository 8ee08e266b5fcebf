"""Optimization figures: every method of ``ortserve optimize`` on real models, against the targets.

Models (a temporary repository, ``max_batch_size: 8`` so batch 1 and 8 are measured):

- ``encoder``: the BERT-style encoder of scripts/onnx_models.py (4 layers, width 384, 6 heads, FFN
  1536, 64 tokens; 41 MB), random token ids (its weights are random too: no text means more);
- ``mlp``: model_repo's MLP (256 → 1024 → 1024 → 10), normal random inputs, ``--classes output``;
- ``mlp_trained``: the same shape trained on a synthetic 10-class task (scripts/trained_mlp.py),
  judged on fresh samples of that task: random weights have no redundancy to prune, trained ones do;
- ``ocr_cls`` / ``ocr_rec``: the text-direction classifier and the PP-OCRv4 recognizer of the
  rapidocr-onnxruntime wheel, on rendered text lines (scripts/ocr_samples.py).

Targets: int8-dynamic on the encoder >= 1.5x FP32 throughput at batch 8 with cosine >= 0.99;
int8-static on a CNN >= 1.3x with top-1 agreement >= 98 % on real inputs; prune:0.3 on the MLP
>= 1.3x (accuracy delta reported). Every run keeps failed versions (--keep-failed) so every row
has figures; the gate column says what the gate decided.

    .venv/bin/python -m loadtest.bench_optimize [--models encoder mlp mlp_trained ocr_cls ocr_rec] [--timing-runs 40]

Prints a Markdown table and writes loadtest/results/optimize.json (every report in full).
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import shutil
import sys
import tempfile
from pathlib import Path

import numpy as np

from scripts import ocr_samples, onnx_models, trained_mlp
from scripts.harness import REPO_ROOT
from server.optimize.command import main as optimize_main

RESULTS_DIR = REPO_ROOT / "loadtest" / "results"
CONFIG = "max_batch_size: 8\n"
ENCODER_VOCAB = 8000
# (model, row label, method, extra flags)
PLAN = [
    ("encoder", "int8-dynamic", "int8-dynamic", []),
    ("encoder", "int8-static", "int8-static", []),
    ("encoder", "fp16", "fp16", []),
    ("encoder", "graph", "graph", []),
    ("encoder", "prune:0.3", "prune:0.3", []),
    ("mlp", "int8-dynamic", "int8-dynamic", []),
    ("mlp", "int8-static", "int8-static", []),
    ("mlp", "fp16", "fp16", []),
    ("mlp", "graph", "graph", []),
    ("mlp", "prune:0.3", "prune:0.3", []),
    ("mlp_trained", "prune:0.3", "prune:0.3", []),
    ("mlp_trained", "prune:0.5", "prune:0.5", []),
    ("mlp_trained", "int8-dynamic", "int8-dynamic", []),
    ("ocr_cls", "int8-static", "int8-static", []),
    ("ocr_cls", "int8-static, all ops", "int8-static", ["--op-types", "all"]),
    ("ocr_cls", "int8-dynamic", "int8-dynamic", []),
    ("ocr_cls", "fp16", "fp16", []),
    ("ocr_cls", "graph", "graph", []),
    ("ocr_rec", "int8-static", "int8-static", []),
    ("ocr_rec", "int8-static, all ops", "int8-static", ["--op-types", "all"]),
    (
        "ocr_rec",
        "int8-static, stem in FP32",
        "int8-static",
        ["--exclude-nodes", ",".join([f"p2o.Conv.{i}" for i in range(8)] + ["p2o.MatMul.24"])],
    ),
    ("ocr_rec", "int8-dynamic", "int8-dynamic", []),
    ("ocr_rec", "fp16", "fp16", []),
    ("ocr_rec", "graph", "graph", []),
]
EXTRA = {"mlp": ["--classes", "output"], "mlp_trained": ["--classes", "output"]}
MODELS = ["encoder", "mlp", "mlp_trained", "ocr_cls", "ocr_rec"]


def build(repository: Path, samples: Path, models: list[str]) -> None:
    """The model directories and their samples files."""
    rng = np.random.default_rng(11)
    sources = {
        "encoder": lambda: onnx_models.save(onnx_models.encoder(), str(repository / "encoder" / "1" / "model.onnx")),
        "mlp": lambda: shutil.copy(REPO_ROOT / "model_repo" / "mlp" / "1" / "model.onnx", repository / "mlp" / "1" / "model.onnx"),
        "mlp_trained": lambda: _save_trained(repository / "mlp_trained" / "1" / "model.onnx"),
        "ocr_cls": lambda: shutil.copy(ocr_samples.CLS_MODEL, repository / "ocr_cls" / "1" / "model.onnx"),
        "ocr_rec": lambda: shutil.copy(ocr_samples.REC_MODEL, repository / "ocr_rec" / "1" / "model.onnx"),
    }
    data = {
        "encoder": lambda: {"input_ids": rng.integers(0, ENCODER_VOCAB, (64, 64)).astype(np.int64)},
        "mlp": lambda: {"input": rng.standard_normal((128, 256)).astype(np.float32)},
        "mlp_trained": lambda: {"input": trained_mlp.task(256, seed=99)[0]},
        "ocr_cls": lambda: {"x": ocr_samples.classifier_samples(200)[0]},
        "ocr_rec": lambda: {"x": ocr_samples.recognizer_samples(128)[0]},
    }
    for name in models:
        (repository / name / "1").mkdir(parents=True)
        (repository / name / "config.pbtxt").write_text(CONFIG)
        sources[name]()
        np.savez(samples / f"{name}.npz", **data[name]())


def _save_trained(path: Path) -> None:
    model, accuracy = trained_mlp.train()
    print(f"mlp_trained: {accuracy:.1%} accuracy on held-out samples of its task", flush=True)
    onnx_models.save(model, str(path))


def run_one(repository: Path, samples: Path, work: Path, model: str, method: str, extra: list[str], runs: int) -> dict[str, object]:
    report = work / "report.json"
    report.unlink(missing_ok=True)
    argv = [str(repository / model), "--version", "1", "--method", method, "--samples", str(samples / f"{model}.npz")]
    argv += [
        "--batch-sizes",
        "1,8",
        "--timing-runs",
        str(runs),
        "--keep-failed",
        "--report-json",
        str(report),
        *extra,
        *EXTRA.get(model, []),
    ]
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = optimize_main(argv)
    if not report.exists():
        return {"error": err.getvalue().strip() or out.getvalue().strip(), "exit_code": code}
    result = json.loads(report.read_text())
    result["exit_code"] = code
    return result


def row(model: str, label: str, report: dict[str, object]) -> str:
    if "error" in report:
        return f"| {model} | {label} | refused: {report['error']} |" + " |" * 8
    size, latency, throughput = report["size_bytes"], report["latency_ms"], report["throughput_per_s"]
    accuracy = report["accuracy"]
    assert isinstance(size, dict) and isinstance(latency, dict) and isinstance(throughput, dict) and isinstance(accuracy, dict)
    metrics = "; ".join(
        f"{name.split('/')[0]}: cos {a['cosine']:.4f}, max {a['max_abs_error']:.3g}"
        + (f", top-1 {a['top1_agreement']:.1%}" if a["top1_agreement"] is not None else "")
        for name, a in accuracy.items()
    )
    gate = report["gate"]
    assert isinstance(gate, dict)
    cells = [
        f"{size['before'] / 1e6:.2f} → {size['after'] / 1e6:.2f}",
        f"{latency['1']['before']['p50']:.2f} → {latency['1']['after']['p50']:.2f}",
        f"{latency['8']['before']['p50']:.2f} → {latency['8']['after']['p50']:.2f}",
        f"{throughput['1']['before']:.0f} → {throughput['1']['after']:.0f} ({throughput['1']['ratio']:.2f}x)",
        f"{throughput['8']['before']:.0f} → {throughput['8']['after']:.0f} ({throughput['8']['ratio']:.2f}x)",
        metrics,
        "passed" if gate["passed"] else "failed",
    ]
    return f"| {model} | {label} | " + " | ".join(cells) + " |"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=MODELS, choices=MODELS)
    parser.add_argument("--methods", nargs="+", help="only these rows (their method column), e.g. 'prune:0.3'")
    parser.add_argument("--timing-runs", type=int, default=40, help="measured runs per batch size and model (interleaved)")
    args = parser.parse_args()
    RESULTS_DIR.mkdir(parents=True, exist_ok=True)
    header = "| model | method | size MB | p50 ms b=1 | p50 ms b=8 | infer/s b=1 | infer/s b=8 | accuracy | gate |\n" + "|---" * 9 + "|"
    rows, reports = [header], []
    with tempfile.TemporaryDirectory(prefix="bench-optimize-") as temporary:
        root = Path(temporary)
        for directory in ("repo", "samples", "work"):
            (root / directory).mkdir()
        build(root / "repo", root / "samples", args.models)
        for model, label, method, extra in PLAN:
            if model not in args.models or (args.methods and label not in args.methods):
                continue
            print(f"{model}: {label} ...", flush=True)
            report = run_one(root / "repo", root / "samples", root / "work", model, method, extra, args.timing_runs)
            reports.append({"model": model, "label": label, "report": report})
            rows.append(row(model, label, report))
            print(rows[-1], flush=True)
    (RESULTS_DIR / "optimize.json").write_text(json.dumps(reports, indent=2) + "\n")
    print("\n".join(rows))
    print(f"wrote {RESULTS_DIR / 'optimize.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
