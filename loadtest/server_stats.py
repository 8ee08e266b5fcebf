"""The server's own view of a step: ModelStatistics read before and after the window, differenced.

Servers that do not offer statistics (the floor server; Triton with them off) answer
UNIMPLEMENTED or similar; the reader then turns itself off and steps report no server figures.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import grpc

from server.proto import grpc_service_pb2 as pb
from server.proto import grpc_service_pb2_grpc as pb_grpc

PHASES = ("success", "queue", "compute_input", "compute_infer", "compute_output")


@dataclass(frozen=True)
class StatsSnapshot:
    """Cumulative counters of one model, summed over its versions."""

    inference_count: int = 0
    execution_count: int = 0
    counts: dict[str, int] = field(default_factory=dict)  # phase → count
    ns: dict[str, int] = field(default_factory=dict)  # phase → total ns
    batch_executions: dict[int, int] = field(default_factory=dict)  # formed batch size → executions
    execution_ns: int = 0  # time spent executing batches (input + infer + output), over all sizes


@dataclass(frozen=True)
class ServerStepStats:
    """What the server did during one window. Averages are per request (µs), as Triton reports them."""

    inferences: int
    executions: int
    avg_batch: float | None  # inferences per execution: the average formed batch
    queue_avg_us: float | None
    compute_avg_us: float | None  # input + infer + output
    compute_infer_avg_us: float | None
    batch_executions: dict[int, int]  # formed batch size → executions in the window
    # Seconds spent executing batches per second of window, summed over instances: well below the
    # instance count means instances sat idle (the batcher or the frontend starved them).
    busy_share: float | None = None


def snapshot(response: pb.ModelStatisticsResponse, model: str) -> StatsSnapshot:
    counts = dict.fromkeys(PHASES, 0)
    ns = dict.fromkeys(PHASES, 0)
    batches: dict[int, int] = {}
    inferences = executions = execution_ns = 0
    for stats in response.model_stats:
        if stats.name != model:
            continue
        inferences += stats.inference_count
        executions += stats.execution_count
        for phase in PHASES:
            duration = getattr(stats.inference_stats, phase)
            counts[phase] += duration.count
            ns[phase] += duration.ns
        for batch in stats.batch_stats:
            batches[batch.batch_size] = batches.get(batch.batch_size, 0) + batch.compute_infer.count
            execution_ns += batch.compute_input.ns + batch.compute_infer.ns + batch.compute_output.ns
    return StatsSnapshot(inferences, executions, counts, ns, batches, execution_ns)


def _mean_us(total_ns: int, count: int) -> float | None:
    return round(total_ns / count / 1e3, 1) if count > 0 else None


def difference(before: StatsSnapshot, after: StatsSnapshot, window_s: float) -> ServerStepStats:
    inferences = after.inference_count - before.inference_count
    executions = after.execution_count - before.execution_count

    def grew(phase: str) -> tuple[int, int]:
        return after.ns.get(phase, 0) - before.ns.get(phase, 0), after.counts.get(phase, 0) - before.counts.get(phase, 0)

    queue_ns, queue_count = grew("queue")
    infer_ns, infer_count = grew("compute_infer")
    compute_ns = sum(grew(phase)[0] for phase in ("compute_input", "compute_infer", "compute_output"))
    batches = {size: count - before.batch_executions.get(size, 0) for size, count in after.batch_executions.items()}
    return ServerStepStats(
        inferences=inferences,
        executions=executions,
        avg_batch=round(inferences / executions, 2) if executions > 0 else None,
        queue_avg_us=_mean_us(queue_ns, queue_count),
        compute_avg_us=_mean_us(compute_ns, infer_count),
        compute_infer_avg_us=_mean_us(infer_ns, infer_count),
        batch_executions={size: count for size, count in sorted(batches.items()) if count > 0},
        busy_share=round((after.execution_ns - before.execution_ns) / 1e9 / window_s, 3) if window_s > 0 else None,
    )


class StatsReader:
    """Reads one model's statistics over its own blocking channel (the parent process's)."""

    def __init__(self, url: str, model: str) -> None:
        self._channel = grpc.insecure_channel(url)
        self._stub = pb_grpc.GRPCInferenceServiceStub(self._channel)
        self._model = model
        self.available = True
        self.unavailable_reason = ""

    def read(self) -> StatsSnapshot | None:
        """A snapshot, or None once the server has said it offers none (then never asks again)."""
        if not self.available:
            return None
        try:
            response = self._stub.ModelStatistics(pb.ModelStatisticsRequest(name=self._model), timeout=10.0)
        except grpc.RpcError as error:
            self.available = False
            self.unavailable_reason = f"{error.code().name}: {error.details()}"  # type: ignore[attr-defined]
            return None
        return snapshot(response, self._model)

    def close(self) -> None:
        self._channel.close()
