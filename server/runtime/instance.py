"""One ONNX Runtime session and the thread that runs it."""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

import numpy as np
import onnxruntime as ort

from server.datatypes import wire_from_ort_type
from server.repository.signature import GraphSignature, GraphTensor

T = TypeVar("T")


class ModelInstance:
    """An ORT session bound to one device, executed only on its own thread.

    The event loop hands work over with ``call`` and awaits it; ONNX Runtime releases the GIL
    while it runs, so the loop keeps serving. One instance runs one batch at a time.
    """

    def __init__(self, name: str, session: ort.InferenceSession, device: str, use_io_binding: bool = False) -> None:
        self.name = name
        self.device = device
        self._session = session
        # On a GPU, IO binding copies each (already merged) input host→device once and each
        # output device→host once, instead of ORT's per-run staging.
        self._use_io_binding = use_io_binding
        self._thread = ThreadPoolExecutor(max_workers=1, thread_name_prefix=name)

    def run(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
        """Blocking; call only on this instance's thread (via ``call``)."""
        if self._use_io_binding and not any(array.dtype == object for array in feeds.values()):
            return self._run_bound(feeds, output_names)
        return self._session.run(output_names, feeds)

    def _run_bound(self, feeds: dict[str, np.ndarray], output_names: list[str]) -> list[np.ndarray]:
        binding = self._session.io_binding()
        for name, array in feeds.items():
            binding.bind_cpu_input(name, np.ascontiguousarray(array))
        for name in output_names:
            binding.bind_output(name, "cpu")
        self._session.run_with_iobinding(binding)
        return binding.copy_outputs_to_cpu()

    async def call(self, fn: Callable[..., T], *args: object) -> T:
        """Run ``fn(self, *args)`` on this instance's thread and await its result."""
        return await asyncio.get_running_loop().run_in_executor(self._thread, fn, self, *args)

    def close(self) -> None:
        """Wait for running work, stop the thread and drop the session (frees its memory)."""
        self._thread.shutdown(wait=True)
        del self._session


def graph_signature(session: ort.InferenceSession) -> GraphSignature:
    return GraphSignature(
        inputs=tuple(_graph_tensor(arg) for arg in session.get_inputs()),
        outputs=tuple(_graph_tensor(arg) for arg in session.get_outputs()),
    )


def _graph_tensor(arg: ort.NodeArg) -> GraphTensor:
    shape = tuple(d if isinstance(d, int) and d >= 0 else -1 for d in (arg.shape or []))
    return GraphTensor(name=arg.name, datatype=wire_from_ort_type(arg.type) or arg.type, shape=shape)
