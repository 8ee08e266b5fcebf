"""``python -m loadtest``: drive any KServe v2 gRPC server, or measure the raw-ORT ceiling.

python -m loadtest run --url 127.0.0.1:8001 --model mlp --concurrency 1,16,64 --out /tmp/lt
python -m loadtest run --url 127.0.0.1:8001 --model mlp --rate 500,1000 --duration 10
python -m loadtest ceiling --model-file model_repo/mlp/1/model.onnx --batch 1,8,32 --threads 1
python -m loadtest compare --url 127.0.0.1:8001 --model mlp --versions 1,2 --concurrency 1,16 --out /tmp/lt
"""

from __future__ import annotations

import argparse
import json
import os
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path

from loadtest import ceiling, compare, report, runner
from loadtest.raw_ort import parse_shape


def available_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def default_processes() -> int:
    """One worker per two cores, at most 4: a worker process drives several thousand requests/s,
    and on a small machine every extra client process takes CPU from the server under test."""
    return max(1, min(4, available_cores() // 2))


def int_list(text: str) -> list[int]:
    return [int(v) for v in text.split(",") if v]


def float_list(text: str) -> list[float]:
    return [float(v) for v in text.split(",") if v]


def add_run_parser(commands: argparse._SubParsersAction) -> None:
    run = commands.add_parser("run", help="load a server: concurrency sweep (closed loop) or fixed rates (open loop)")
    add_load_arguments(run)
    run.add_argument("--model-version", default="", help="default: the server's choice")
    run.add_argument("--ceiling-model-file", type=Path, help="measure raw ORT on this .onnx at the formed batch sizes")
    run.add_argument("--ceiling-threads", type=int, default=1, help="intra-op threads for the ceiling: what the server's instance uses")
    run.add_argument("--ceiling-seconds", type=float, default=3.0)
    run.add_argument("--name", help="file name stem in --out (default: the model name)")


def add_compare_parser(commands: argparse._SubParsersAction) -> None:
    top = commands.add_parser("compare", help="the same load against two versions of one model: one table, one plot")
    add_load_arguments(top)
    top.add_argument(
        "--versions", type=version_pair, required=True, help="the two versions, e.g. 1,2 (the second is compared to the first)"
    )
    top.add_argument("--name", help="file name stem in --out (default: MODEL-compare)")
    top.set_defaults(model_version="", ceiling_model_file=None, ceiling_threads=1, ceiling_seconds=3.0)


def version_pair(text: str) -> tuple[str, str]:
    versions = tuple(v.strip() for v in text.split(",") if v.strip())
    if len(versions) != 2 or not all(v.isdigit() for v in versions) or versions[0] == versions[1]:
        raise argparse.ArgumentTypeError(f"expected two different version numbers, e.g. 1,2, got '{text}'")
    return versions  # type: ignore[return-value]


def add_load_arguments(run: argparse.ArgumentParser) -> None:
    """What a load is: the target, the levels, the request shape, the client processes, the output."""
    run.add_argument("--url", default="127.0.0.1:8001", help="host:port of the gRPC endpoint")
    run.add_argument("--model", required=True)
    load = run.add_mutually_exclusive_group()
    load.add_argument("--concurrency", type=int_list, help="closed-loop levels, e.g. 1,16,64 (default 1)")
    load.add_argument("--rate", type=float_list, help="open-loop target requests/s, e.g. 500,1000")
    run.add_argument("--duration", type=float, default=5.0, help="measured seconds per step")
    run.add_argument("--warmup", type=float, default=1.0, help="seconds per step sent but not measured")
    run.add_argument("--batch", type=int, default=1, help="rows per request for a batching model (its leading -1)")
    run.add_argument("--shape", type=parse_shape, action="append", default=[], help="name:d1,d2 for dynamic dims (after the batch dim)")
    run.add_argument("--string-length", type=int, default=16, help="bytes per BYTES element")
    run.add_argument("--streaming", action="store_true", help="send over ModelStreamInfer streams, requests matched by id")
    run.add_argument(
        "--streams",
        type=int,
        default=1,
        help="streaming: streams per worker process, slots spread over them (default 1: every request in flight on one stream; "
        "perf_analyzer --streaming opens one per concurrency slot)",
    )
    run.add_argument("--processes", type=int, default=default_processes(), help="client worker processes (default %(default)s)")
    run.add_argument(
        "--cpus", type=int_list, default=[], help="pin the worker processes to these CPUs, e.g. 1 (keep the client off the server's cores)"
    )
    run.add_argument("--poisson", action="store_true", help="rate mode: exponential gaps instead of even spacing")
    run.add_argument("--max-in-flight", type=int, default=10_000, help="rate mode: per worker; slots beyond it are skipped")
    run.add_argument("--request-timeout", type=float, default=60.0, help="unary deadline in seconds")
    run.add_argument("--out", type=Path, help="directory for NAME.json, NAME.csv (run only) and NAME.png")


def add_ceiling_parser(commands: argparse._SubParsersAction) -> None:
    top = commands.add_parser("ceiling", help="raw InferenceSession.run in-process at several batch sizes")
    top.add_argument("--model-file", type=Path, required=True)
    top.add_argument("--batch", type=int_list, default=[1])
    top.add_argument("--threads", type=int, default=1, help="intra-op threads (the server instance's; 0 = ORT's default)")
    top.add_argument("--shape", type=parse_shape, action="append", default=[], help="name:d1,d2 for dynamic non-batch dims")
    top.add_argument("--seconds", type=float, default=3.0)
    top.add_argument("--out", type=Path, help="write ceiling.json here")


def run_options(args: argparse.Namespace) -> runner.RunOptions:
    return runner.RunOptions(
        url=args.url,
        model=args.model,
        version=args.model_version,
        concurrency=tuple(args.concurrency or ([] if args.rate else [1])),
        rates=tuple(args.rate or []),
        duration_s=args.duration,
        warmup_s=args.warmup,
        batch=args.batch,
        shapes={name: tuple(dims) for name, dims in args.shape},
        streaming=args.streaming,
        streams=args.streams,
        processes=args.processes,
        cpus=tuple(args.cpus),
        string_length=args.string_length,
        request_timeout_s=args.request_timeout,
        max_in_flight=args.max_in_flight,
        poisson=args.poisson,
        ceiling_model_file=args.ceiling_model_file,
        ceiling_threads=args.ceiling_threads,
        ceiling_seconds=args.ceiling_seconds,
    )


def command_run(args: argparse.Namespace) -> int:
    result = runner.run(run_options(args))
    print()
    print(report.render(result))
    if args.out is not None:
        for path in report.write(result, args.out, args.name or args.model):
            print(f"wrote {path}")
    failed = sum(sum(step.client.errors.values()) for step in result.steps)
    return 1 if failed else 0


def command_compare(args: argparse.Namespace) -> int:
    result = compare.compare(run_options(args), args.versions)
    print()
    print(compare.render(result))
    if args.out is not None:
        for path in compare.write(result, args.out, args.name or f"{args.model}-compare"):
            print(f"wrote {path}")
    failed = sum(sum(step.client.errors.values()) for report in result.reports.values() for step in report.steps)
    return 1 if failed else 0


def command_ceiling(args: argparse.Namespace) -> int:
    results = ceiling.measure_batches(args.model_file, args.batch, args.threads, args.seconds, dict(args.shape))
    print(report.ceiling_table(results))
    if args.out is not None:
        args.out.mkdir(parents=True, exist_ok=True)
        path = args.out / "ceiling.json"
        path.write_text(json.dumps([asdict(r) for r in results], indent=2) + "\n")
        print(f"wrote {path}")
    return 0


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest", description=__doc__.splitlines()[0])
    commands = parser.add_subparsers(dest="command", required=True)
    add_run_parser(commands)
    add_compare_parser(commands)
    add_ceiling_parser(commands)
    args = parser.parse_args(argv)
    commands_by_name = {"run": command_run, "compare": command_compare, "ceiling": command_ceiling}
    return commands_by_name[args.command](args)
