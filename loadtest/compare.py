"""``python -m loadtest compare``: the same load against two versions of one model.

Typical use: a model served with ``version_policy: all`` (or ``specific``) holding its original
version and one that ``ortserve optimize`` wrote. Each level runs against both versions, one after
the other, the order alternating from level to level (A B, B A, ...) so that drift on a shared
machine does not always favour the same version. One table, one JSON file, one plot.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path

from loadtest import runner
from loadtest.report import errors_text, step_label, table
from loadtest.runner import RunOptions, RunReport, StepResult

COLUMNS = [
    "step",
    "version",
    "req/s",
    "infer/s",
    "p50 µs",
    "p99 µs",
    "errors",
    "avg batch",
    "compute µs",
    "infer/s vs first",
    "p99 vs first",
]


@dataclass
class Comparison:
    model: str
    versions: tuple[str, str]
    reports: dict[str, RunReport] = field(default_factory=dict)  # version → every level's step, in order


def levels(options: RunOptions) -> list[RunOptions]:
    """One option set per load level (a concurrency or a rate)."""
    steps = [replace(options, concurrency=(c,), rates=()) for c in options.concurrency]
    return steps + [replace(options, concurrency=(), rates=(r,)) for r in options.rates]


def compare(options: RunOptions, versions: tuple[str, str]) -> Comparison:
    """Blocks for every level of both versions (see runner.run: the caller needs a __main__ guard)."""
    result = Comparison(options.model, versions)
    for index, level in enumerate(levels(options)):
        order = versions if index % 2 == 0 else versions[::-1]
        for version in order:
            print(f"version {version}:", flush=True)
            report = runner.run(replace(level, version=version))
            if version not in result.reports:
                result.reports[version] = replace(report, steps=[])
            else:
                result.reports[version].warnings += report.warnings
            result.reports[version].steps += report.steps
    return result


def render(comparison: Comparison) -> str:
    first, second = comparison.versions
    rows = []
    for a, b in zip(comparison.reports[first].steps, comparison.reports[second].steps):
        rows.append(_row(a, first, None))
        rows.append(_row(b, second, a))
    head = f"{comparison.model}: version {first} vs version {second}, the same load"
    warnings = [f"warning: version {v}: {w}" for v, report in comparison.reports.items() for w in report.warnings]
    return "\n\n".join([head, table(COLUMNS, rows), *warnings])


def _row(step: StepResult, version: str, reference: StepResult | None) -> list[object]:
    c, s = step.client, step.server
    throughput_ratio = _ratio(c.infer_per_s, reference.client.infer_per_s) if reference else None
    p99_ratio = _ratio(c.p99_us, reference.client.p99_us) if reference else None
    return [
        step_label(step),
        version,
        c.throughput_rps,
        c.infer_per_s,
        c.p50_us,
        c.p99_us,
        errors_text(c.errors),
        s.avg_batch if s else None,
        s.compute_avg_us if s else None,
        throughput_ratio,
        p99_ratio,
    ]


def _ratio(value: float | None, reference: float | None) -> float | None:
    return round(value / reference, 3) if value is not None and reference else None


def write(comparison: Comparison, out_dir: Path, name: str) -> list[Path]:
    """``name``.json and ``name``.png in ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, png_path = out_dir / f"{name}.json", out_dir / f"{name}.png"
    body = {
        "model": comparison.model,
        "versions": list(comparison.versions),
        "reports": {v: asdict(r) for v, r in comparison.reports.items()},
    }
    json_path.write_text(json.dumps(body, indent=2) + "\n")
    plot(comparison, png_path)
    return [json_path, png_path]


def plot(comparison: Comparison, path: Path) -> None:
    """Throughput (x) against p99 (y), one line per version, points labelled with their level."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for version, report in comparison.reports.items():
        steps = [s for s in report.steps if s.client.p99_us is not None]
        xs, ys = [s.client.infer_per_s for s in steps], [s.client.p99_us / 1e3 for s in steps]  # type: ignore[operator]
        axes.plot(xs, ys, marker="o", label=f"version {version}")
        for step, x, y in zip(steps, xs, ys):
            axes.annotate(step_label(step), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    axes.set_xlabel("throughput (inferences/s)")
    axes.set_ylabel("p99 latency (ms)")
    axes.set_title(f"{comparison.model}: version {' vs '.join(comparison.versions)}")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
