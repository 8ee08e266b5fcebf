"""Build the Tracer the command line asks for (``--trace-config``), with its sink."""

from __future__ import annotations

from server.observability.trace_file import TraceFileSink
from server.observability.tracing import Tracer, TraceSink
from server.settings import TraceMode, TraceOptions


def build_tracer(options: TraceOptions, server_id: str) -> Tracer:
    """Triton mode writes the command line's file (without one nothing can be traced, since no
    request may name a file); OpenTelemetry mode exports to ``url``, the resource's
    ``service.name`` defaulting to the server's ``--id``. Tracing may be off at start and turned
    on later over the trace extension, so the sink exists whenever tracing could happen."""
    sink: TraceSink | None = None
    if options.mode is TraceMode.OPENTELEMETRY:
        # Imported here: the OpenTelemetry SDK costs start-up time that other modes need not pay.
        from server.observability.trace_otel import OpenTelemetrySink

        sink = OpenTelemetrySink(options.otel_url, {"service.name": server_id, **dict(options.otel_resource)})
    elif options.file:
        sink = TraceFileSink(options.file)
    return Tracer(options, sink)
