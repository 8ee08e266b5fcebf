"""Stateful and composite models, measured in one run against what a client would do without them.

1. Sequences: N concurrent sequences of S steps on a small stateful model (onnx.helper's
   accumulator, a state of W floats). "implicit": the server keeps the state (sequence_batching,
   oldest and direct strategies); "client state": the same graph with the state as an ordinary
   input and output, so every request ships it both ways (dynamic batching). Printed: steps/s,
   p50 and p99 per step, the average formed batch (nv_inference_count / nv_inference_exec_count),
   and the implicit/client-state throughput ratio (target >= 1.0x). Every sequence's last
   answer is checked against numpy.
2. Ensemble: a two-step pipeline (a normalising add_constant feeding a small MLP) as one
   ``platform: "ensemble"`` model, against the client calling the two models one after the other
   and passing the intermediate tensor itself, at concurrency C. Printed: pipelines/s, p50, p99 and
   the throughput ratio (target >= 1.3x, with a lower p50).

    .venv/bin/python -m loadtest.bench_sequences                 # 64 x 100 steps, c=16, ~1 minute
    .venv/bin/python -m loadtest.bench_sequences --sequences 16 --steps 20 --seconds 3

Clients are tritonclient.grpc.aio coroutines in this process (closed loop); on a machine whose
cores the server shares with the client, absolute figures move with the load, the ratios much less.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import statistics
import tempfile
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import tritonclient.grpc.aio as grpcaio

from scripts import onnx_models
from scripts.harness import ServerProcess
from tests.repository_builder import write_model

DECAY = 0.5
IMPLICIT = """
max_batch_size: %(batch)d
sequence_batching {
  # A loaded machine can hold a step longer than Triton's default 1 s idle limit.
  max_sequence_idle_microseconds: 60000000
  %(strategy)s
  control_input [
    { name: "START", control [ { kind: CONTROL_SEQUENCE_START, fp32_false_true: [ 0, 1 ] } ] },
    { name: "READY", control [ { kind: CONTROL_SEQUENCE_READY, fp32_false_true: [ 0, 1 ] } ] }
  ]
  state [ { input_name: "INPUT_STATE", output_name: "OUTPUT_STATE", data_type: TYPE_FP32, dims: [ %(width)d ] } ]
}
input [ { name: "INPUT", data_type: TYPE_FP32, dims: [ %(width)d ] } ]
output [ { name: "OUTPUT", data_type: TYPE_FP32, dims: [ %(width)d ] } ]
"""
CLIENT_STATE = """
max_batch_size: %(batch)d
dynamic_batching { }
input [
  { name: "INPUT", data_type: TYPE_FP32, dims: [ %(width)d ] },
  { name: "START", data_type: TYPE_FP32, dims: [ 1 ] },
  { name: "STATE_IN", data_type: TYPE_FP32, dims: [ %(width)d ] }
]
output [ { name: "OUTPUT", data_type: TYPE_FP32, dims: [ %(width)d ] }, { name: "STATE_OUT", data_type: TYPE_FP32, dims: [ %(width)d ] } ]
"""
PIPELINE = """
platform: "ensemble"
max_batch_size: 16
input [ { name: "FEATURES", data_type: TYPE_FP32, dims: [ 64 ] } ]
output [ { name: "SCORES", data_type: TYPE_FP32, dims: [ 10 ] } ]
ensemble_scheduling {
  step [
    { model_name: "normalise", model_version: -1, input_map { key: "INPUT0" value: "FEATURES" },
      output_map { key: "OUTPUT0" value: "shifted" } },
    { model_name: "scorer", model_version: -1, input_map { key: "input" value: "shifted" }, output_map { key: "output" value: "SCORES" } }
  ]
}
"""
LABELS = {"acc_oldest": "implicit state, oldest", "acc_direct": "implicit state, direct", "acc_client_state": "client ships the state"}


def build_repository(root: Path, width: int, max_batch: int) -> Path:
    implicit = onnx_models.accumulator(width, DECAY, corrid=None)
    oldest = IMPLICIT % {"batch": max_batch, "width": width, "strategy": f"oldest {{ max_candidate_sequences: {max_batch} }}"}
    write_model(root, "acc_oldest", implicit, oldest)
    write_model(root, "acc_direct", implicit, IMPLICIT % {"batch": max_batch, "width": width, "strategy": "direct { }"})
    explicit = onnx_models.accumulator(width, DECAY, implicit=False)
    write_model(root, "acc_client_state", explicit, CLIENT_STATE % {"batch": max_batch, "width": width})
    write_model(root, "normalise", onnx_models.add_constant("FP32", ["batch", 64], -0.5), "max_batch_size: 16\ndynamic_batching { }\n")
    write_model(root, "scorer", onnx_models.mlp((64, 128, 10)), "max_batch_size: 16\ndynamic_batching { }\n")
    (root / "pipeline" / "1").mkdir(parents=True)
    (root / "pipeline" / "config.pbtxt").write_text(PIPELINE)
    return root


def tensor(name: str, array: np.ndarray) -> grpcaio.InferInput:
    item = grpcaio.InferInput(name, list(array.shape), "FP32")
    item.set_data_from_numpy(array)
    return item


@dataclass
class Figures:
    label: str
    count: int
    seconds: float
    latencies: list[float]
    batch: float | None = None
    # The server process's CPU time per request (user + system): far steadier than wall time on a
    # machine whose cores other work shares.
    cpu_us: float | None = None

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    def row(self) -> str:
        ordered = sorted(self.latencies)
        p50, p99 = ordered[len(ordered) // 2], ordered[min(len(ordered) - 1, int(len(ordered) * 0.99))]
        batch = f"{self.batch:8.2f}" if self.batch is not None else "       -"
        cpu = f"{self.cpu_us:10.0f}" if self.cpu_us is not None else "         -"
        return f"{self.label:<34} {self.rate:10.0f} {p50 * 1e3:9.2f} {p99 * 1e3:9.2f} {batch} {cpu}"


HEADER = f"{'':<34} {'per s':>10} {'p50 ms':>9} {'p99 ms':>9} {'batch':>8} {'server CPU us':>13}"


def server_cpu_secs(server: ServerProcess) -> float:
    """User + system CPU seconds the server process has used (Linux /proc)."""
    assert server.process is not None
    fields = Path(f"/proc/{server.process.pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def formed_batch(server: ServerProcess, model: str, before: tuple[float, float]) -> float:
    metrics = server.metrics()
    inferences = metrics.model(model, "nv_inference_count") - before[0]
    executions = metrics.model(model, "nv_inference_exec_count") - before[1]
    return inferences / executions if executions else 0.0


def counters(server: ServerProcess, model: str) -> tuple[float, float]:
    metrics = server.metrics()
    return metrics.model(model, "nv_inference_count"), metrics.model(model, "nv_inference_exec_count")


def reference(inputs: list[np.ndarray]) -> np.ndarray:
    state = inputs[0]
    for value in inputs[1:]:
        state = DECAY * state + value
    return state


async def run_sequences(server: ServerProcess, model: str, sequences: int, steps: int, width: int) -> Figures:
    """``sequences`` coroutines, each one sequence of ``steps`` requests; checks every last answer."""
    rng = np.random.default_rng(7)
    data = rng.standard_normal((sequences, steps, 1, width)).astype(np.float32)
    client_state = model == "acc_client_state"
    latencies: list[float] = []

    async def one(client: grpcaio.InferenceServerClient, index: int) -> np.ndarray:
        state = np.zeros((1, width), np.float32)
        output = state
        for step in range(steps):
            started = time.perf_counter()
            if client_state:
                start = np.array([[1.0 if step == 0 else 0.0]], np.float32)
                result = await client.infer(model, [tensor("INPUT", data[index, step]), tensor("START", start), tensor("STATE_IN", state)])
                state = result.as_numpy("STATE_OUT")
            else:
                flags = {"sequence_start": step == 0, "sequence_end": step == steps - 1}
                result = await client.infer(model, [tensor("INPUT", data[index, step])], sequence_id=index + 1, **flags)
            latencies.append(time.perf_counter() - started)
            output = result.as_numpy("OUTPUT")
        return output

    before, cpu_before = counters(server, model), server_cpu_secs(server)
    async with grpcaio.InferenceServerClient(server.grpc_url) as client:
        started = time.perf_counter()
        outputs = await asyncio.gather(*(one(client, index) for index in range(sequences)))
        seconds = time.perf_counter() - started
    cpu_us = (server_cpu_secs(server) - cpu_before) / (sequences * steps) * 1e6
    for index, output in enumerate(outputs):
        np.testing.assert_allclose(output[0], reference([data[index, s, 0] for s in range(steps)]), rtol=1e-4, atol=1e-5)
    return Figures(LABELS[model], sequences * steps, seconds, latencies, formed_batch(server, model, before), cpu_us)


async def closed_loop(concurrency: int, seconds: float, call: Callable[[], Awaitable[None]]) -> tuple[int, float, list[float]]:
    latencies: list[float] = []
    deadline = time.perf_counter() + seconds

    async def worker() -> None:
        while time.perf_counter() < deadline:
            started = time.perf_counter()
            await call()
            latencies.append(time.perf_counter() - started)

    started = time.perf_counter()
    await asyncio.gather(*(worker() for _ in range(concurrency)))
    return len(latencies), time.perf_counter() - started, latencies


async def run_pipeline(server: ServerProcess, concurrency: int, seconds: float, ensemble: bool) -> Figures:
    features = np.random.default_rng(3).standard_normal((1, 64)).astype(np.float32)
    async with grpcaio.InferenceServerClient(server.grpc_url) as client:
        expected = (await client.infer("pipeline", [tensor("FEATURES", features)])).as_numpy("SCORES")

        async def as_ensemble() -> None:
            scores = (await client.infer("pipeline", [tensor("FEATURES", features)])).as_numpy("SCORES")
            assert scores.shape == expected.shape

        async def one_after_the_other() -> None:
            shifted = (await client.infer("normalise", [tensor("INPUT0", features)])).as_numpy("OUTPUT0")
            scores = (await client.infer("scorer", [tensor("input", shifted)])).as_numpy("output")
            assert scores.shape == expected.shape

        call = as_ensemble if ensemble else one_after_the_other
        await closed_loop(concurrency, min(1.0, seconds / 4), call)  # warm up
        cpu_before = server_cpu_secs(server)
        count, elapsed, latencies = await closed_loop(concurrency, seconds, call)
        cpu_us = (server_cpu_secs(server) - cpu_before) / count * 1e6
        by_hand = (await client.infer("scorer", [tensor("input", features - 0.5)])).as_numpy("output")
        np.testing.assert_allclose(expected, by_hand, rtol=1e-5, atol=1e-6)
    label = "ensemble (one call)" if ensemble else "two calls from the client"
    return Figures(f"{label}, c={concurrency}", count, elapsed, latencies, cpu_us=cpu_us)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0], formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sequences", type=int, default=64)
    parser.add_argument("--steps", type=int, default=100)
    parser.add_argument("--width", type=int, default=256, help="floats of state per sequence")
    parser.add_argument("--concurrency", type=int, default=16, help="ensemble comparison")
    parser.add_argument("--seconds", type=float, default=8.0, help="per ensemble measurement")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        repository = build_repository(Path(scratch) / "repo", args.width, max_batch=args.sequences)
        with ServerProcess([repository], [], log_path=Path(scratch) / "server.log") as server:
            server.wait_until(f"http://{server.http_url}/v2/health/ready", 120)
            print(f"1. {args.sequences} concurrent sequences x {args.steps} steps, state of {args.width} floats (per step)")
            print(HEADER)
            results = {}
            for model in ("acc_client_state", "acc_oldest", "acc_direct", "acc_client_state", "acc_oldest"):
                figures = asyncio.run(run_sequences(server, model, args.sequences, args.steps, args.width))
                results.setdefault(model, []).append(figures)
                print(figures.row())
            best = {model: max(runs, key=lambda f: f.rate).rate for model, runs in results.items()}
            baseline = best["acc_client_state"]
            print(f"   implicit (oldest) / client state: {best['acc_oldest'] / baseline:.2f}x throughput (best of each)")
            print(f"   implicit (direct) / client state: {best['acc_direct'] / baseline:.2f}x throughput")
            cpu = {model: min(f.cpu_us or 0.0 for f in runs) for model, runs in results.items()}
            print(
                f"   server CPU per step: implicit (oldest) {cpu['acc_oldest']:.0f} us, client state {cpu['acc_client_state']:.0f} us "
                f"({cpu['acc_client_state'] / cpu['acc_oldest']:.2f}x as much for client state)"
            )
            print("   every sequence's last answer matched numpy")
            print(f"\n2. two-step pipeline (add_constant -> MLP 64-128-10) at c={args.concurrency} (per pipeline)")
            print(HEADER)
            pipeline = {}
            for ensemble in (False, True, False, True):
                figures = asyncio.run(run_pipeline(server, args.concurrency, args.seconds, ensemble))
                pipeline.setdefault(ensemble, []).append(figures)
                print(figures.row())
            ensemble_best, client_best = max(pipeline[True], key=lambda f: f.rate), max(pipeline[False], key=lambda f: f.rate)
            p50 = {key: min(statistics.median(f.latencies) for f in runs) for key, runs in pipeline.items()}
            print(
                f"   ensemble / two calls: {ensemble_best.rate / client_best.rate:.2f}x throughput (best of each), "
                f"p50 {p50[True] * 1e3:.2f} ms vs {p50[False] * 1e3:.2f} ms"
            )
            cpu_pipe = {key: min(f.cpu_us or 0.0 for f in runs) for key, runs in pipeline.items()}
            print(f"   server CPU per pipeline: ensemble {cpu_pipe[True]:.0f} us, two calls {cpu_pipe[False]:.0f} us")


if __name__ == "__main__":
    main()
