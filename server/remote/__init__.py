"""The service behind a process boundary: a frontend-side proxy that offers InferenceService's
methods and an InferenceHandle, and an engine-side host that answers them from the real service.

Tensors travel through shared memory (``arena.py``); descriptors and calls through framed
messages on Unix sockets (``frames.py``, ``channel.py``), several to a write.
"""
