"""Request tracing, Triton's trace extension: which requests to trace, and what a trace holds.

The Tracer keeps the settings in force (trace_settings.py's rules), samples requests by their
setting's rate and count, and hands every finished trace to its sink: Triton's JSON file
(trace_file.py) or OpenTelemetry (trace_otel.py). A RequestTrace records only what the request
path does not already record: the frontend's origin, the batch it ran in, its end; the queue and
compute instants come from the request's RequestTiming.

Cost when tracing is off: ``Tracer.active`` is False and every stage of the request path checks
one attribute (the service this flag, the batcher and the frontends ``trace is None``).
Everything here runs on the event loop; sinks do their blocking work on their own threads.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass
from time import monotonic_ns
from typing import Any, Protocol

from server.observability.statistics import RequestTiming
from server.observability.trace_settings import FIELDS, Entry, SettingValues, Update, check_settable, invalid_reason, merge
from server.settings import TraceMode, TraceOptions
from server.types import TraceOrigin, TraceSettings


class TraceSink(Protocol):
    def begin(self, trace: RequestTrace) -> None:
        """A request was sampled (on the loop)."""

    def end(self, trace: RequestTrace) -> None:
        """A sampled request is complete: record it (on the loop; never blocks)."""

    def retire(self, setting: LiveSetting) -> None:
        """``setting`` was replaced or the tracer closes: write what it collected."""

    def close(self) -> None:
        """Blocking: write everything out and stop (called off the loop at shutdown)."""


class LiveSetting:
    """A setting in force with its counters. An update replaces it (traces in flight keep theirs)."""

    __slots__ = ("collected", "created", "entry", "pending", "rate", "remaining", "retired", "seen", "valid")

    def __init__(self, entry: Entry, needs_file: bool) -> None:
        self.entry = entry
        self.valid = not invalid_reason(entry.values, needs_file)
        self.rate = entry.values.rate
        self.remaining = entry.values.count
        self.seen = self.created = self.collected = 0
        self.pending: list[str] = []  # rendered traces a file sink has not written yet
        self.retired = False

    @property
    def values(self) -> SettingValues:
        return self.entry.values

    @property
    def can_sample(self) -> bool:
        return self.valid and self.remaining != 0

    def sample(self) -> bool:
        """Triton's rule: every ``rate``-th request, while the count lasts (-1: no limit)."""
        if not self.valid or self.remaining == 0:
            return False
        self.seen += 1
        if self.seen % self.rate:
            return False
        if self.remaining > 0:
            self.remaining -= 1
        self.created += 1
        return True

    def describe(self) -> TraceSettings:
        values = self.entry.values
        level = ("TIMESTAMPS",) if values.timestamps else ("OFF",)
        return TraceSettings(level, values.rate, self.remaining, values.log_frequency, values.file)


@dataclass(frozen=True, slots=True)
class BatchInfo:
    """The batch a traced request ran in."""

    dispatched_ns: int
    rows: int
    requests: int
    # The other traced requests of the same batch (what an OpenTelemetry batch span links to).
    co_batched: tuple[RequestTrace, ...]


@dataclass(frozen=True, slots=True)
class TracedRequest:
    """What the service knows of a request when it decides whether to trace it."""

    model: str
    version: int
    request_id: str
    origin: TraceOrigin | None
    received_ns: int


def _no_trace() -> None:
    return None


class RequestTrace:
    """One sampled request. The service starts it, the batcher adds its batch, the service ends
    it, and whoever answers the client (a frontend, after encoding) finishes it."""

    __slots__ = (
        "batch",
        "error",
        "finished_ns",
        "model",
        "origin",
        "otel",
        "received_ns",
        "request_end_ns",
        "request_id",
        "setting",
        "sink",
        "timing",
        "trace_id",
        "version",
    )

    def __init__(self, trace_id: int, setting: LiveSetting, sink: TraceSink, request: TracedRequest) -> None:
        self.trace_id, self.setting, self.sink = trace_id, setting, sink
        self.model, self.version, self.request_id = request.model, request.version, request.request_id
        self.origin, self.received_ns = request.origin, request.received_ns
        self.timing: RequestTiming | None = None
        self.batch: BatchInfo | None = None
        self.request_end_ns = self.finished_ns = 0
        self.error = ""
        self.otel: Any = None  # the OpenTelemetry sink's spans

    def batched(self, dispatched_ns: int, rows: int, jobs: list[Any]) -> None:
        """The batcher ran this request in a batch of ``jobs`` (each has a ``trace``)."""
        others = tuple(job.trace for job in jobs if job.trace is not None and job.trace is not self)
        self.batch = BatchInfo(dispatched_ns, rows, len(jobs), others)

    def request_ended(self, timing: RequestTiming, error: str = "") -> None:
        """The service has the request's outcome (REQUEST_END)."""
        self.timing, self.request_end_ns, self.error = timing, monotonic_ns(), error

    def finish(self) -> None:
        """The response is encoded (or the request failed): the trace is complete. Idempotent."""
        if self.finished_ns:
            return
        self.finished_ns = monotonic_ns()
        self.sink.end(self)

    def __reduce__(self) -> tuple[Any, tuple[()]]:
        # A trace does not cross a process boundary: it ends where it is and travels as None.
        self.finish()
        return (_no_trace, ())


class Tracer:
    """The trace settings in force and the sampler. Runs on the event loop."""

    def __init__(self, options: TraceOptions, sink: TraceSink | None) -> None:
        self._sink = sink
        # Triton mode writes a file; without one (and it is never set over the network) nothing traces.
        self._needs_file = options.mode is TraceMode.TRITON
        self._default = SettingValues(options.timestamps, options.rate, options.count, options.log_frequency, options.file)
        self._global = self._live(Entry(self._default))
        self._models: dict[str, LiveSetting] = {}
        self._ids = itertools.count(1)
        self.active = False
        self._refresh()

    def settings(self, model: str) -> TraceSettings:
        """The setting that applies to ``model`` ("" = the global one)."""
        return self._models.get(model, self._global).describe() if model else self._global.describe()

    def update(self, model: str, update: Update) -> None:
        """Apply a parsed update to the global setting (``model`` "") or to one model's.

        Raises INVALID_ARG (Triton's words) for a setting that cannot trace unless it is off.
        """
        if not model:
            entry = merge(update, self._global.entry, self._default)
            check_settable(entry.values, self._needs_file)
            self._retire(self._global)
            self._global = self._live(entry)
            for name, live in list(self._models.items()):  # models mirroring global fields follow them
                if live.entry.specified != frozenset(FIELDS):
                    self._retire(live)
                    self._models[name] = self._live(merge({}, live.entry, entry.values))
        else:
            current = self._models.get(model)
            entry = merge(update, current.entry if current else None, self._global.values)
            if entry.specified:
                check_settable(entry.values, self._needs_file)
            if current is not None:
                self._retire(current)
                del self._models[model]
            if entry.specified:  # a model setting that specifies nothing uses the global one
                self._models[model] = self._live(entry)
        self._refresh()

    def start(self, model: str, version: int, request_id: str, origin: TraceOrigin | None, received_ns: int) -> RequestTrace | None:
        """A trace for this request if its setting samples it now, else None."""
        setting = self._models.get(model, self._global) if self._models else self._global
        if self._sink is None or not setting.sample():
            return None
        trace = RequestTrace(next(self._ids), setting, self._sink, TracedRequest(model, version, request_id, origin, received_ns))
        self._sink.begin(trace)
        if not setting.can_sample:
            self._refresh()
        return trace

    def retire_all(self) -> None:
        """At shutdown, on the loop: hand every setting's collected traces to the sink."""
        for live in (self._global, *self._models.values()):
            self._retire(live)
        self.active = False

    def close(self) -> None:
        """Blocking (call off the loop, after ``retire_all``): the sink writes out and stops."""
        if self._sink is not None:
            self._sink.close()

    def _live(self, entry: Entry) -> LiveSetting:
        return LiveSetting(entry, self._needs_file)

    def _retire(self, live: LiveSetting) -> None:
        live.retired = True
        if self._sink is not None:
            self._sink.retire(live)

    def _refresh(self) -> None:
        self.active = self._sink is not None and any(live.can_sample for live in (self._global, *self._models.values()))
