"""Which CUDA GPUs this process can use, without importing a CUDA toolkit.

The count comes from NVML (the optional ``nvidia-ml-py`` package) or, failing that, from the
driver API in ``libcuda.so.1``; both are absent on CPU-only machines, which then have 0 GPUs.
GPU instances also need an onnxruntime build with the CUDA execution provider (onnxruntime-gpu)
whose CUDA and cuDNN libraries load on this machine.
"""

from __future__ import annotations

import ctypes
import functools
import logging
import threading
from pathlib import Path

import numpy as np
import onnxruntime as ort

log = logging.getLogger(__name__)
_probe_lock = threading.Lock()

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


def cuda_build_version() -> str | None:
    """The CUDA version this onnxruntime was built for ("13.0"); None for a build without CUDA."""
    try:
        from onnxruntime.capi import build_and_package_info
    except ImportError:
        return None
    return getattr(build_and_package_info, "cuda_version", None) or None


def cuda_provider_problem() -> str | None:
    """Why ONNX Runtime's CUDA execution provider cannot run in this process; None when it can.

    Checked once per process. get_available_providers() only says the build has the provider:
    its library is loaded at the first GPU session and needs the CUDA and cuDNN libraries the
    build was made for; when they are missing ORT logs an error and quietly runs on CPU. So this
    allocates one float on GPU 0 through the provider (the CUDA context GPU instances need anyway).
    Blocks for as long as creating that context takes (about a second); thread-safe.
    """
    with _probe_lock:  # models load on several threads: probe, and warn, once
        return _probe_cuda_provider()


@functools.cache
def _probe_cuda_provider() -> str | None:
    if CUDA_PROVIDER not in available_providers():
        return (
            f"this onnxruntime ({ort.__version__}) has no {CUDA_PROVIDER} "
            f"(install onnxruntime-gpu instead of onnxruntime; available: {available_providers()})"
        )
    if visible_gpu_count() == 0:
        return f"no CUDA GPU is visible to this process for {CUDA_PROVIDER}"
    try:
        ort.OrtValue.ortvalue_from_numpy(np.zeros(1, np.float32), "cuda", 0)
    except Exception as exc:  # ORT raises RuntimeError and its own types here
        build = f"onnxruntime-gpu {ort.__version__}, built for CUDA {cuda_build_version()}"
        problem = f"{CUDA_PROVIDER} cannot start ({build}): {_provider_library_error() or str(exc).strip()}"
        log.warning("%d GPU(s) visible, but %s; KIND_AUTO models run on CPU and KIND_GPU models fail", visible_gpu_count(), problem)
        return problem
    return None


def _provider_library_error() -> str | None:
    """The dynamic loader's reason the CUDA provider library does not load (a missing
    ``libcublasLt.so.13``, say), or None when it loads. ORT only logs that reason."""
    capi = Path(ort.__file__).parent / "capi"
    try:
        # The provider library takes its host interface from the shared bridge, as ORT loads it.
        ctypes.CDLL(str(capi / "libonnxruntime_providers_shared.so"), mode=ctypes.RTLD_GLOBAL)
        ctypes.CDLL(str(capi / "libonnxruntime_providers_cuda.so"))
    except OSError as exc:
        return str(exc)
    return None


def usable_gpu_count() -> int:
    """GPUs that ORT can actually run on here: 0 when its CUDA execution provider cannot start."""
    return 0 if cuda_provider_problem() else visible_gpu_count()
