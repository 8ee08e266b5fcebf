"""One validated request on its way through a scheduler to an instance and back."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field

import numpy as np

from server.observability.statistics import FailureReason, RequestTiming


@dataclass(slots=True, eq=False)
class InferenceJob:
    """Inputs ready for ONNX Runtime plus what the scheduler needs to place and answer them.

    ``future`` resolves on the event loop with the job's outputs (name → array, already split
    from the batch) or with a ServerError. The scheduler only sets it if it is not done: the caller
    may have been cancelled in the meantime.
    """

    feeds: dict[str, np.ndarray]
    # Rows this request contributes to a batch (its leading dim); 1 for non-batching models.
    batch_size: int
    output_names: tuple[str, ...]
    future: asyncio.Future[dict[str, np.ndarray]]
    timing: RequestTiming
    priority: int = 0
    # Queue timeout in microseconds requested by the client (0 = none).
    timeout_us: int = 0
    # Absolute monotonic seconds after which nobody waits for the answer (gRPC deadline).
    deadline: float | None = None
    outputs: dict[str, np.ndarray] = field(default_factory=dict)
    # Why the job failed, for nv_inference_request_failure{reason}; set with the exception.
    failure_reason: FailureReason = FailureReason.OTHER

    def succeed(self) -> None:
        if not self.future.done():
            self.future.set_result(self.outputs)

    def fail(self, error: BaseException, reason: FailureReason) -> None:
        if not self.future.done():
            self.failure_reason = reason
            self.future.set_exception(error)

    def abandoned(self) -> bool:
        """True once the caller stopped waiting (cancelled) or an outcome was already set."""
        return self.future.done()
