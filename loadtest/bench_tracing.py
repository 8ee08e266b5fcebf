"""Issue 12's tracing cost: throughput and latency with tracing off, at rate 1/1000 and at rate 1,
as ratios to "off", measured in one interleaved run.

    .venv/bin/python -m loadtest.bench_tracing [--rounds 3] [--model simple] [--concurrency 16]

Two ortserve processes on model_repo/: one in Triton's mode (JSON to a file in a temporary
directory, ``log-frequency=1000``) and one in OpenTelemetry's mode (OTLP/HTTP to a sink in this
process that reads each export and answers 200 without decoding it). Within each process the
setting is switched over the trace extension (level OFF; TIMESTAMPS at rate 1000; rate 1) between
perf_analyzer runs (gRPC, sync), the order reversed every other round (A B C, C B A, ...) so a
drift in the machine's load favours none. Prints the medians of throughput, p50 and the server's
CPU time per inference (every thread of the process, from /proc; the least noisy of the three on a
shared machine) and their ratios to "off"; the target is rate 1/1000 within 2 % of off.

With ``--baseline-tree DIR`` (a checkout from before tracing, e.g. ``git archive 2257fe1 | tar -x
-C DIR``) it also alternates this tree with tracing off and that tree, to show what "off" costs.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient

from loadtest import perf_analyzer
from loadtest.report import table
from loadtest.server_stats import StatsReader
from loadtest.servers import REPO_ROOT, Running, ortserve
from server.frontends.grpc.trace import call_origin
from server.observability.statistics import RequestTiming
from server.observability.trace_setup import build_tracer
from server.observability.tracing import Tracer
from server.settings import TraceMode, TraceOptions

SETTINGS: dict[str, dict[str, Any]] = {
    "off": {"trace_level": ["OFF"]},
    "rate 1/1000": {"trace_level": ["TIMESTAMPS"], "trace_rate": "1000"},
    "rate 1": {"trace_level": ["TIMESTAMPS"], "trace_rate": "1"},
}


class _Sink(BaseHTTPRequestHandler):
    received = 0

    def do_POST(self) -> None:
        self.rfile.read(int(self.headers.get("Content-Length", "0")))
        _Sink.received += 1
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@contextmanager
def otlp_sink() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Sink)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{server.server_address[1]}/v1/traces"
    finally:
        server.shutdown()
        server.server_close()


@dataclass(frozen=True)
class Sample:
    throughput: float  # inferences/s (perf_analyzer)
    p50_ms: float
    # The server process's CPU time (every thread) per inference it answered in the run: far less
    # sensitive than throughput to what else a shared machine runs.
    cpu_us: float | None


def process_cpu_s(pid: int) -> float:
    """User + system CPU seconds of a process, every thread included (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rpartition(")")[2].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def settle(pid: int, idle_share: float = 0.05, window_s: float = 0.5, bound_s: float = 60.0) -> None:
    """Wait until the server is idle (under ``idle_share`` of a core over ``window_s``): after a
    rate-1 run its trace writer or span processor still works through the run's backlog, and
    that CPU must not be counted to the next run (with the order reversed every other round,
    rate 1/1000 would otherwise follow rate 1 and pay for it)."""
    deadline = time.monotonic() + bound_s
    while time.monotonic() < deadline:
        before = process_cpu_s(pid)
        time.sleep(window_s)
        if process_cpu_s(pid) - before < idle_share * window_s:
            return


def measure(server: Running, setting: dict[str, Any] | None, options: argparse.Namespace) -> Sample | None:
    """One perf_analyzer run with ``setting`` in force (None: leave it); None if it failed."""
    assert server.pid is not None
    settle(server.pid)
    if setting is not None:
        grpcclient.InferenceServerClient(server.grpc_url).update_trace_settings(settings=setting)
    reader = StatsReader(server.grpc_url, options.model)
    before, cpu_before = reader.read(), process_cpu_s(server.pid)
    args = ["--concurrency-range", str(options.concurrency), "--measurement-interval", str(options.interval_ms)]
    run = perf_analyzer.run(options.model, server.grpc_url, [*args, "--stability-percentage", "1000", "--max-trials", "3"], timeout_s=180.0)
    cpu_s, after = process_cpu_s(server.pid) - cpu_before, reader.read()
    reader.close()
    if run.returncode != 0 or not run.points:
        print(f"perf_analyzer failed at {server.grpc_url}:\n{run.describe()[-1500:]}")
        return None
    answered = after.inference_count - before.inference_count if before and after else 0
    cpu_us = round(cpu_s / answered * 1e6, 1) if answered else None
    return Sample(run.points[0].throughput, run.points[0].p50_us / 1000, cpu_us)


def alternated(
    servers: dict[str, tuple[Running, dict[str, Any] | None]], rounds: int, options: argparse.Namespace
) -> dict[str, list[Sample]]:
    """Each (server, setting) ``rounds`` times, the order reversed every other round."""
    results: dict[str, list[Sample]] = {name: [] for name in servers}
    names = list(servers)
    for index in range(rounds):
        for name in names if index % 2 == 0 else reversed(names):
            sample = measure(*servers[name], options)
            if sample is not None:
                results[name].append(sample)
    return results


def rows_for(mode: str, results: dict[str, list[Sample]]) -> list[list[object]]:
    def median(name: str, attribute: str) -> float | None:
        values = [getattr(sample, attribute) for sample in results[name] if getattr(sample, attribute) is not None]
        return round(statistics.median(values), 3) if values else None

    def ratio(value: float | None, base: float | None) -> float | None:
        return round(value / base, 3) if value and base else None

    off = {attribute: median("off", attribute) for attribute in ("throughput", "p50_ms", "cpu_us")}
    rows: list[list[object]] = []
    for name in results:
        rate, p50, cpu = median(name, "throughput"), median(name, "p50_ms"), median(name, "cpu_us")
        rows.append([mode, name, rate, ratio(rate, off["throughput"]), p50, ratio(p50, off["p50_ms"]), cpu, ratio(cpu, off["cpu_us"])])
        rows[-1].append(len(results[name]))
    return rows


def micro_costs(sink_url: str, directory: Path, count: int = 20_000) -> dict[str, float]:
    """In-process nanoseconds the request path spends on tracing per request, on the event loop's
    side (a frontend noting the origin, the service's sampling decision, a sampled trace built and
    handed to its sink), timed with nothing else in the way: a steadier view than a load run."""
    metadata = (("user-agent", "grpc-c++/1.60.0"), ("te", "trailers"), ("content-type", "application/grpc"))
    timing = RequestTiming(received_ns=1, enqueued_ns=2, exec_start_ns=3, input_done_ns=4, infer_done_ns=5, output_done_ns=6)
    unsampled = build_tracer(TraceOptions(timestamps=True, rate=2**31, file=str(directory / "never.json")), "bench")

    def per_call_ns(work: Callable[[], object], calls: int = count) -> float:
        start = time.perf_counter_ns()
        for _ in range(calls):
            work()
        return (time.perf_counter_ns() - start) / calls

    def traced(tracer: Tracer) -> Callable[[], object]:
        def one() -> None:
            trace = tracer.start("simple", 1, "", call_origin(metadata), 1)
            assert trace is not None
            trace.request_ended(timing)
            trace.finish()

        return one

    file_tracer = build_tracer(TraceOptions(timestamps=True, rate=1, log_frequency=1000, file=str(directory / "micro.json")), "bench")
    otel_options = TraceOptions(timestamps=True, rate=1, mode=TraceMode.OPENTELEMETRY, otel_url=sink_url)
    otel_tracer = build_tracer(otel_options, "bench")
    costs = {
        "off: the check": per_call_ns(lambda: unsampled.active and None),
        "rate 1/1000, not sampled: origin + decision": per_call_ns(lambda: unsampled.start("simple", 1, "", call_origin(metadata), 1)),
        "sampled, triton file: build + render": per_call_ns(traced(file_tracer), count // 10),
        # Few enough that the span processor's queue (2048 spans) never drops any.
        "sampled, opentelemetry: build 7 spans": per_call_ns(traced(otel_tracer), count // 100),
    }
    for tracer in (unsampled, file_tracer, otel_tracer):
        tracer.retire_all()
        tracer.close()
    return costs


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--model", default="simple")
    parser.add_argument("--concurrency", type=int, default=16)
    parser.add_argument("--interval-ms", type=int, default=2000, help="perf_analyzer measurement window")
    parser.add_argument("--baseline-tree", type=Path, default=None, help="a checkout from before tracing, to compare 'off' with")
    options = parser.parse_args()
    rows: list[list[object]] = []
    with tempfile.TemporaryDirectory(prefix="bench-tracing-") as tmp, otlp_sink() as sink_url:
        logs = Path(tmp)
        triton = [f"--trace-config=triton,file={logs / 'trace.json'}", "--trace-config=triton,log-frequency=1000"]
        otel = ["--trace-config=mode=opentelemetry", f"--trace-config=opentelemetry,url={sink_url}"]
        for mode, flags in (("triton file", triton), ("opentelemetry", otel)):
            with ortserve(REPO_ROOT / "model_repo", flags, mode.replace(" ", "-"), logs) as server:
                rows += rows_for(mode, alternated({name: (server, setting) for name, setting in SETTINGS.items()}, options.rounds, options))
        if options.baseline_tree is not None:
            with (
                ortserve(REPO_ROOT / "model_repo", [], "off", logs) as ours,
                ortserve(REPO_ROOT / "model_repo", [], "baseline", logs, tree=options.baseline_tree) as baseline,
            ):
                pair = {"off": (ours, None), "baseline tree": (baseline, None)}
                rows += rows_for("no tracing code", alternated(pair, options.rounds, options))
        traced_files = len(list(logs.glob("trace.json.*")))
        costs = micro_costs(sink_url, logs)
    headers = ["mode", "tracing", "infer/s", "vs off", "p50 ms", "p50 vs off", "cpu µs/inf", "cpu vs off", "runs"]
    print(table(headers, rows))
    print(f"trace files written: {traced_files}; OTLP exports received: {_Sink.received}")
    print(table(["in-process, per request", "ns"], [[name, round(ns)] for name, ns in costs.items()]))
    if options.baseline_tree is not None:
        print("'no tracing code' rows: this tree with tracing off, and the baseline tree as a ratio to it")
    for row in rows:
        if row[1] == "rate 1/1000":
            cpu = row[7]
            verdict = "n/a" if not isinstance(cpu, float) else ("met" if cpu <= 1.02 else "NOT met")
            print(f"{row[0]}: rate 1/1000 costs {cpu}x off's server CPU per inference (target <= 1.02x): {verdict}; throughput {row[3]}x")


if __name__ == "__main__":
    main()
