"""The single mapping from ServerError codes to gRPC status codes (Triton's CodeToStatus)."""

from __future__ import annotations

import grpc

from server.errors import ErrorCode

GRPC_STATUS: dict[ErrorCode, grpc.StatusCode] = {
    ErrorCode.INVALID_ARG: grpc.StatusCode.INVALID_ARGUMENT,
    ErrorCode.NOT_FOUND: grpc.StatusCode.NOT_FOUND,
    ErrorCode.UNAVAILABLE: grpc.StatusCode.UNAVAILABLE,
    ErrorCode.INTERNAL: grpc.StatusCode.INTERNAL,
    ErrorCode.UNSUPPORTED: grpc.StatusCode.UNIMPLEMENTED,
    ErrorCode.ALREADY_EXISTS: grpc.StatusCode.ALREADY_EXISTS,
    ErrorCode.DEADLINE_EXCEEDED: grpc.StatusCode.DEADLINE_EXCEEDED,
}

# A status message travels in the grpc-message trailer, which HTTP/2 peers cap (8-16 KiB of
# metadata): a longer one would turn the real error into RESOURCE_EXHAUSTED on the client.
MAX_STATUS_MESSAGE_CHARS = 4096


def status_details(message: str) -> str:
    """``message`` cut to what a gRPC trailer carries safely, saying that it was cut."""
    if len(message) <= MAX_STATUS_MESSAGE_CHARS:
        return message
    return message[: MAX_STATUS_MESSAGE_CHARS - 40] + f"... ({len(message) - MAX_STATUS_MESSAGE_CHARS + 40} more characters)"
