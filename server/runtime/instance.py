"""One ONNX Runtime session and the thread that runs it."""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import Callable

import numpy as np
import onnxruntime as ort

from server.datatypes import wire_from_ort_type
from server.model_config.signature import GraphSignature, GraphTensor

log = logging.getLogger(__name__)


class ModelInstance:
    """An ORT session bound to one device, executed only on its own thread.

    Work arrives with ``post`` (a callable run on the instance thread, which reports back to the
    event loop itself with ``call_soon_threadsafe``): one queue put and one loop wake-up per
    batch, nothing else. ONNX Runtime releases the GIL while it runs, so the loop keeps serving.
    """

    def __init__(self, name: str, session: ort.InferenceSession, device: str, use_io_binding: bool = False) -> None:
        self.name = name
        self.device = device
        self._session = session
        # On a GPU, IO binding copies each (already merged) input host→device once and each
        # output device→host once, instead of ORT's per-run staging.
        self._use_io_binding = use_io_binding
        self._work: queue.SimpleQueue[Callable[[], None] | None] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._serve, name=name, daemon=True)
        self._thread.start()

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
        """Blocking; call only on this instance's thread (or before it serves, e.g. warmup)."""
        if self._use_io_binding and not any(array.dtype == object for array in feeds.values()):
            return self._run_bound(feeds, output_names)
        outputs: list[np.ndarray] = self._session.run(output_names, feeds)
        return outputs

    def _run_bound(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in output_names:
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        outputs: list[np.ndarray] = binding.copy_outputs_to_cpu()
        return outputs

    def post(self, work: Callable[[], None]) -> None:
        """Run ``work()`` on this instance's thread, after work posted before it. Never blocks.

        ``work`` must not raise; it reports its own outcome.
        """
        self._work.put(work)

    def _serve(self) -> None:
        while (work := self._work.get()) is not None:
            try:
                work()
            except Exception:  # work reports its own errors; this is a last line of defence
                log.exception("instance %s: unexpected error in posted work", self.name)
            # Drop the finished work now, not when the next arrives: it holds its batch's tensors
            # (and views of client shared memory, which keep an unregistered region mapped).
            work = None

    def close(self) -> None:
        """Finish posted work, stop the thread and drop the session (frees its memory)."""
        self._work.put(None)
        self._thread.join()
        del self._session


def graph_signature(session: ort.InferenceSession) -> GraphSignature:
    return GraphSignature(
        inputs=tuple(_graph_tensor(arg) for arg in session.get_inputs()),
        outputs=tuple(_graph_tensor(arg) for arg in session.get_outputs()),
    )


def _graph_tensor(arg: ort.NodeArg) -> GraphTensor:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return GraphTensor(name=arg.name, datatype=wire_from_ort_type(arg.type) or arg.type, shape=shape)
