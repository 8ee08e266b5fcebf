"""Triton's trace mode: each trace as Triton's JSON objects, written to the file named on the
command line (``--trace-config triton,file=<path>``), never to one a client names.

A trace is a model object ``{"id", "model_name", "model_version"[, "request_id"]}`` and one
``{"id", "timestamps": [{"name", "ns"}]}`` object per instant, in steady-clock nanoseconds (Linux
CLOCK_MONOTONIC, as Triton's std::chrono::steady_clock). Where they go follows Triton
(tracer.cc): with ``log_frequency`` N, every N traces of a setting go to ``<file>.<index>`` as
one JSON array; with 0, they go to ``<file>`` itself, one array closed at shutdown; a setting
whose count runs out writes what it collected to the next ``<file>.<index>``.

Files are written on one thread of their own, so the event loop never waits for a disk.
"""

from __future__ import annotations

import logging
from concurrent.futures import ThreadPoolExecutor
from typing import IO

import orjson

from server.observability.statistics import RequestTiming
from server.observability.tracing import LiveSetting, RequestTrace

log = logging.getLogger(__name__)

# The request path's instants under Triton's names (RequestTiming field → activity).
CORE_TIMESTAMPS = (
    ("received_ns", "REQUEST_START"),
    ("enqueued_ns", "QUEUE_START"),
    ("exec_start_ns", "COMPUTE_START"),
    ("input_done_ns", "COMPUTE_INPUT_END"),
    ("infer_done_ns", "COMPUTE_OUTPUT_START"),
    ("output_done_ns", "COMPUTE_END"),
)
# The frontend's instants: when it began handling the request and when its response was encoded.
FRONTEND_TIMESTAMPS = {"HTTP": ("HTTP_RECV_START", "HTTP_SEND_START"), "GRPC": ("GRPC_WAITREAD_END", "GRPC_SEND_START")}


def timestamps(trace: RequestTrace) -> list[tuple[str, int]]:
    """The trace's instants in order, under Triton's names (those the request never reached are absent)."""
    timing = trace.timing or RequestTiming(received_ns=0)
    points = [(name, getattr(timing, field)) for field, name in CORE_TIMESTAMPS]
    points.append(("REQUEST_END", trace.request_end_ns))
    if trace.origin is not None and trace.origin.protocol in FRONTEND_TIMESTAMPS:
        first, last = FRONTEND_TIMESTAMPS[trace.origin.protocol]
        points = [(first, trace.origin.arrived_ns), *points]
        if not trace.error:
            points.append((last, trace.finished_ns))
    return [(name, ns) for name, ns in points if ns]


def render(trace: RequestTrace) -> str:
    """One trace as Triton writes it: its JSON objects separated by commas (no brackets)."""
    model: dict[str, object] = {"id": trace.trace_id, "model_name": trace.model, "model_version": trace.version}
    if trace.request_id:
        model["request_id"] = trace.request_id
    objects = [model] + [{"id": trace.trace_id, "timestamps": [{"name": name, "ns": ns}]} for name, ns in timestamps(trace)]
    return ",".join(orjson.dumps(item).decode() for item in objects)


class TraceFileSink:
    """Collects rendered traces per setting and writes them out on the writer thread."""

    def __init__(self, path: str) -> None:
        self._path = path
        self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="trace-file")
        self._next_index = 0  # of the next <file>.<index>
        self._main: IO[str] | None = None  # <file> itself, opened on the writer thread at its first write
        self._closed = False

    def begin(self, trace: RequestTrace) -> None:
        pass

    def end(self, trace: RequestTrace) -> None:
        setting = trace.setting
        setting.pending.append(render(trace))
        setting.collected += 1
        frequency = setting.values.log_frequency
        if setting.retired:
            self._flush(setting, indexed=frequency != 0)
        elif (frequency and len(setting.pending) >= frequency) or (setting.remaining == 0 and setting.collected == setting.created):
            self._flush(setting, indexed=True)

    def retire(self, setting: LiveSetting) -> None:
        if setting.pending:
            self._flush(setting, indexed=setting.values.log_frequency != 0)

    def close(self) -> None:
        self._closed = True  # a trace that ends after this (a request outliving shutdown) is dropped
        self._writer.submit(self._close_main)
        self._writer.shutdown(wait=True)

    def _flush(self, setting: LiveSetting, indexed: bool) -> None:
        if self._closed:
            setting.pending.clear()
            return
        chunk = ",".join(setting.pending)
        setting.pending.clear()
        if indexed:
            path = f"{self._path}.{self._next_index}"
            self._next_index += 1
            self._writer.submit(self._write_indexed, path, chunk)
        else:
            self._writer.submit(self._append_main, chunk)

    # ---- on the writer thread ----------------------------------------------------------------

    def _write_indexed(self, path: str, chunk: str) -> None:
        try:
            with open(path, "w", encoding="utf-8") as file:
                file.write(f"[{chunk}]")
        except OSError as exc:
            log.error("failed creating trace file: %s", exc)

    def _append_main(self, chunk: str) -> None:
        try:
            if self._main is None:
                self._main = open(self._path, "w", encoding="utf-8")  # noqa: SIM115 (closed at shutdown)
                self._main.write("[")
            else:
                self._main.write(",")
            self._main.write(chunk)
            self._main.flush()
        except OSError as exc:
            log.error("failed writing trace file: %s", exc)

    def _close_main(self) -> None:
        if self._main is not None:
            try:
                self._main.write("]")
                self._main.close()
            except OSError as exc:
                log.error("failed closing trace file: %s", exc)
