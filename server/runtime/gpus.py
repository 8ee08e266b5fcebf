"""Which CUDA GPUs this process can use, without importing a CUDA toolkit.

The count comes from NVML (the optional ``nvidia-ml-py`` package) or, failing that, from the
driver API in ``libcuda.so.1``; both are absent on CPU-only machines, which then have 0 GPUs.
GPU instances also need an onnxruntime build with the CUDA execution provider (onnxruntime-gpu).
"""

from __future__ import annotations

import ctypes
import functools
import logging

import onnxruntime as ort

log = logging.getLogger(__name__)

CUDA_PROVIDER = "CUDAExecutionProvider"
TENSORRT_PROVIDER = "TensorrtExecutionProvider"


def available_providers() -> list[str]:
    return list(ort.get_available_providers())


@functools.cache
def visible_gpu_count() -> int:
    """GPUs visible to this process (respects CUDA_VISIBLE_DEVICES via the driver API)."""
    count = _count_with_driver_api()
    return count if count is not None else (_count_with_nvml() or 0)


def _count_with_driver_api() -> int | None:
    try:
        cuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return None
    count = ctypes.c_int(0)
    if cuda.cuInit(0) != 0 or cuda.cuDeviceGetCount(ctypes.byref(count)) != 0:
        return 0
    return count.value


def _count_with_nvml() -> int | None:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
        return int(pynvml.nvmlDeviceGetCount())
    except pynvml.NVMLError:
        return 0


def usable_gpu_count() -> int:
    """GPUs that ORT can actually run on here: 0 without the CUDA execution provider."""
    return visible_gpu_count() if CUDA_PROVIDER in available_providers() else 0
