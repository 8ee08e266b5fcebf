"""Transport-free request and response types shared by the frontends and the core.

Frontends build an ``InferRequest`` from the wire and turn an ``InferResponse`` back into the wire;
nothing here knows about protobuf or HTTP.
"""

from __future__ import annotations

import enum
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Protocol

import numpy as np

# A request or response parameter value: the InferParameter oneof (bool, int64/uint64, double, string).
ParameterValue = bool | int | float | str


@dataclass(slots=True)
class InferInput:
    """One input as received, its data in one of three forms, all decoded by the core only after
    the request was validated and admitted: ``raw`` bytes, a ``decode`` callable (the frontend's
    own wire form, e.g. gRPC typed contents or HTTP JSON ``data``; it raises ServerError), or a
    ready ``array``."""

    name: str
    datatype: str
    shape: tuple[int, ...]
    raw: bytes | bytearray | memoryview | None = None
    array: np.ndarray | None = None
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    decode: Callable[[], np.ndarray] | None = None


@dataclass(slots=True)
class RequestedOutput:
    name: str
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    # Triton's classification extension: return the top ``class_count`` classes (0 = the tensor).
    class_count: int = 0


@dataclass(slots=True)
class TraceOrigin:
    """What a frontend knows of a request it hands over while tracing is on (Triton's trace
    extension): which frontend, when it began handling it, and the client's W3C trace context.
    Not frozen: one is made per request while tracing is on, and a frozen init costs 4x."""

    protocol: str  # "GRPC" or "HTTP": names the frontend's trace timestamps
    arrived_ns: int  # time.monotonic_ns() when the frontend began handling the request
    traceparent: str = ""
    tracestate: str = ""


class TraceEnd(Protocol):
    def finish(self) -> None:
        """The frontend has encoded the response: the request's trace is complete."""


@dataclass(slots=True)
class InferRequest:
    model_name: str
    model_version: str = ""
    id: str = ""
    inputs: list[InferInput] = field(default_factory=list)
    # Empty means "every model output", as in Triton.
    outputs: list[RequestedOutput] = field(default_factory=list)
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    # Absolute time.monotonic() by which the caller stops waiting (gRPC deadline), or None.
    deadline: float | None = None
    # What the request occupies as received (message or body bytes), for the in-flight budget.
    size_bytes: int = 0
    # Set by a frontend only while tracing is on (InferenceService.tracing_active).
    trace_origin: TraceOrigin | None = None


@dataclass(slots=True)
class InferOutput:
    name: str
    datatype: str
    shape: tuple[int, ...]
    array: np.ndarray
    # Written into the shared-memory region the request named: ``array`` is then empty (of the
    # output's dtype) and the frontends send the name, datatype and shape without data.
    in_shared_memory: bool = False


@dataclass(slots=True)
class InferResponse:
    model_name: str
    model_version: str
    id: str
    outputs: list[InferOutput]
    parameters: dict[str, ParameterValue] = field(default_factory=dict)
    # A sampled request's trace; the frontend calls ``finish()`` once it has encoded the response.
    trace: TraceEnd | None = None


class ModelState(enum.Enum):
    """Lifecycle state of one model version (RepositoryIndex ``state`` strings)."""

    LOADING = "LOADING"
    READY = "READY"
    UNLOADING = "UNLOADING"
    UNAVAILABLE = "UNAVAILABLE"


@dataclass(slots=True, frozen=True)
class TensorMetadata:
    name: str
    datatype: str
    shape: tuple[int, ...]


@dataclass(slots=True, frozen=True)
class ModelMetadata:
    name: str
    versions: tuple[str, ...]
    platform: str
    inputs: tuple[TensorMetadata, ...]
    outputs: tuple[TensorMetadata, ...]


@dataclass(slots=True, frozen=True)
class ServerMetadata:
    name: str
    version: str
    extensions: tuple[str, ...]


@dataclass(slots=True, frozen=True)
class ModelIndexEntry:
    name: str
    version: str
    state: ModelState
    reason: str


@dataclass(slots=True, frozen=True)
class Duration:
    """How many events and their total nanoseconds (Triton's StatisticDuration)."""

    count: int
    ns: int


@dataclass(slots=True, frozen=True)
class BatchStatistics:
    """Executions of one formed batch size, with their compute phases."""

    batch_size: int
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration


@dataclass(slots=True, frozen=True)
class ModelStatistics:
    """One READY version's cumulative statistics (ModelStatistics / GET .../stats)."""

    name: str
    version: str
    # Wall-clock milliseconds since the epoch of the last inference (0 = never).
    last_inference_ms: int
    inference_count: int
    execution_count: int
    success: Duration
    fail: Duration
    queue: Duration
    compute_input: Duration
    compute_infer: Duration
    compute_output: Duration
    batch_stats: tuple[BatchStatistics, ...]
    # Requests the response cache answered, and lookups that missed it (their durations).
    cache_hit: Duration = Duration(0, 0)
    cache_miss: Duration = Duration(0, 0)


@dataclass(slots=True, frozen=True)
class SharedMemoryRegion:
    """A registered system shared-memory region (SystemSharedMemoryStatus): ``byte_size`` bytes
    of the POSIX shared-memory object ``key``, from ``offset``."""

    name: str
    key: str
    offset: int
    byte_size: int


@dataclass(slots=True, frozen=True)
class TraceSettings:
    """One trace setting in force (Triton's trace extension: TraceSetting, ``v2[/models/m]/trace/setting``)."""

    level: tuple[str, ...]  # ("OFF",) or ("TIMESTAMPS",)
    rate: int
    count: int  # traces still to collect; -1 = no limit
    log_frequency: int
    file: str  # only ever from the command line
