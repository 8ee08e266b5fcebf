"""OpenTelemetry trace mode (``--trace-config mode=opentelemetry``): spans exported over OTLP/HTTP.

Each sampled request is one trace (or a part of the client's, when it sent a W3C
``traceparent``):

    InferRequest (SERVER)         from the frontend's first touch to the encoded response
    ├── decode                    parse, validate and decode the request, until it is queued
    ├── <model> (Triton's span)   REQUEST_START → REQUEST_END, attributes triton.model_name, …
    │   ├── queue                 queued until its batch was formed
    │   ├── batch                 the formed batch handed to an instance: ortserve.batch_size
    │   │                         (rows), ortserve.batch_requests, links to the other traced
    │   │                         requests of the batch
    │   └── compute               COMPUTE_START → COMPUTE_END (Triton's events in between)
    └── encode                    the response encoded by the frontend

Span times are the request path's monotonic instants moved onto the wall clock by one offset
taken when the request is sampled (Triton does the same). Spans go to a BatchSpanProcessor, which
exports on its own thread; the event loop only builds them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass
from typing import TYPE_CHECKING

from opentelemetry import trace as otel
from opentelemetry.context import Context
from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

from server.observability.trace_file import CORE_TIMESTAMPS, timestamps

if TYPE_CHECKING:
    from server.observability.tracing import LiveSetting, RequestTrace

INSTRUMENTATION = "ortserve"
_REQUEST_EVENTS = {"REQUEST_START", "QUEUE_START", "REQUEST_END"}
_COMPUTE_EVENTS = {name for _, name in CORE_TIMESTAMPS} - _REQUEST_EVENTS


@dataclass(slots=True)
class _Spans:
    offset_ns: int  # wall clock minus monotonic clock when the request was sampled
    root: otel.Span
    request: otel.Span


class OpenTelemetrySink:
    def __init__(self, url: str, resource: dict[str, str]) -> None:
        self._provider = TracerProvider(resource=Resource.create(resource))
        self._provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
        self._tracer = self._provider.get_tracer(INSTRUMENTATION)
        self._propagator = TraceContextTextMapPropagator()

    def begin(self, trace: RequestTrace) -> None:
        offset = time.time_ns() - time.monotonic_ns()
        origin = trace.origin
        parent: Context | None = None
        if origin is not None and origin.traceparent:
            carrier = {"traceparent": origin.traceparent, "tracestate": origin.tracestate}
            parent = self._propagator.extract(carrier)  # an invalid header yields a new trace
        start = origin.arrived_ns if origin is not None else trace.received_ns
        root = self._tracer.start_span("InferRequest", context=parent, kind=otel.SpanKind.SERVER, start_time=offset + start)
        attributes: dict[str, str | int] = {
            "triton.model_name": trace.model,
            "triton.model_version": trace.version,
            "triton.trace_id": trace.trace_id,
            "triton.trace_parent_id": 0,
        }
        if trace.request_id:
            attributes["triton.request_id"] = trace.request_id
        request = self._tracer.start_span(
            trace.model, context=otel.set_span_in_context(root), attributes=attributes, start_time=offset + trace.received_ns
        )
        trace.otel = _Spans(offset, root, request)

    def end(self, trace: RequestTrace) -> None:
        spans: _Spans = trace.otel
        points = dict(timestamps(trace))
        timing = trace.timing
        request_context = otel.set_span_in_context(spans.request)
        root_context = otel.set_span_in_context(spans.root)
        first = trace.origin.arrived_ns if trace.origin is not None else trace.received_ns
        enqueued = timing.enqueued_ns if timing else 0
        self._child("decode", root_context, spans, first, enqueued or trace.request_end_ns)
        if timing is not None and timing.exec_start_ns:
            batch = trace.batch
            formed = batch.dispatched_ns if batch is not None else timing.exec_start_ns
            self._child("queue", request_context, spans, enqueued, formed)
            if batch is not None:
                self._batch_span(request_context, spans, batch.dispatched_ns, timing.exec_start_ns, trace)
            compute = self._child("compute", request_context, spans, timing.exec_start_ns, timing.output_done_ns, end=False)
            self._events(compute, spans, points, _COMPUTE_EVENTS)
            compute.end(end_time=spans.offset_ns + timing.output_done_ns)
        if not trace.error:
            self._child("encode", root_context, spans, trace.request_end_ns, trace.finished_ns)
        self._events(spans.request, spans, points, _REQUEST_EVENTS)
        self._events(spans.root, spans, points, set(points) - _REQUEST_EVENTS - _COMPUTE_EVENTS)
        if trace.error:
            for span in (spans.request, spans.root):
                span.set_status(otel.Status(otel.StatusCode.ERROR, trace.error))
        spans.request.end(end_time=spans.offset_ns + trace.request_end_ns)
        spans.root.end(end_time=spans.offset_ns + trace.finished_ns)

    def retire(self, setting: LiveSetting) -> None:
        pass

    def close(self) -> None:
        self._provider.shutdown()  # exports what is queued, then stops the processor's thread

    def _child(self, name: str, parent: Context, spans: _Spans, start_ns: int, end_ns: int, end: bool = True) -> otel.Span:
        span = self._tracer.start_span(name, context=parent, start_time=spans.offset_ns + start_ns)
        if end:
            span.end(end_time=spans.offset_ns + max(start_ns, end_ns))
        return span

    def _batch_span(self, parent: Context, spans: _Spans, start_ns: int, end_ns: int, trace: RequestTrace) -> None:
        batch = trace.batch
        assert batch is not None
        links = [otel.Link(other.otel.request.get_span_context()) for other in batch.co_batched if other.otel is not None]
        span = self._tracer.start_span(
            "batch",
            context=parent,
            attributes={"ortserve.batch_size": batch.rows, "ortserve.batch_requests": batch.requests},
            links=links,
            start_time=spans.offset_ns + start_ns,
        )
        span.end(end_time=spans.offset_ns + max(start_ns, end_ns))

    @staticmethod
    def _events(span: otel.Span, spans: _Spans, points: dict[str, int], names: Iterable[str]) -> None:
        for name, ns in sorted(((name, points[name]) for name in names if name in points), key=lambda item: item[1]):
            span.add_event(name, timestamp=spans.offset_ns + ns)
