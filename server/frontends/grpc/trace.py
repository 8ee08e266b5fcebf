"""The trace extension over gRPC: TraceSetting messages ⇄ plain values, and a call's trace origin."""

from __future__ import annotations

from collections.abc import Iterable
from time import monotonic_ns
from typing import Any

from server.proto import grpc_service_pb2 as pb
from server.types import TraceOrigin, TraceSettings


def settings_update_from_pb(request: pb.TraceSettingRequest) -> dict[str, tuple[str, ...] | None] | None:
    """The request's settings (an empty value clears one), or None when it names none: then
    Triton only reads the setting."""
    if not request.settings:
        return None
    return {name: tuple(setting.value) or None for name, setting in request.settings.items()}


def settings_to_pb(settings: TraceSettings) -> pb.TraceSettingResponse:
    response = pb.TraceSettingResponse()
    values = {
        "trace_level": list(settings.level),
        "trace_rate": [str(settings.rate)],
        "trace_count": [str(settings.count)],
        "log_frequency": [str(settings.log_frequency)],
        "trace_file": [settings.file],
    }
    for name, value in values.items():
        response.settings[name].value.extend(value)
    return response


def call_origin(metadata: Iterable[Any] | None, arrived_ns: int | None = None) -> TraceOrigin:
    """The origin of a request read from a call with this metadata (now, unless ``arrived_ns``),
    with the W3C ``traceparent`` and ``tracestate`` the client sent as metadata, if any."""
    origin = TraceOrigin("GRPC", arrived_ns if arrived_ns is not None else monotonic_ns())
    for key, value in metadata or ():
        if key == "traceparent":
            origin.traceparent = value
        elif key == "tracestate":
            origin.tracestate = value
    return origin
