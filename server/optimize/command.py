"""``ortserve optimize REPOSITORY/MODEL --method M [options]``: flags → Request → report.

Exit status: 0 a version was written; 1 bad input (a message says what; nothing written, and
this includes malformed flags); 2 the accuracy gate failed (the report is printed; nothing is
written unless --keep-failed, which writes the version and still exits 2).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import warnings
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NoReturn

from server.optimize.failure import EXIT_BAD_INPUT, OptimizeError
from server.optimize.gate import DEFAULTS, parse_thresholds
from server.optimize.methods import CALIBRATION_METHODS, METHODS, parse_method
from server.optimize.samples import RandomSpec

if TYPE_CHECKING:
    from server.optimize.pipeline import Request


class _Parser(argparse.ArgumentParser):
    """Flag errors are bad input: one line, exit status 1 (2 means the gate failed)."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"ortserve optimize: error: {message}\n")


def build_parser() -> _Parser:
    p = _Parser(prog="ortserve optimize", description="Write an optimized version of a model, with an accuracy and speed report.")
    p.add_argument("model", type=Path, help="the model directory: REPOSITORY/MODEL")
    p.add_argument("--method", required=True, help=f"one of {', '.join(METHODS)}")
    p.add_argument("--version", type=int, help="the version to read (default: the highest)")
    p.add_argument("--to", type=int, dest="to_version", help="the version to write (default: one past the highest)")
    p.add_argument("--samples", type=Path, help="an .npz file (arrays named after the inputs, first dim = samples) or a capture directory")
    p.add_argument("--input-range", default="0,1", help="random data without --samples: LOW,HIGH (default 0,1; integers LOW..HIGH)")
    p.add_argument("--random-samples", type=int, default=32, help="how many random samples (default 32)")
    p.add_argument("--shape", action="append", default=[], help="random data: NAME:D1,D2 for an input's dynamic dims (after the batch dim)")
    p.add_argument("--max-accuracy-drop", action="append", default=[], help=f"[OUTPUT:]METRIC=VALUE|off; metrics {', '.join(DEFAULTS)}")
    p.add_argument("--keep-failed", action="store_true", help="write the version even when it fails the gate (exit status stays 2)")
    p.add_argument("--classes", action="append", default=[], help="an output holding class scores (top-1 agreement); repeatable")
    p.add_argument("--calibration", choices=CALIBRATION_METHODS, default="minmax", help="int8-static activation ranges (default minmax)")
    p.add_argument(
        "--per-channel", choices=("auto", "true", "false"), default="auto", help="int8-static: auto tries both, keeps the closer"
    )
    p.add_argument("--op-types", help="comma-separated op types to quantize ('all': every op ONNX Runtime can, static only)")
    p.add_argument("--exclude-nodes", default="", help="comma-separated node names to leave in FP32 (quantization)")
    p.add_argument("--fp32-ops", default="", help="fp16: comma-separated op types to keep in FP32")
    p.add_argument("--batch-sizes", help="batch sizes to time (default: 1 and the max batch size, capped at 32)")
    p.add_argument("--timing-runs", type=int, default=50, help="measured runs per batch size and model (default 50)")
    p.add_argument("--warmup-runs", type=int, default=5)
    p.add_argument("--threads", type=int, default=1, help="intra-op threads while measuring (default 1; see the README)")
    p.add_argument("--provider", default="CPUExecutionProvider", help="the execution provider to measure on")
    p.add_argument("--default-max-batch-size", type=int, default=4, help="as the server's --backend-config default-max-batch-size")
    p.add_argument("--report-json", type=Path, help="also write the report here (useful when nothing is written)")
    return p


def parse_request(argv: Sequence[str]) -> tuple[Request, Path | None]:
    """The run and where else to write its report. Raises SystemExit(1) for malformed flags and
    OptimizeError for values that cannot work."""
    from server.optimize.pipeline import Request  # pulls in ONNX Runtime: not needed for --help

    args = build_parser().parse_args(argv)
    if args.timing_runs < 1 or args.warmup_runs < 0 or args.threads < 0 or args.random_samples < 1:
        raise OptimizeError("--timing-runs and --random-samples must be >= 1, --warmup-runs and --threads >= 0")
    return Request(
        model_dir=args.model,
        method=parse_method(args.method),
        version=args.version,
        to_version=args.to_version,
        samples_path=args.samples,
        random=RandomSpec(args.random_samples, *_range(args.input_range), dict(_shape(s) for s in args.shape)),
        thresholds=parse_thresholds(args.max_accuracy_drop),
        keep_failed=args.keep_failed,
        batch_sizes=tuple(_ints("--batch-sizes", args.batch_sizes)) if args.batch_sizes else (),
        runs=args.timing_runs,
        warmup=args.warmup_runs,
        threads=args.threads,
        provider=args.provider,
        class_outputs=frozenset(args.classes),
        default_max_batch_size=args.default_max_batch_size,
        calibration_method=args.calibration,
        per_channel=args.per_channel,
        op_types=tuple(_names(args.op_types)) if args.op_types else None,
        exclude_nodes=tuple(_names(args.exclude_nodes)),
        fp32_ops=tuple(_names(args.fp32_ops)),
    ), args.report_json


def main(argv: Sequence[str]) -> int:
    """Blocks for the whole run; prints the report (stdout) or the error (stderr)."""
    logging.basicConfig(level=logging.ERROR, format="%(levelname)s %(name)s: %(message)s")
    warnings.filterwarnings("ignore", category=DeprecationWarning)
    try:
        import onnxruntime

        onnxruntime.disable_telemetry_events()  # as the server: no phoning home
        request, report_path = parse_request(argv)
        from server.optimize.pipeline import optimize
        from server.optimize.report import render

        outcome = optimize(request)
    except OptimizeError as error:
        print(f"ortserve optimize: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    print(render(outcome.report))
    if outcome.written is not None:
        print(f"wrote {outcome.written}")
    if report_path is not None:
        report_path.write_text(json.dumps(outcome.report, indent=2) + "\n")
    return outcome.exit_code


def _names(text: str) -> list[str]:
    return [name.strip() for name in text.split(",") if name.strip()]


def _ints(flag: str, text: str) -> list[int]:
    try:
        values = [int(v) for v in _names(text)]
    except ValueError:
        raise OptimizeError(f"{flag} '{text}': expected comma-separated integers") from None
    if not values or min(values) < 1:
        raise OptimizeError(f"{flag} '{text}': batch sizes are integers >= 1")
    return values


def _range(text: str) -> tuple[float, float]:
    low, _, high = text.partition(",")
    try:
        bounds = float(low), float(high)
    except ValueError:
        raise OptimizeError(f"--input-range '{text}': expected LOW,HIGH") from None
    if not bounds[0] <= bounds[1]:
        raise OptimizeError(f"--input-range '{text}': LOW must not exceed HIGH")
    return bounds


def _shape(text: str) -> tuple[str, tuple[int, ...]]:
    name, _, dims = text.rpartition(":")
    try:
        shape = tuple(int(d) for d in dims.split(",") if d)
    except ValueError:
        shape = ()
    if not name or not shape or min(shape) < 1:
        raise OptimizeError(f"--shape '{text}': expected NAME:D1,D2,... with positive dims")
    return name, shape
