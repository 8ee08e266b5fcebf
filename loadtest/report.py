"""A run's report: a printed table, JSON, CSV and a throughput-vs-p99 plot."""

from __future__ import annotations

import csv
import json
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from loadtest.raw_ort import CeilingResult
from loadtest.runner import RunReport, StepResult

STEP_COLUMNS = [
    "step",
    "req/s",
    "infer/s",
    "p50 µs",
    "p90 µs",
    "p95 µs",
    "p99 µs",
    "errors",
    "client cpu",
    "avg batch",
    "queue µs",
    "compute µs",
    "ceiling b",
    "ceiling infer/s",
    "ratio",
    "busy",
    "mix ceiling",
    "mix ratio",
]


def cell(value: object) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.1f}" if abs(value) >= 10 else f"{value:.3g}"
    return str(value)


def table(headers: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """Plain text columns; numbers right-aligned, text left-aligned."""
    texts = [[cell(v) for v in row] for row in rows]
    widths = [max([len(h), *(len(t[i]) for t in texts)]) for i, h in enumerate(headers)]
    lines = [" | ".join(h.ljust(w) for h, w in zip(headers, widths)), "-+-".join("-" * w for w in widths)]
    for values, row in zip(rows, texts):
        lines.append(" | ".join(t.ljust(w) if isinstance(v, str) else t.rjust(w) for v, t, w in zip(values, row, widths)))
    return "\n".join(lines)


def step_label(step: StepResult) -> str:
    return f"c={int(step.level)}" if step.mode == "concurrency" else f"r={step.level:g}/s"


def errors_text(errors: dict[str, int]) -> str:
    return ";".join(f"{code}:{count}" for code, count in errors.items()) or "0"


def step_row(step: StepResult) -> list[object]:
    c, s = step.client, step.server
    label = step_label(step) + (f" ({step.achieved_ratio:.0%})" if step.achieved_ratio is not None else "")
    return [
        label,
        c.throughput_rps,
        c.infer_per_s,
        c.p50_us,
        c.p90_us,
        c.p95_us,
        c.p99_us,
        errors_text(c.errors),
        c.client_cpu,
        s.avg_batch if s else None,
        s.queue_avg_us if s else None,
        s.compute_avg_us if s else None,
        step.ceiling_batch,
        step.ceiling_infer_per_s,
        step.ratio_to_ceiling,
        s.busy_share if s else None,
        step.ceiling_mix_infer_per_s,
        step.ratio_to_mix_ceiling,
    ]


def render(report: RunReport) -> str:
    t = report.target
    shapes = ", ".join(f"{i.name} {i.datatype} {list(i.shape)}" for i in t.inputs)
    head = (
        f"{t.model} at {t.url} ({'streaming' if t.streaming else 'unary'}, {t.processes} client process(es), "
        f"{t.rows_per_request} row(s)/request; inputs {shapes}; server statistics {report.statistics})"
    )
    parts = [head, table(STEP_COLUMNS, [step_row(s) for s in report.steps])]
    if report.ceilings:
        parts.append(ceiling_table(report.ceilings))
    parts += [f"warning: {w}" for w in report.warnings]
    return "\n\n".join(parts)


def ceiling_table(results: Sequence[CeilingResult]) -> str:
    rows = [[r.batch, r.threads, r.runs, r.throughput, r.p50_us, r.p99_us] for r in results]
    return "raw InferenceSession.run (the ceiling):\n" + table(["batch", "threads", "runs", "infer/s", "p50 µs", "p99 µs"], rows)


def to_json(report: RunReport) -> dict[str, object]:
    return asdict(report)


def csv_rows(report: RunReport) -> list[dict[str, object]]:
    rows = []
    for step in report.steps:
        row: dict[str, object] = {"model": report.target.model, "mode": step.mode, "level": step.level}
        row.update({k: v for k, v in asdict(step.client).items() if k != "errors"})
        row["errors"] = errors_text(step.client.errors)
        server = asdict(step.server) if step.server else {}
        for key in ("avg_batch", "queue_avg_us", "compute_avg_us", "compute_infer_avg_us", "executions", "inferences", "busy_share"):
            row[f"server_{key}"] = server.get(key)
        row.update(achieved_ratio=step.achieved_ratio, ceiling_batch=step.ceiling_batch)
        row.update(ceiling_infer_per_s=step.ceiling_infer_per_s, ratio_to_ceiling=step.ratio_to_ceiling)
        row.update(ceiling_mix_infer_per_s=step.ceiling_mix_infer_per_s, ratio_to_mix_ceiling=step.ratio_to_mix_ceiling)
        rows.append(row)
    return rows


def write(report: RunReport, out_dir: Path, name: str) -> list[Path]:
    """``name``.json, ``name``.csv and ``name``.png in ``out_dir``; returns the paths written."""
    out_dir.mkdir(parents=True, exist_ok=True)
    json_path, csv_path, png_path = (out_dir / f"{name}.{ext}" for ext in ("json", "csv", "png"))
    json_path.write_text(json.dumps(to_json(report), indent=2) + "\n")
    rows = csv_rows(report)
    with csv_path.open("w", newline="") as handle:
        if rows:
            writer = csv.DictWriter(handle, fieldnames=list(rows[0]))
            writer.writeheader()
            writer.writerows(rows)
    plot(report, png_path)
    return [json_path, csv_path, png_path]


def plot(report: RunReport, path: Path) -> None:
    """Throughput (x) against p99 latency (y), one point per step, labelled with its level; the
    ceilings at the steps' average formed batches as vertical lines. matplotlib is imported here so
    the rest runs without it."""
    import matplotlib

    matplotlib.use("Agg")  # files only, never a window
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(7, 4.5))
    for mode in ("concurrency", "rate"):
        steps = [s for s in report.steps if s.mode == mode and s.client.p99_us is not None]
        if not steps:
            continue
        xs, ys = [s.client.infer_per_s for s in steps], [s.client.p99_us / 1e3 for s in steps]  # type: ignore[operator]
        axes.plot(xs, ys, marker="o", label=f"{mode} steps")
        for step, x, y in zip(steps, xs, ys):
            axes.annotate(step_label(step), (x, y), textcoords="offset points", xytext=(4, 4), fontsize=8)
    shown = {step.ceiling_batch for step in report.steps}  # the mix's extra sizes would only clutter
    for result in (r for r in report.ceilings if r.batch in shown):
        axes.axvline(result.throughput, linestyle="--", color="grey", linewidth=1)
        axes.annotate(
            f"raw ORT b={result.batch}", (result.throughput, 0), rotation=90, fontsize=7, va="bottom", xycoords=("data", "axes fraction")
        )
    axes.set_xlabel("throughput (inferences/s)")
    axes.set_ylabel("p99 latency (ms)")
    axes.set_title(f"{report.target.model}: throughput vs p99 latency")
    axes.grid(True, alpha=0.3)
    axes.legend(loc="best")
    figure.tight_layout()
    figure.savefig(path, dpi=100)
    plt.close(figure)
