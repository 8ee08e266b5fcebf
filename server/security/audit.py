"""The audit trail: one structured log line per model load, unload and refused call, and counters.

Lines go to the ``ortserve.audit`` logger as ``audit {json}`` with the principal, the action, the
model, the outcome and the peer; never a token or a header value. Refused calls are something a
client can cause at will, so their lines are bounded (``REFUSAL_LINES_PER_WINDOW`` per
``WINDOW_SECS``, and a line saying how many were left out); the counters count every one.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from server.observability import families

log = logging.getLogger("ortserve.audit")

REFUSAL_LINES_PER_WINDOW = 100
WINDOW_SECS = 10.0
# A client string (a model name) in an audit line is cut to this many characters.
MAX_FIELD_CHARS = 256


def _field(value: str) -> str:
    return value if len(value) <= MAX_FIELD_CHARS else value[:MAX_FIELD_CHARS] + "..."


@dataclass(frozen=True, slots=True)
class AuditCounts:
    auth_failures: Counter[tuple[str, str, str]]  # (protocol, group, reason) → refusals
    events: Counter[tuple[str, str]]  # (action, outcome) → count


class AuditLog:
    """Thread-safe: gRPC's certificate callbacks and the event loop may both report."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._clock = clock
        self._lock = threading.Lock()
        self._window_start = clock()
        self._refusals_logged = 0
        self._refusals_dropped = 0
        self.events: Counter[tuple[str, str]] = Counter()  # (action, outcome)
        self.auth_failures: Counter[tuple[str, str, str]] = Counter()  # (protocol, group, reason)

    def action(self, principal: str, action: str, model: str, outcome: str, peer: str, protocol: str) -> None:
        """A load or unload, allowed or not, with its outcome ("ok" or the error)."""
        with self._lock:
            self.events[(action, "ok" if outcome == "ok" else "error")] += 1
        self._write(logging.INFO, principal=principal, action=action, model=model, outcome=outcome, peer=peer, protocol=protocol)

    def refusal(self, principal: str, action: str, model: str, group: str, reason: str, peer: str, protocol: str) -> None:
        """A call refused by authentication or authorisation."""
        with self._lock:
            self.events[(action if action in ("load", "unload") else "call", reason)] += 1
            self.auth_failures[(protocol, group, reason)] += 1
            if not self._take_refusal_slot():
                return
            dropped, self._refusals_dropped = self._refusals_dropped, 0
        if dropped:
            self._write(logging.WARNING, action="audit", outcome=f"{dropped} refused call(s) not logged (rate bound)")
        fields = {"principal": principal, "action": action, "model": model, "group": group}
        self._write(logging.WARNING, **fields, outcome="refused", reason=reason, peer=peer, protocol=protocol)

    def _take_refusal_slot(self) -> bool:
        now = self._clock()
        if now - self._window_start >= WINDOW_SECS:
            self._window_start, self._refusals_logged = now, 0
        if self._refusals_logged >= REFUSAL_LINES_PER_WINDOW:
            self._refusals_dropped += 1
            return False
        self._refusals_logged += 1
        return True

    def _write(self, level: int, **fields: str) -> None:
        log.log(level, "audit %s", json.dumps({k: _field(v) for k, v in fields.items()}, ensure_ascii=True))

    def counts(self) -> AuditCounts:
        """A copy of the counters (a frontend process reports them to the engine's /metrics)."""
        with self._lock:
            return AuditCounts(Counter(self.auth_failures), Counter(self.events))

    def render_metrics(self, others: Sequence[AuditCounts] = ()) -> list[str]:
        """This log's counters, plus ``others`` (the frontend processes' under --workers)."""
        total = self.counts()
        for other in others:
            total.auth_failures.update(other.auth_failures)
            total.events.update(other.events)
        failures, events = total.auth_failures, total.events
        lines = families.AUTH_FAILURES.render(({"protocol": p, "group": g, "reason": r}, n) for (p, g, r), n in sorted(failures.items()))
        lines += families.AUDIT_EVENTS.render(({"action": a, "outcome": o}, n) for (a, o), n in sorted(events.items()))
        return lines
