"""One optimization run: source → samples → candidate(s) → measurement → gate → version.

Blocks for the whole run (minutes for large models); it is the ``ortserve optimize`` process's
only work and never runs inside a server.
"""

from __future__ import annotations

import json
import tempfile
from dataclasses import dataclass, field
from pathlib import Path

from server.optimize import accuracy, dependencies, report, samples
from server.optimize.cpu import read_cpu_info
from server.optimize.evaluation import Bench, Evaluation, accuracy_of, evaluate, run_all
from server.optimize.failure import EXIT_GATE_FAILED, EXIT_WRITTEN, OptimizeError
from server.optimize.gate import GateResult, parse_thresholds
from server.optimize.methods import AUTO_METHODS, MethodOptions, MethodSpec, parse_method, produce
from server.optimize.source import SourceVersion, locate, next_version
from server.optimize.speed import open_session
from server.optimize.version_writer import REPORT_FILENAME, write_version

# Rows per calibration and evaluation run (at most the model's max batch size: a dynamically
# quantized model computes its activation ranges per run, so a row's result depends on the rows it
# runs with, and the server never runs more than max_batch_size together); the largest batch size
# measured by default.
EVALUATION_BATCH_ROWS = 16
MAX_MEASURED_BATCH = 32


@dataclass(frozen=True)
class Request:
    model_dir: Path
    method: MethodSpec
    version: int | None = None
    to_version: int | None = None
    samples_path: Path | None = None
    random: samples.RandomSpec = field(default_factory=lambda: samples.RandomSpec(count=32, low=0.0, high=1.0, shapes={}))
    thresholds: dict[str, dict[str, float | None]] = field(default_factory=lambda: parse_thresholds([]))
    keep_failed: bool = False
    batch_sizes: tuple[int, ...] = ()  # () = 1 and the max batch size (capped at 32)
    runs: int = 50
    warmup: int = 5
    threads: int = 1
    provider: str = "CPUExecutionProvider"
    class_outputs: frozenset[str] = frozenset()
    default_max_batch_size: int = 4
    calibration_method: str = "minmax"
    per_channel: str = "auto"
    op_types: tuple[str, ...] | None = None
    exclude_nodes: tuple[str, ...] = ()
    fp32_ops: tuple[str, ...] = ()


@dataclass
class Outcome:
    report: dict[str, object]
    exit_code: int
    written: Path | None


def optimize(request: Request) -> Outcome:
    """Raises OptimizeError for bad input (nothing written)."""
    _require_packages(request.method)
    source = locate(request.model_dir, request.version, request.default_max_batch_size)
    version = next_version(request.model_dir, request.to_version)
    data = samples.load_samples(source, request.samples_path, request.random)
    calibrating = request.method.name in ("int8-static", "auto")
    calibration, evaluation = samples.split(data) if calibrating else ([], data.feeds)
    bench = _bench(request, source, data, evaluation)
    facts = report.RunFacts(
        source=source,
        samples=data,
        calibration_count=_count(calibration, data),
        evaluation_count=_count(evaluation, data),
        cpu=read_cpu_info(),
        provider=request.provider,
        threads=request.threads,
        runs=request.runs,
        method=request.method.label,
        notes=_source_notes(source),
    )
    options = MethodOptions(
        cpu=facts.cpu,
        calibration=samples.grouped(calibration, source.batching, _run_rows(source)),
        calibration_method=request.calibration_method,
        per_channel=request.per_channel,
        op_types=request.op_types,
        exclude_nodes=request.exclude_nodes,
        fp32_ops=request.fp32_ops,
        accuracy_score=lambda path: accuracy.score(accuracy_of(bench, path, "int8-static")),
    )
    with tempfile.TemporaryDirectory(prefix="ortserve-optimize-") as workdir:
        chosen, gate = _run_methods(request, source, Path(workdir), options, bench, facts)
        return _finish(request, source, version, facts, chosen, gate)


def _finish(
    request: Request, source: SourceVersion, version: int, facts: report.RunFacts, chosen: Evaluation | None, gate: GateResult
) -> Outcome:
    """Write the version when the gate passed (or --keep-failed); the report says which."""
    passed = chosen is not None and gate.passed
    written = None
    if chosen is not None and (passed or request.keep_failed):
        facts.version = version
        built = report.build(facts, chosen, gate)
        written = write_version(source.model_dir, version, chosen.candidate.path, source.filename, built)
    else:
        built = report.build(facts, chosen, gate)
    return Outcome(built, EXIT_WRITTEN if passed else EXIT_GATE_FAILED, written)


def _source_notes(source: SourceVersion) -> list[str]:
    """Say so when the version read is itself the output of an earlier run."""
    earlier = source.model_dir / str(source.version) / REPORT_FILENAME
    try:
        made = json.loads(earlier.read_text())
    except (OSError, ValueError):
        return []
    method, origin = made.get("method", "?"), made.get("source_version", "?")
    return [f"version {source.version} is itself optimized ({method} of version {origin}); --version chooses another source"]


def _require_packages(method: MethodSpec) -> None:
    needed = ["onnx"]
    if method.name in ("int8-dynamic", "int8-static", "auto"):
        needed.append("onnxruntime.quantization")
    if method.name in ("fp16", "auto"):
        needed.append("onnxconverter_common")
    dependencies.require(*needed)


def _bench(request: Request, source: SourceVersion, data: samples.Samples, evaluation: list[samples.Feeds]) -> Bench:
    """The source session, its outputs on the evaluation samples, and the timing inputs."""
    session = open_session(source.model_path, source.config, request.threads, request.provider)
    if request.provider not in session.get_providers():
        raise OptimizeError(f"--provider {request.provider} is not available here (available: {', '.join(session.get_providers())})")
    batches = samples.grouped(evaluation, source.batching, _run_rows(source))
    reference = run_all(session, batches, f"model '{source.name}' version {source.version}")
    unknown = sorted(request.class_outputs - set(reference))
    if unknown:
        raise OptimizeError(
            f"--classes names output '{unknown[0]}', which model '{source.name}' does not have (outputs: {', '.join(reference)})"
        )
    sizes = _batch_sizes(request, source)
    return Bench(
        config=source.config,
        source=session,
        evaluation=batches,
        reference=reference,
        class_outputs=accuracy.class_like_outputs(reference, source.labelled_outputs(), set(request.class_outputs)),
        timing_feeds={size: samples.batch_of(data.feeds, size, source.batching) for size in sizes},
        thresholds=request.thresholds,
        threads=request.threads,
        provider=request.provider,
        runs=request.runs,
        warmup=request.warmup,
    )


def _run_rows(source: SourceVersion) -> int:
    return max(1, min(EVALUATION_BATCH_ROWS, source.config.max_batch_size))


def _batch_sizes(request: Request, source: SourceVersion) -> tuple[int, ...]:
    if not source.batching:
        if request.batch_sizes and request.batch_sizes != (1,):
            raise OptimizeError(f"--batch-sizes: model '{source.name}' does not batch (max_batch_size 0); only batch 1 is measured")
        return (1,)
    if request.batch_sizes:
        return tuple(sorted(set(request.batch_sizes)))
    return tuple(sorted({1, min(source.config.max_batch_size, MAX_MEASURED_BATCH)}))


def _run_methods(
    request: Request, source: SourceVersion, workdir: Path, options: MethodOptions, bench: Bench, facts: report.RunFacts
) -> tuple[Evaluation | None, GateResult]:
    """The evaluated candidate to keep (auto: the fastest that passes and beats the source) and its gate."""
    if request.method.name != "auto":
        candidate = produce(request.method, source.model_path, source.name, workdir, options)
        result = evaluate(bench, candidate)
        _note_slower(result, facts)
        return result, result.gate
    facts.auto = []
    results = []
    for name in AUTO_METHODS:
        (workdir / name).mkdir()
        try:
            candidate = produce(parse_method(name), source.model_path, source.name, workdir / name, options)
            result = evaluate(bench, candidate)
        except OptimizeError as error:
            facts.auto.append({"method": name, "skipped": str(error)})
            continue
        results.append(result)
        batch = result.speed[-1].batch
        facts.auto.append({"method": name, "passed": result.gate.passed, "speedup": round(result.speedup, 3), "batch": batch})
    return _choose(results, facts)


def _choose(results: list[Evaluation], facts: report.RunFacts) -> tuple[Evaluation | None, GateResult]:
    eligible = [r for r in results if r.gate.passed and r.speedup > 1.0]
    if eligible:
        best = max(eligible, key=lambda r: r.speedup)
        facts.notes.append(f"auto kept {best.candidate.method}: the fastest of {len(results)} candidate(s) that passed the gate")
        return best, best.gate
    failures = ["auto: no candidate both passed the accuracy gate and ran faster than the source"]
    return None, GateResult({}, False, failures)


def _note_slower(result: Evaluation, facts: report.RunFacts) -> None:
    """Say plainly when the result is slower than what it replaces on this execution provider."""
    if all(p.speedup < 1.0 for p in result.speed):
        ratios = ", ".join(f"{p.speedup:.2f}x at batch {p.batch}" for p in result.speed)
        facts.notes.append(f"{result.candidate.method} runs slower than the source on {facts.provider} here: {ratios}")
    if result.candidate.method == "fp16" and facts.provider == "CPUExecutionProvider":
        facts.notes.append(
            "ONNX Runtime's CPU provider has no FP16 kernels for most ops: it inserts casts and computes in FP32, "
            "so FP16 halves the file, not the time; it pays off on GPUs"
        )


def _count(feeds: list[samples.Feeds], data: samples.Samples) -> int:
    return samples.Samples(feeds, data.batching, data.source).count
