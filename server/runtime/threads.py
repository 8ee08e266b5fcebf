"""How many intra-op threads each CPU instance gets, so instances do not oversubscribe the cores.

ONNX Runtime defaults every session's intra-op pool to all cores; with several instances (and
several models) that multiplies into far more busy threads than cores, the most common
Triton+ORT CPU complaint. ortserve splits the cores among the CPU instances it plans to run:
each gets ``max(1, cores // instances)``. With intra_op_num_threads=1 ORT runs on the calling
thread only (no pool), so even more instances than cores stay bounded. A config's
``intra_op_thread_count`` parameter overrides this.
"""

from __future__ import annotations

import os


def available_cores() -> int:
    """Cores this process may run on (respects taskset/cgroup cpusets)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def default_intra_op_threads(total_cpu_instances: int, cores: int | None = None) -> int:
    cores = available_cores() if cores is None else cores
    return max(1, cores // max(1, total_cpu_instances))
