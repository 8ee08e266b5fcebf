"""The report: ``optimization.json`` (stable field names) and the same content as a table."""

from __future__ import annotations

import datetime
from collections.abc import Sequence
from dataclasses import dataclass, field

import onnxruntime as ort

from server.optimize.cpu import CpuInfo
from server.optimize.evaluation import Evaluation
from server.optimize.gate import GateResult
from server.optimize.samples import Samples
from server.optimize.source import SourceVersion


@dataclass
class RunFacts:
    """What a report says besides the chosen candidate's figures."""

    source: SourceVersion
    samples: Samples
    calibration_count: int
    evaluation_count: int
    cpu: CpuInfo
    provider: str
    threads: int
    runs: int
    method: str
    version: int | None = None  # None: not written
    notes: list[str] = field(default_factory=list)
    auto: list[dict[str, object]] | None = None


def build(facts: RunFacts, chosen: Evaluation | None, gate: GateResult) -> dict[str, object]:
    report: dict[str, object] = {
        "model": facts.source.name,
        "method": chosen.candidate.method if chosen else facts.method,
        "method_settings": chosen.candidate.settings if chosen else {},
        "source_version": facts.source.version,
        "version": facts.version,
        "execution_provider": facts.provider,
        "intra_op_threads": facts.threads,
        "cpu": facts.cpu.to_json(),
        "onnxruntime_version": ort.__version__,
        "size_bytes": {"before": facts.source.model_path.stat().st_size, "after": chosen.size_bytes if chosen else None},
        "latency_ms": {},
        "throughput_per_s": {},
        "accuracy": {name: value.to_json() for name, value in chosen.accuracy.items()} if chosen else {},
        "samples": _samples(facts),
        "gate": gate.to_json(),
        "timing_runs": facts.runs,
        "notes": [*facts.notes, *(chosen.candidate.notes if chosen else [])],
        "warnings": list(facts.samples.warnings),
        "created": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
    }
    if chosen:
        for point in chosen.speed:
            key = str(point.batch)
            report["latency_ms"][key] = {  # type: ignore[index]
                "before": {"p50": point.before.p50_ms, "p99": point.before.p99_ms},
                "after": {"p50": point.after.p50_ms, "p99": point.after.p99_ms},
            }
            report["throughput_per_s"][key] = {  # type: ignore[index]
                "before": point.before.throughput_per_s,
                "after": point.after.throughput_per_s,
                "ratio": round(point.speedup, 3),
            }
    if facts.auto is not None:
        report["auto"] = {"candidates": facts.auto}
    return report


def _samples(facts: RunFacts) -> dict[str, object]:
    samples = facts.samples
    return {
        "count": samples.count,
        "source": samples.source,
        "path": samples.path,
        "calibration": facts.calibration_count,
        "evaluation": facts.evaluation_count,
    }


def render(report: dict[str, object]) -> str:
    """The report as text: a head, speed and size, accuracy, the gate, notes."""
    cpu = report["cpu"]
    assert isinstance(cpu, dict)
    samples = report["samples"]
    assert isinstance(samples, dict)
    version = report["version"] if report["version"] is not None else "not written"
    lines = [
        f"model {report['model']}: {report['method']}, version {report['source_version']} -> {version}",
        f"{report['execution_provider']} ({report['intra_op_threads']} intra-op thread(s)), onnxruntime {report['onnxruntime_version']}, "
        f"CPU {cpu['model_name']} (VNNI {'yes' if cpu['vnni'] else 'no'}, AVX-512 {'yes' if cpu['avx512'] else 'no'})",
        f"samples: {samples['count']} from {samples['source']}{' ' + str(samples['path']) if samples['path'] else ''} "
        f"({samples['calibration']} calibrate, {samples['evaluation']} evaluate)",
        "",
        _table(["", "before", "after", "after/before"], _speed_rows(report)),
    ]
    accuracy = report["accuracy"]
    assert isinstance(accuracy, dict)
    if accuracy:
        rows = [[name, a["max_abs_error"], a["mean_abs_error"], a["cosine"], a["top1_agreement"]] for name, a in accuracy.items()]
        lines += ["", _table(["output", "max abs error", "mean abs error", "cosine", "top-1 agreement"], rows)]
    lines += ["", _gate_line(report), *_auto_lines(report)]
    lines += [f"note: {note}" for note in report["notes"]]  # type: ignore[attr-defined]
    lines += [f"warning: {warning}" for warning in report["warnings"]]  # type: ignore[attr-defined]
    return "\n".join(lines)


def _speed_rows(report: dict[str, object]) -> list[list[object]]:
    size = report["size_bytes"]
    assert isinstance(size, dict)
    rows: list[list[object]] = [["size MB", size["before"] / 1e6, _div(size["after"], 1e6), _ratio(size["after"], size["before"])]]
    latency, throughput = report["latency_ms"], report["throughput_per_s"]
    assert isinstance(latency, dict) and isinstance(throughput, dict)
    for batch, values in latency.items():
        for percentile in ("p50", "p99"):
            before, after = values["before"][percentile], values["after"][percentile]
            rows.append([f"{percentile} ms, batch {batch}", before, after, _ratio(after, before)])
        t = throughput[batch]
        rows.append([f"throughput/s, batch {batch}", t["before"], t["after"], t["ratio"]])
    return rows


def _gate_line(report: dict[str, object]) -> str:
    gate = report["gate"]
    assert isinstance(gate, dict)
    limits = "; ".join(
        f"{output}: " + ", ".join(f"{m} <= {v:g}" for m, v in values.items()) for output, values in gate["thresholds"].items()
    )
    if gate["passed"]:
        return f"gate: passed (largest drops allowed: {limits or 'none'})"
    return f"gate: FAILED: {'; '.join(gate['failures'])} (largest drops allowed: {limits or 'none'})"


def _auto_lines(report: dict[str, object]) -> list[str]:
    auto = report.get("auto")
    if not isinstance(auto, dict):
        return []
    lines = []
    for entry in auto["candidates"]:
        if "skipped" in entry:
            lines.append(f"auto: {entry['method']}: skipped: {entry['skipped']}")
        else:
            verdict = "passed" if entry["passed"] else "failed the gate"
            lines.append(f"auto: {entry['method']}: {verdict}, {entry['speedup']:.2f}x throughput at batch {entry['batch']}")
    return lines


def _div(value: object, by: float) -> float | None:
    return value / by if isinstance(value, int | float) else None


def _ratio(after: object, before: object) -> float | None:
    if isinstance(after, int | float) and isinstance(before, int | float) and before:
        return round(after / before, 3)
    return None


def _cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.4g}" if abs(value) < 1000 else f"{value:.0f}"
    return str(value)


def _table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    texts = [[_cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(t[i]) for t in texts)]) for i, h in enumerate(headers)]
    lines = ["  ".join(h.ljust(w) if i == 0 else h.rjust(w) for i, (h, w) in enumerate(zip(headers, widths)))]
    lines += ["  ".join(t.ljust(w) if i == 0 else t.rjust(w) for i, (t, w) in enumerate(zip(row, widths))) for row in texts]
    return "\n".join(lines)
