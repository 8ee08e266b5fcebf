"""ServerError across the process boundary: its code, message and failure reason as plain
values (the exception itself does not pickle: its constructor takes more than its message)."""

from __future__ import annotations

from server.errors import ErrorCode, FailureReason, ServerError

WireError = tuple[str, str, str]


def error_to_wire(error: BaseException) -> WireError:
    if isinstance(error, ServerError):
        return (error.code.value, error.message, error.reason.value)
    return (ErrorCode.INTERNAL.value, f"internal error: {error}", FailureReason.OTHER.value)


def error_from_wire(wire: WireError) -> ServerError:
    code, message, reason = wire
    return ServerError(ErrorCode(code), message, FailureReason(reason))
