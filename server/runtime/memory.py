"""Give freed model memory back to the operating system after an unload.

ONNX Runtime frees a session's arena and weights when the session is destroyed, but glibc keeps
freed heap pages for reuse, so the process RSS would stay at its peak (users report "unload
does not free memory"). ``malloc_trim(0)`` returns those pages; it is a no-op elsewhere.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import functools


@functools.cache
def _libc() -> ctypes.CDLL | None:
    name = ctypes.util.find_library("c")
    try:
        return ctypes.CDLL(name) if name else None
    except OSError:
        return None


def release_freed_memory() -> None:
    """Trim the C heap. Blocking; call off the event loop.

    No ``gc.collect()`` here: sessions are freed by reference count when their instances close,
    and a full collection holds the GIL (30-600 ms measured in a server on a loaded 2-core box),
    stalling the event loop, so every request, at each version swap. RSS after unload: the same.
    """
    libc = _libc()
    if libc is not None and hasattr(libc, "malloc_trim"):
        libc.malloc_trim(0)
