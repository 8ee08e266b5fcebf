"""Process-wide logging: one line per record, as text or JSON (for log shippers)."""

from __future__ import annotations

import json
import logging
import sys
import threading
import time
from collections.abc import Callable

from server.settings import LogFormat


class JsonFormatter(logging.Formatter):
    def format(self, record: logging.LogRecord) -> str:
        entry = {
            "time": self.formatTime(record, "%Y-%m-%dT%H:%M:%S"),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        if record.exc_info:
            entry["exception"] = self.formatException(record.exc_info)
        return json.dumps(entry)


def configure_logging(log_format: LogFormat, verbose: int) -> None:
    """verbose 0 → INFO, ≥1 → DEBUG (Triton's --log-verbose is a level too)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format is LogFormat.JSON:
        handler.setFormatter(JsonFormatter())
    else:
        handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
    root = logging.getLogger()
    root.handlers[:] = [handler]
    root.setLevel(logging.DEBUG if verbose > 0 else logging.INFO)
    # grpc and aiohttp are chatty at DEBUG; keep them at INFO unless verbosity is high.
    for noisy in ("grpc", "aiohttp.access", "asyncio"):
        logging.getLogger(noisy).setLevel(logging.DEBUG if verbose > 1 else logging.WARNING)


class ThrottledLog:
    """At most one line per ``interval_s`` for a kind of event clients can cause at will (malformed
    messages, refused connections): the log stays readable and cannot be flooded. The next line
    says how many were left out. Safe to call from any thread."""

    def __init__(self, logger: logging.Logger, interval_s: float = 10.0, clock: Callable[[], float] = time.monotonic) -> None:
        self._logger = logger
        self._interval_s = interval_s
        self._clock = clock
        self._next_at = 0.0
        self._suppressed = 0
        self._lock = threading.Lock()

    def warning(self, message: str, *args: object) -> bool:
        """Log unless a line went out less than ``interval_s`` ago; True when it was logged."""
        with self._lock:
            now = self._clock()
            if now < self._next_at:
                self._suppressed += 1
                return False
            suppressed, self._suppressed, self._next_at = self._suppressed, 0, now + self._interval_s
        suffix = f" ({suppressed} more like it in the last {self._interval_s:g}s not logged)" if suppressed else ""
        self._logger.warning(message + suffix, *args)
        return True
