"""The batcher's closing rule (issue 9): a fake-clock table of its decisions, and the live latency of
a batch that cannot grow (one 7-row request, preferred sizes [2, 6], a 10 s delay; target < 50 ms).

    .venv/bin/python -m loadtest.bench_batch_rule [--requests 20]

The table runs the pure rule (server/scheduling/batch_policy.py) on hand-made queues, so it is
exact; the latency starts a real ortserve on a temporary repository and times tritonclient calls.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc as grpcclient

from loadtest.servers import ortserve
from scripts import onnx_models
from server.scheduling.batch_policy import BatchingRule, Dispatch, WaitUntil, form_batch

CONFIG = """
max_batch_size: 8
dynamic_batching { preferred_batch_size: [ 2, 6 ] max_queue_delay_microseconds: 10000000 }
"""
RULE = BatchingRule(max_batch_size=8, preferred_batch_sizes=(2, 6), max_queue_delay_ns=10_000_000_000)
SECOND_SHAPE = (("INPUT0", (8,)),)


@dataclass
class Queued:
    rows: int
    enqueued_ns: int = 0
    shape_key: object = (("INPUT0", (4,)),)


# (what is queued, the rows of each request, seconds the head has waited)
CASES: list[tuple[str, list[Queued], float]] = [
    ("one 7-row request", [Queued(7)], 0.0),
    ("one 1-row request", [Queued(1)], 0.0),
    ("one 1-row request, delay over", [Queued(1)], 10.0),
    ("1 + 1 rows (a preferred size)", [Queued(1), Queued(1)], 0.0),
    ("3 + 4 rows (4 would pass 6)", [Queued(3), Queued(4)], 0.0),
    ("3 + 4 rows, delay over", [Queued(3), Queued(4)], 10.0),
    ("5 + 4 rows (4 would pass 8)", [Queued(5), Queued(4)], 0.0),
    ("1 row, then another shape", [Queued(1), Queued(1, shape_key=SECOND_SHAPE)], 0.0),
    ("6 one-row requests", [Queued(1) for _ in range(6)], 0.0),
    ("3 one-row requests", [Queued(1) for _ in range(3)], 0.0),
]


def decision_table() -> list[tuple[str, str]]:
    rows = []
    for label, queue, waited_s in CASES:
        decision = form_batch(queue, int(waited_s * 1e9), RULE)
        if isinstance(decision, Dispatch):
            text = f"dispatch {decision.count} request(s), {sum(max(1, q.rows) for q in queue[: decision.count])} rows"
        elif isinstance(decision, WaitUntil):
            text = f"wait {(decision.deadline_ns - int(waited_s * 1e9)) / 1e9:g} s more"
        else:
            text = "nothing"
        rows.append((label, text))
    return rows


def live_latencies_ms(requests: int, log_dir: Path) -> list[float]:
    repository = log_dir / "repo"
    version_dir = repository / "preferred" / "1"
    version_dir.mkdir(parents=True)
    onnx_models.save(onnx_models.add_constant("FP32", ["batch", 4], 1.0), str(version_dir / "model.onnx"))
    (repository / "preferred" / "config.pbtxt").write_text(CONFIG)
    rows = np.ones((7, 4), np.float32)
    latencies = []
    with ortserve(repository, [], "batch-rule", log_dir) as server, grpcclient.InferenceServerClient(server.grpc_url) as client:
        item = grpcclient.InferInput("INPUT0", [7, 4], "FP32")
        item.set_data_from_numpy(rows)
        client.infer("preferred", [item], client_timeout=60)  # first call: connection set-up
        for _ in range(requests):
            started = time.perf_counter()
            client.infer("preferred", [item], client_timeout=60)
            latencies.append((time.perf_counter() - started) * 1000)
    return latencies


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_batch_rule", description=__doc__.splitlines()[0])
    parser.add_argument("--requests", type=int, default=20, help="sequential 7-row requests to time")
    options = parser.parse_args(argv)
    print("Fake-clock decisions (max_batch_size 8, preferred [2, 6], delay 10 s):")
    for label, text in decision_table():
        print(f"  {label:<34} {text}")
    with tempfile.TemporaryDirectory(prefix="bench-batch-rule-") as tmp:
        latencies = live_latencies_ms(options.requests, Path(tmp))
    p50 = statistics.median(latencies)
    print(f"One 7-row request, preferred [2, 6], 10 s delay: p50 {p50:.2f} ms, max {max(latencies):.2f} ms over {len(latencies)}")
    print(f"  target < 50 ms: {'met' if max(latencies) < 50 else 'MISSED'}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
