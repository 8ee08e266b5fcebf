"""One validated request on its way through a scheduler to an instance and back."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Hashable
from dataclasses import dataclass, field

import numpy as np

from server.errors import ServerError
from server.observability.statistics import RequestTiming
from server.observability.tracing import RequestTrace


@dataclass(frozen=True, slots=True)
class Correlation:
    """A request's place in a sequence (Triton's correlation ID and its START / END flags)."""

    # A non-zero unsigned int or a non-empty string (tritonclient's ``sequence_id``).
    id: int | str
    start: bool = False
    end: bool = False


@dataclass(slots=True, eq=False)
class InferenceJob:
    """Inputs ready for ONNX Runtime plus what the scheduler needs to place and answer them.

    ``future`` resolves on the event loop with the job's outputs (name → array, already split
    from the batch) or with a ServerError. Outcomes are set only if the future is not done: the
    caller may have been cancelled in the meantime.
    """

    feeds: dict[str, np.ndarray]
    # Rows this request contributes to a batch (its leading dim); 1 for non-batching models.
    rows: int
    output_names: tuple[str, ...]
    future: asyncio.Future[dict[str, np.ndarray]]
    timing: RequestTiming
    # Requests merge only when these match: each input's name and non-batch dims.
    shape_key: Hashable = ()
    priority: int = 0
    # Queue timeout in microseconds requested by the client (0 = none).
    timeout_us: int = 0
    # Monotonic ns after which the caller no longer waits (gRPC deadline); 0 = none.
    deadline_ns: int = 0
    # Request shapes of the inputs the model's batch inputs are computed from (usually none).
    source_shapes: dict[str, tuple[int, ...]] = field(default_factory=dict)
    # Set by the queue at admission: priority level and queue-timeout instant (0 = none).
    level: int = 1
    timeout_at_ns: int = 0
    # Arrival order within the scheduler (used to release responses in order).
    sequence: int = 0
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    # The sequence it belongs to (sequence_id != 0 / ""); only a sequence batcher reads it.
    correlation: Correlation | None = None
    # For a scheduler with a response cache (Scheduler.cache_token): the digest of everything that
    # decides this request's result, and the decoding of its inputs, left undone until a miss
    # needs them (``feeds`` is empty until then).
    cache_key: bytes = b""
    decode_feeds: Callable[[], dict[str, np.ndarray]] | None = None
    # Set when the cache answered: the job's outputs came from it, not from a model execution.
    from_cache: bool = False
    cache_lookup_ns: int = 0
    # Set when this request is traced (the batcher tells it which batch it ran in).
    trace: RequestTrace | None = None

    @property
    def enqueued_ns(self) -> int:
        return self.timing.enqueued_ns

    def abandoned(self) -> bool:
        """True once the caller stopped waiting (cancelled) or an outcome was already set."""
        return self.future.done()

    def load_feeds(self) -> None:
        """Decode inputs that admission left undecoded. Raises the decoding's ServerError."""
        if self.decode_feeds is not None:
            self.feeds = self.decode_feeds()
            self.decode_feeds = None

    def succeed(self) -> None:
        if not self.future.done():
            self.future.set_result(self.outputs)

    def fail(self, error: ServerError) -> None:
        if not self.future.done():
            self.future.set_exception(error)
