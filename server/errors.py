"""One error type for the whole server.

Core code raises ``ServerError`` with a transport-neutral ``ErrorCode``; each frontend maps the
code exactly once (gRPC status in ``frontends/grpc``, HTTP status in ``frontends/http``). The
codes mirror Triton's ``TRITONSERVER_Error`` codes so messages and statuses match Triton's.
"""

from __future__ import annotations

import enum


class ErrorCode(enum.Enum):
    INVALID_ARG = "INVALID_ARG"
    NOT_FOUND = "NOT_FOUND"
    UNAVAILABLE = "UNAVAILABLE"
    INTERNAL = "INTERNAL"
    UNSUPPORTED = "UNSUPPORTED"
    ALREADY_EXISTS = "ALREADY_EXISTS"
    # Not a Triton code: a request whose caller's deadline passed while it waited in a queue.
    DEADLINE_EXCEEDED = "DEADLINE_EXCEEDED"


# Triton's Status::CodeString for each code (DEADLINE_EXCEEDED is ortserve's own).
_STATUS_TEXT = {
    ErrorCode.INVALID_ARG: "Invalid argument",
    ErrorCode.NOT_FOUND: "Not found",
    ErrorCode.UNAVAILABLE: "Unavailable",
    ErrorCode.INTERNAL: "Internal",
    ErrorCode.UNSUPPORTED: "Unsupported",
    ErrorCode.ALREADY_EXISTS: "Already exists",
    ErrorCode.DEADLINE_EXCEEDED: "Deadline exceeded",
}


class FailureReason(enum.Enum):
    """Why a request failed: Triton's ``reason`` label on nv_inference_request_failure.

    It travels on the ServerError, so every failure is counted from the error itself, in one
    place, whichever part of the server refused the request.
    """

    # The scheduler refused it: queue full, or its queue timeout expired.
    REJECTED = "REJECTED"
    # The caller went away or its deadline passed before it ran.
    CANCELED = "CANCELED"
    # ONNX Runtime failed while running it.
    BACKEND = "BACKEND"
    # Anything else: a bad request, an unknown model, an unloaded version.
    OTHER = "OTHER"


class ServerError(Exception):
    """A failure with a neutral code, the exact message a client should see, and the reason it
    is counted under in the failure metrics."""

    def __init__(self, code: ErrorCode, message: str, reason: FailureReason = FailureReason.OTHER) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
        self.reason = reason

    def __repr__(self) -> str:
        return f"ServerError({self.code.name}, {self.message!r})"

    def status_text(self) -> str:
        """Triton's Status::AsString(), e.g. "Invalid argument: <message>": how Triton words a
        load failure in RepositoryIndex reasons and load errors."""
        return f"{_STATUS_TEXT[self.code]}: {self.message}"

    @classmethod
    def invalid_arg(cls, message: str) -> ServerError:
        return cls(ErrorCode.INVALID_ARG, message)

    @classmethod
    def not_found(cls, message: str) -> ServerError:
        return cls(ErrorCode.NOT_FOUND, message)

    @classmethod
    def unavailable(cls, message: str) -> ServerError:
        return cls(ErrorCode.UNAVAILABLE, message)

    @classmethod
    def internal(cls, message: str) -> ServerError:
        return cls(ErrorCode.INTERNAL, message)

    @classmethod
    def unsupported(cls, message: str) -> ServerError:
        return cls(ErrorCode.UNSUPPORTED, message)
