"""Which of InferenceService's methods travel how, read from the class itself.

Inference (``submit`` / ``complete`` / ``infer``) has its own path (tensors in shared memory);
the process's own lifecycle stays local; every other public method is forwarded by name with
its arguments and result pickled: coroutine methods over the asynchronous data channel, plain
methods as a blocking call on the control channel, static methods run where they are called.
A method another change adds to InferenceService is forwarded the same way without a change here.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass

from server.service import InferenceService

# Answered by the proxy itself: inference, and the frontend process's own start and shutdown.
# tracing_active is asked on every request: the engine tells each frontend when it changes.
LOCAL = frozenset({"submit", "complete", "infer", "mark_started", "begin_shutdown", "wait_idle", "is_ready", "tracing_active"})


@dataclass(frozen=True, slots=True)
class Methods:
    asynchronous: frozenset[str]
    synchronous: frozenset[str]
    static: frozenset[str]
    properties: frozenset[str]

    def forwarded(self) -> frozenset[str]:
        """What the engine answers for a frontend (is_ready too: the proxy adds its own state)."""
        return self.asynchronous | self.synchronous | self.properties | {"is_ready"}


def service_methods(service_class: type = InferenceService) -> Methods:
    asynchronous, synchronous, static, properties = set(), set(), set(), set()
    for name, attribute in inspect.getmembers_static(service_class):
        if name.startswith("_") or name in LOCAL:
            continue
        if isinstance(attribute, staticmethod):
            static.add(name)
        elif isinstance(attribute, property):
            properties.add(name)
        elif inspect.iscoroutinefunction(attribute):
            asynchronous.add(name)
        elif callable(attribute):
            synchronous.add(name)
    return Methods(frozenset(asynchronous), frozenset(synchronous), frozenset(static), frozenset(properties))
