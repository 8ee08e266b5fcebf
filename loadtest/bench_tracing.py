"""Issue 12's tracing cost: throughput and latency with tracing off, at rate 1/1000 and at rate 1,
as ratios to "off", measured in one interleaved run.

    .venv/bin/python -m loadtest.bench_tracing [--rounds 3] [--model simple] [--concurrency 16]

Two ortserve processes on model_repo/: one in Triton's mode (JSON to a file in a temporary
directory, ``log-frequency=1000``) and one in OpenTelemetry's mode (OTLP/HTTP to a sink in this
process that reads each export and answers 200 without decoding it). Within each process the
setting is switched over the trace extension (level OFF; TIMESTAMPS at rate 1000; rate 1) between
perf_analyzer runs (gRPC, sync), the order reversed every other round (A B C, C B A, ...) so a
drift in the machine's load favours none. Prints the median of each and its ratio to "off";
the target is a rate-1/1000 throughput >= 0.98x off.

With ``--baseline-tree DIR`` (a checkout from before tracing, e.g. ``git archive 2257fe1 | tar -x
-C DIR``) it also alternates this tree with tracing off and that tree, to show what "off" costs.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import tritonclient.grpc as grpcclient

from loadtest import perf_analyzer
from loadtest.report import table
from loadtest.servers import REPO_ROOT, ortserve

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


def measure(url: str, model: str, concurrency: int, interval_ms: int, setting: dict[str, Any] | None) -> tuple[float, float] | None:
    """(inferences/s, p50 ms) with ``setting`` in force (None: leave it); None if perf_analyzer failed."""
    if setting is not None:
        grpcclient.InferenceServerClient(url).update_trace_settings(settings=setting)
    args = ["--concurrency-range", str(concurrency), "--measurement-interval", str(interval_ms), "--stability-percentage", "1000"]
    run = perf_analyzer.run(model, url, [*args, "--max-trials", "3"], timeout_s=180.0)
    if run.returncode != 0 or not run.points:
        print(f"perf_analyzer failed at {url}:\n{run.describe()[-1500:]}")
        return None
    return run.points[0].throughput, run.points[0].p50_us / 1000


def interleaved(url: str, options: argparse.Namespace) -> dict[str, list[tuple[float, float]]]:
    results: dict[str, list[tuple[float, float]]] = {name: [] for name in SETTINGS}
    names = list(SETTINGS)
    for index in range(options.rounds):
        for name in names if index % 2 == 0 else reversed(names):
            sample = measure(url, options.model, options.concurrency, options.interval_ms, SETTINGS[name])
            if sample is not None:
                results[name].append(sample)
    return results


def against_baseline(options: argparse.Namespace, logs: Path) -> dict[str, list[tuple[float, float]]]:
    """This tree with tracing off against the baseline tree, alternated."""
    results: dict[str, list[tuple[float, float]]] = {"off": [], "baseline tree": []}
    with (
        ortserve(REPO_ROOT / "model_repo", [], "off", logs) as ours,
        ortserve(REPO_ROOT / "model_repo", [], "baseline", logs, tree=options.baseline_tree) as baseline,
    ):
        urls = {"off": ours.grpc_url, "baseline tree": baseline.grpc_url}
        for index in range(options.rounds):
            for name in list(urls) if index % 2 == 0 else reversed(list(urls)):
                sample = measure(urls[name], options.model, options.concurrency, options.interval_ms, None)
                if sample is not None:
                    results[name].append(sample)
    return results


def rows_for(mode: str, results: dict[str, list[tuple[float, float]]]) -> list[list[object]]:
    def median(name: str, index: int) -> float | None:
        values = [sample[index] for sample in results[name]]
        return round(statistics.median(values), 3) if values else None

    off_rate, off_p50 = median("off", 0), median("off", 1)
    rows: list[list[object]] = []
    for name in results:
        rate, p50 = median(name, 0), median(name, 1)
        ratio = round(rate / off_rate, 3) if rate and off_rate else None
        p50_ratio = round(p50 / off_p50, 3) if p50 and off_p50 else None
        rows.append([mode, name, rate, ratio, p50, p50_ratio, len(results[name])])
    return rows


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
                rows += rows_for(mode, interleaved(server.grpc_url, options))
        if options.baseline_tree is not None:
            rows += rows_for("no tracing code", against_baseline(options, logs))
        traced_files = len(list(logs.glob("trace.json.*")))
    print(table(["mode", "tracing", "infer/s", "vs off", "p50 ms", "p50 vs off", "runs"], rows))
    print(f"trace files written: {traced_files}; OTLP exports received: {_Sink.received}")
    if options.baseline_tree is not None:
        print("'no tracing code' rows: this tree with tracing off, and the baseline tree as a ratio to it")
    for row in rows:
        if row[1] == "rate 1/1000":
            verdict = "n/a" if row[3] is None else ("met" if float(row[3]) >= 0.98 else "NOT met")  # type: ignore[arg-type]
            print(f"{row[0]}: rate 1/1000 throughput {row[3]}x off (target >= 0.98x): {verdict}")


if __name__ == "__main__":
    main()
