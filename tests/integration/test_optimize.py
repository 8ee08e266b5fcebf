"""``ortserve optimize`` end to end: every method writes a version that a real server then loads
and serves to tritonclient, and the report's accuracy figures agree with a comparison the test
makes itself, from the two versions' served outputs, with numpy.

Models: the MLP and a small transformer encoder built by scripts/onnx_models.py, and the OCR
text-direction classifier of the rapidocr-onnxruntime wheel fed with rendered text lines
(scripts/ocr_samples.py). Timing runs are few: speed is the benchmark's business
(loadtest/bench_optimize.py), not a test's.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import shutil
import subprocess
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import tritonclient.grpc as grpcclient

from scripts import ocr_samples, onnx_models
from scripts.harness import REPO_ROOT, ServerProcess, wait_until
from server.optimize.command import main as optimize_main

# A batch of up to 8 rows per request (the configs' max_batch_size): the rows the CLI evaluates together.
BATCH = 8
SERVED_CONFIG = "max_batch_size: 8\nversion_policy: { all: {} }\n"
FAST = ["--timing-runs", "3", "--warmup-runs", "1"]
ENCODER = {"vocab": 500, "seq": 16, "width": 64, "heads": 4, "layers": 2, "ffn": 256}
OCR_OUTPUT = "save_infer_model/scale_0.tmp_1"


@dataclass
class Run:
    code: int
    stdout: str
    stderr: str
    report: dict[str, object] | None


def optimize(*args: object, report: Path | None = None) -> Run:
    """``ortserve optimize`` in this process (its own subprocess test is below)."""
    argv = [str(a) for a in args] + (["--report-json", str(report)] if report else [])
    out, err = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
        code = optimize_main(argv)
    loaded = json.loads(report.read_text()) if report and report.exists() else None
    return Run(code, out.getvalue(), err.getvalue(), loaded)


def digest(directory: Path) -> dict[str, str]:
    return {str(p.relative_to(directory)): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(directory.rglob("*")) if p.is_file()}


@pytest.fixture(scope="module")
def workspace(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("optimize")


@pytest.fixture(scope="module")
def repository(workspace: Path) -> Path:
    repo = workspace / "repo"
    for name, model in (("mlp", onnx_models.mlp((64, 256, 256, 10))), ("encoder", onnx_models.encoder(**ENCODER))):
        (repo / name / "1").mkdir(parents=True)
        onnx_models.save(model, str(repo / name / "1" / "model.onnx"))
        (repo / name / "config.pbtxt").write_text(SERVED_CONFIG)
    (repo / "ocr_cls" / "1").mkdir(parents=True)
    shutil.copy(ocr_samples.CLS_MODEL, repo / "ocr_cls" / "1" / "model.onnx")
    (repo / "ocr_cls" / "config.pbtxt").write_text(SERVED_CONFIG)  # inputs and outputs auto-completed
    return repo


@pytest.fixture(scope="module")
def sample_files(workspace: Path) -> dict[str, Path]:
    rng = np.random.default_rng(7)
    files = {
        "mlp": {"input": rng.standard_normal((24, 64)).astype(np.float32)},
        "encoder": {"input_ids": rng.integers(0, ENCODER["vocab"], (16, ENCODER["seq"])).astype(np.int64)},
        "ocr_cls": {"x": ocr_samples.classifier_samples(32)[0]},
    }
    paths = {}
    for name, arrays in files.items():
        paths[name] = workspace / f"{name}.npz"
        np.savez(paths[name], **arrays)
    return paths


@pytest.fixture(scope="module")
def runs(repository: Path, sample_files: dict[str, Path], workspace: Path) -> dict[str, Run]:
    """Every method once, before any server starts; the sources are fingerprinted around them."""
    before = {name: digest(repository / name / "1") for name in ("mlp", "encoder", "ocr_cls")}
    plan = {
        "mlp int8-dynamic": ("mlp", "int8-dynamic"),
        "mlp graph": ("mlp", "graph"),
        "mlp fp16": ("mlp", "fp16"),
        "mlp prune": ("mlp", "prune:0.3"),
        "mlp prune kept": ("mlp", "prune:0.3", "--keep-failed"),
        "encoder int8-dynamic": ("encoder", "int8-dynamic"),
        "encoder auto": ("encoder", "auto"),
        "ocr_cls int8-static": ("ocr_cls", "int8-static"),
    }
    results = {}
    for label, (model, method, *extra) in plan.items():
        report = workspace / f"{label.replace(' ', '_')}.json"
        args = [repository / model, "--version", "1", "--method", method, "--samples", sample_files[model], *FAST, *extra]
        results[label] = optimize(*args, report=report)
    results["sources unchanged"] = Run(int(before != {name: digest(repository / name / "1") for name in before}), "", "", None)
    return results


@pytest.fixture(scope="module")
def client(repository: Path, runs: dict[str, Run], workspace: Path) -> Iterator[grpcclient.InferenceServerClient]:
    with ServerProcess([repository], log_path=workspace / "server.log") as server:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 120)
        with grpcclient.InferenceServerClient(server.grpc_url) as triton:
            yield triton


def served(client: grpcclient.InferenceServerClient, model: str, version: str, name: str, array: np.ndarray) -> dict[str, np.ndarray]:
    """Every output, for the rows of ``array`` sent BATCH at a time (one request each)."""
    metadata = client.get_model_metadata(model, version)
    outputs: dict[str, list[np.ndarray]] = {o.name: [] for o in metadata.outputs}
    datatype = metadata.inputs[0].datatype
    for start in range(0, len(array), BATCH):
        tensor = grpcclient.InferInput(name, list(array[start : start + BATCH].shape), datatype)
        tensor.set_data_from_numpy(array[start : start + BATCH])
        result = client.infer(model, [tensor], model_version=version, client_timeout=60)
        assert result.get_response().model_version == version
        for output in outputs:
            outputs[output].append(result.as_numpy(output))
    return {output: np.concatenate(values) for output, values in outputs.items()}


def independent_accuracy(reference: np.ndarray, candidate: np.ndarray, classes: bool) -> dict[str, float | None]:
    a, b = reference.astype(np.float64).ravel(), candidate.astype(np.float64).ravel()
    return {
        "max_abs_error": float(np.max(np.abs(a - b))),
        "mean_abs_error": float(np.mean(np.abs(a - b))),
        "cosine": float(a @ b / (np.linalg.norm(a) * np.linalg.norm(b))),
        "top1_agreement": float(np.mean(reference.argmax(-1) == candidate.argmax(-1))) if classes else None,
    }


def check_report_agrees(
    client: grpcclient.InferenceServerClient, model: str, run: Run, input_name: str, evaluation: np.ndarray, classes: set[str]
) -> None:
    assert run.report is not None
    version = str(run.report["version"])
    source, optimized = served(client, model, "1", input_name, evaluation), served(client, model, version, input_name, evaluation)
    reported = run.report["accuracy"]
    assert isinstance(reported, dict) and set(reported) == set(source)
    for output in source:
        mine = independent_accuracy(source[output], optimized[output], output in classes)
        theirs = reported[output]
        # The server runs with all cores and the CLI with one thread: sums may differ in the last bits.
        for metric in ("max_abs_error", "mean_abs_error", "cosine"):
            assert mine[metric] == pytest.approx(theirs[metric], rel=2e-3, abs=2e-5), (output, metric, mine, theirs)
        if mine["top1_agreement"] is None:
            assert theirs["top1_agreement"] is None
        else:
            assert abs(mine["top1_agreement"] - theirs["top1_agreement"]) <= 1.0 / evaluation.shape[0] + 1e-9


def test_the_source_versions_are_never_modified(runs: dict[str, Run]) -> None:
    assert runs["sources unchanged"].code == 0


def test_each_method_writes_a_version_the_server_serves(runs: dict[str, Run], client: grpcclient.InferenceServerClient) -> None:
    written = {label: run for label, run in runs.items() if run.report is not None and run.report["version"] is not None}
    assert sorted(written) == [
        "encoder auto",
        "encoder int8-dynamic",
        "mlp fp16",
        "mlp graph",
        "mlp int8-dynamic",
        "mlp prune kept",
        "ocr_cls int8-static",
    ]
    for label, run in written.items():
        model = label.split()[0]
        version = str(run.report["version"])  # type: ignore[index]
        assert client.is_model_ready(model, version), label
        assert f"wrote {REPO_ROOT}" not in run.stdout  # written into the test repository, not the checkout
        stored = json.loads(Path(run.stdout.split("wrote ")[-1].strip(), "optimization.json").read_text())
        assert stored == run.report, label  # optimization.json holds exactly the report printed
    methods = {label: run.report["method"] for label, run in written.items()}  # type: ignore[index]
    assert methods["encoder auto"] in ("int8-dynamic", "int8-static", "fp16", "graph")


def test_mlp_reports_agree_with_served_outputs(
    runs: dict[str, Run], client: grpcclient.InferenceServerClient, sample_files: dict[str, Path]
) -> None:
    evaluation = np.load(sample_files["mlp"])["input"]
    for label in ("mlp int8-dynamic", "mlp graph", "mlp fp16", "mlp prune kept"):
        run = runs[label]
        assert run.report is not None and run.report["samples"] == {
            "count": 24,
            "source": "file",
            "path": str(sample_files["mlp"]),
            "calibration": 0,
            "evaluation": 24,
        }
        check_report_agrees(client, "mlp", run, "input", evaluation, set())
    graph = runs["mlp graph"].report
    assert graph is not None and graph["accuracy"]["output"]["max_abs_error"] < 1e-4  # type: ignore[index]


def test_int8_dynamic_on_the_encoder_is_smaller_and_close(
    runs: dict[str, Run], client: grpcclient.InferenceServerClient, sample_files: dict[str, Path]
) -> None:
    run = runs["encoder int8-dynamic"]
    assert run.code == 0 and run.report is not None, run.stderr
    size = run.report["size_bytes"]
    assert isinstance(size, dict) and size["after"] < 0.5 * size["before"]
    assert set(run.report["latency_ms"]) == {"1", "8"} and set(run.report["throughput_per_s"]) == {"1", "8"}  # type: ignore[arg-type]
    assert run.report["gate"]["passed"] is True  # type: ignore[index]
    check_report_agrees(client, "encoder", run, "input_ids", np.load(sample_files["encoder"])["input_ids"], set())


def test_int8_static_on_real_text_lines(
    runs: dict[str, Run], client: grpcclient.InferenceServerClient, sample_files: dict[str, Path]
) -> None:
    run = runs["ocr_cls int8-static"]
    assert run.report is not None, run.stderr
    samples = run.report["samples"]
    assert isinstance(samples, dict) and (samples["calibration"], samples["evaluation"]) == (16, 16)
    settings = run.report["method_settings"]
    assert isinstance(settings, dict) and settings["format"] == "QDQ" and settings["calibration"] == "minmax"
    cpu = run.report["cpu"]
    assert isinstance(cpu, dict) and settings["reduce_range"] is (cpu["machine"] == "x86_64" and not cpu["vnni"])
    # The first half calibrated; the report compares on the second half, and so does this test.
    evaluation = np.load(sample_files["ocr_cls"])["x"][16:]
    check_report_agrees(client, "ocr_cls", run, "x", evaluation, {OCR_OUTPUT})


def test_a_failing_gate_writes_nothing_unless_kept(runs: dict[str, Run], repository: Path) -> None:
    failed, kept = runs["mlp prune"], runs["mlp prune kept"]
    assert failed.code == 2 and kept.code == 2
    assert failed.report is not None and failed.report["version"] is None and failed.report["gate"]["passed"] is False  # type: ignore[index]
    assert "gate: FAILED" in failed.stdout and "wrote" not in failed.stdout
    assert kept.report is not None and kept.report["version"] is not None
    chains = kept.report["method_settings"]["chains"]  # type: ignore[index]
    assert [(c["before"], c["after"]) for c in chains] == [(256, 179), (256, 179)]
    versions = sorted(int(p.name) for p in (repository / "mlp").iterdir() if p.name.isdigit())
    assert versions == [1, 2, 3, 4, 5]  # int8-dynamic, graph, fp16, the kept prune: the failed one left no trace
    assert not [p for p in (repository / "mlp").iterdir() if p.name.startswith(".")]


@pytest.mark.parametrize(
    ("arrays", "message"),
    [
        ({"inputs": np.zeros((4, 64), np.float32)}, "array 'inputs' is not an input of model 'mlp' (inputs: input)"),
        ({"input": np.zeros((4, 64), np.float64)}, "array 'input' is float64, input 'input' of model 'mlp' is float32 (FP32)"),
        ({"input": np.zeros((4, 32), np.float32)}, "array 'input' has shape [4, 32], input 'input' of model 'mlp' needs [N,64]"),
    ],
)
def test_samples_that_do_not_fit_are_refused(
    arrays: dict[str, np.ndarray], message: str, repository: Path, tmp_path: Path, runs: dict[str, Run]
) -> None:
    path = tmp_path / "bad.npz"
    np.savez(path, **arrays)
    before = sorted(p.name for p in (repository / "mlp").iterdir())

    run = optimize(repository / "mlp", "--method", "int8-dynamic", "--samples", path, *FAST)

    assert run.code == 1 and message in run.stderr and run.stdout == ""
    assert sorted(p.name for p in (repository / "mlp").iterdir()) == before


def test_models_a_method_cannot_handle_are_refused_by_name(tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    for name, model in (("simple", onnx_models.simple()), ("celu", onnx_models.celu_head()), ("branched", onnx_models.branched_mlp())):
        (repo / name / "1").mkdir(parents=True)
        onnx_models.save(model, str(repo / name / "1" / "model.onnx"))
    (repo / "ocr" / "1").mkdir(parents=True)
    shutil.copy(ocr_samples.CLS_MODEL, repo / "ocr" / "1" / "model.onnx")
    cases = [
        (("simple", "int8-dynamic", "--input-range", "0,9"), "nothing in model 'simple' can be quantized: its ops (Add, Sub)"),
        (("celu", "fp16"), "operator Celu (node '<unnamed>') does not accept the types fp16 gave it; keep it in FP32 with --fp32-ops Celu"),
        (("branched", "prune:0.3"), "model 'branched' has no layers to prune"),
        (("ocr", "int8-static"), "input 'x' has dynamic dims [3,-1,-1] that random calibration data cannot cover: give --shape x:3,N,N"),
        (("celu", "int8-dynamic", "--to", "1"), "--to 1: version 1 of model 'celu' already exists; it is never overwritten"),
        (("missing", "graph"), "does not exist (expected REPOSITORY/MODEL)"),
    ]
    for (model, method, *extra), message in cases:
        run = optimize(repo / model, "--method", method, *FAST, *extra)
        assert (run.code, run.stdout) == (1, ""), (model, method, run.stderr)
        assert message in run.stderr, run.stderr
    assert sorted(str(p.relative_to(repo)) for p in repo.rglob("*") if p.is_dir()) == [
        "branched",
        "branched/1",
        "celu",
        "celu/1",
        "ocr",
        "ocr/1",
        "simple",
        "simple/1",
    ]
    # Kept in FP32, the same model converts.
    assert optimize(repo / "celu", "--method", "fp16", "--fp32-ops", "Celu", *FAST).code == 0


def test_the_cli_entry_points_and_a_missing_extra(tmp_path: Path) -> None:
    model_dir = tmp_path / "mlp"
    (model_dir / "1").mkdir(parents=True)
    onnx_models.save(onnx_models.mlp((16, 32, 32, 4)), str(model_dir / "1" / "model.onnx"))
    ortserve = Path(sys.executable).with_name("ortserve")
    done = subprocess.run(
        [str(ortserve), "optimize", str(model_dir), "--method", "graph", *FAST], capture_output=True, text=True, timeout=120
    )
    assert done.returncode == 0, done.stderr
    assert "model mlp: graph, version 1 -> 2" in done.stdout and (model_dir / "2" / "optimization.json").is_file()

    # Without onnxconverter-common (made unimportable), fp16 says which extra to install.
    code = "import sys; sys.modules['onnxconverter_common'] = None; from server.cli import main; sys.exit(main(sys.argv[1:]))"
    done = subprocess.run(
        [sys.executable, "-c", code, "optimize", str(model_dir), "--method", "fp16"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 1
    assert "needs onnxconverter-common: install the 'optimize' extra (pip install 'ortserve[optimize]')" in done.stderr
    done = subprocess.run(
        [sys.executable, "-m", "server", "optimize", str(model_dir), "--method", "fp16", "--timing-runs", "0"],
        capture_output=True,
        text=True,
        timeout=120,
        cwd=REPO_ROOT,
    )
    assert done.returncode == 1 and "--timing-runs" in done.stderr
    assert sorted(p.name for p in model_dir.iterdir()) == ["1", "2"]


def test_poll_mode_with_latest_swaps_to_the_optimized_version(tmp_path: Path) -> None:
    repo = tmp_path / "live_repo"
    (repo / "live" / "1").mkdir(parents=True)
    onnx_models.save(onnx_models.mlp((64, 256, 256, 10)), str(repo / "live" / "1" / "model.onnx"))
    (repo / "live" / "config.pbtxt").write_text("max_batch_size: 8\n")  # version_policy: latest 1
    args = ["--model-control-mode", "poll", "--repository-poll-secs", "0.2"]
    with ServerProcess([repo], args, log_path=tmp_path / "poll.log") as server:
        server.wait_until(f"http://{server.http_url}/v2/health/ready", 60)
        with grpcclient.InferenceServerClient(server.grpc_url) as triton:
            assert optimize(repo / "live", "--method", "int8-dynamic", *FAST).code == 0

            wait_until(lambda: triton.is_model_ready("live", "2"), 60, "version 2 READY")
            wait_until(lambda: not triton.is_model_ready("live", "1"), 60, "version 1 unloaded")
            tensor = grpcclient.InferInput("input", [1, 64], "FP32")
            tensor.set_data_from_numpy(np.ones((1, 64), np.float32))
            assert triton.infer("live", [tensor]).get_response().model_version == "2"
