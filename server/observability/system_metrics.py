"""Machine gauges with Triton's names: nv_cpu_* from /proc and nv_gpu_* from NVML.

Sampled every --metrics-interval-ms (Triton's default 2000) by a background task, so a scrape
only formats numbers. GPU gauges need the optional ``nvidia-ml-py`` package and a GPU; without
them they are absent, as in Triton. GPU gauges carry the single label gpu_uuid (perf_analyzer's
--collect-metrics regex expects exactly that).
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.observability import families

log = logging.getLogger(__name__)


@dataclass(slots=True)
class GpuSample:
    uuid: str
    utilization: float
    memory_total_bytes: int
    memory_used_bytes: int
    power_watts: float
    power_limit_watts: float


@dataclass(slots=True)
class SystemSample:
    cpu_utilization: float | None = None
    memory_total_bytes: int | None = None
    memory_used_bytes: int | None = None
    gpus: list[GpuSample] = field(default_factory=list)


def read_cpu_times(stat_path: Path = Path("/proc/stat")) -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs since boot."""
    fields = [int(v) for v in stat_path.read_text().splitlines()[0].split()[1:]]
    idle = fields[3] + (fields[4] if len(fields) > 4 else 0)  # idle + iowait
    total = sum(fields[:8])  # guest time is already inside user/nice
    return total - idle, total


def read_memory(meminfo_path: Path = Path("/proc/meminfo")) -> tuple[int, int]:
    """(total, used) bytes, where used = MemTotal - MemAvailable."""
    values: dict[str, int] = {}
    for line in meminfo_path.read_text().splitlines():
        key, _, rest = line.partition(":")
        values[key] = int(rest.split()[0]) * 1024
    return values["MemTotal"], values["MemTotal"] - values.get("MemAvailable", values.get("MemFree", 0))


class SystemMetrics:
    def __init__(self, cpu: bool, gpu: bool) -> None:
        self._cpu = cpu
        self._nvml: Any = _init_nvml() if gpu else None
        self._last_cpu: tuple[int, int] | None = None
        self.sample = SystemSample()

    def refresh(self) -> None:
        sample = SystemSample()
        if self._cpu:
            try:
                busy, total = read_cpu_times()
                if self._last_cpu is not None and total > self._last_cpu[1]:
                    sample.cpu_utilization = (busy - self._last_cpu[0]) / (total - self._last_cpu[1])
                self._last_cpu = (busy, total)
                sample.memory_total_bytes, sample.memory_used_bytes = read_memory()
            except (OSError, ValueError, IndexError, KeyError) as exc:
                log.debug("cpu metrics unavailable: %s", exc)
        if self._nvml is not None:
            sample.gpus = _sample_gpus(self._nvml)
        self.sample = sample

    async def run(self, interval_secs: float) -> None:
        """Refresh forever (until cancelled)."""
        while True:
            self.refresh()
            await asyncio.sleep(interval_secs)

    def render(self) -> list[str]:
        s, lines = self.sample, []
        if s.cpu_utilization is not None:
            lines += families.CPU_UTILIZATION.render([({}, s.cpu_utilization)])
        if s.memory_total_bytes is not None:
            lines += families.CPU_MEMORY_TOTAL.render([({}, s.memory_total_bytes)])
            lines += families.CPU_MEMORY_USED.render([({}, s.memory_used_bytes or 0)])
        gauges: tuple[tuple[families.Family, Callable[[GpuSample], float]], ...] = (
            (families.GPU_UTILIZATION, lambda g: g.utilization),
            (families.GPU_MEMORY_TOTAL, lambda g: g.memory_total_bytes),
            (families.GPU_MEMORY_USED, lambda g: g.memory_used_bytes),
            (families.GPU_POWER_USAGE, lambda g: g.power_watts),
            (families.GPU_POWER_LIMIT, lambda g: g.power_limit_watts),
        )
        if s.gpus:
            for family, value in gauges:
                lines += family.render([({"gpu_uuid": g.uuid}, value(g)) for g in s.gpus])
        return lines


def _init_nvml() -> Any:
    try:
        import pynvml
    except ImportError:
        return None
    try:
        pynvml.nvmlInit()
    except pynvml.NVMLError as exc:
        log.info("GPU metrics off: NVML unavailable (%s)", exc)
        return None
    return pynvml


def _sample_gpus(nvml: Any) -> list[GpuSample]:
    samples = []
    try:
        for index in range(nvml.nvmlDeviceGetCount()):
            handle = nvml.nvmlDeviceGetHandleByIndex(index)
            uuid = nvml.nvmlDeviceGetUUID(handle)
            memory = nvml.nvmlDeviceGetMemoryInfo(handle)
            samples.append(
                GpuSample(
                    uuid=uuid.decode() if isinstance(uuid, bytes) else uuid,
                    utilization=nvml.nvmlDeviceGetUtilizationRates(handle).gpu / 100.0,
                    memory_total_bytes=int(memory.total),
                    memory_used_bytes=int(memory.used),
                    power_watts=nvml.nvmlDeviceGetPowerUsage(handle) / 1000.0,
                    power_limit_watts=nvml.nvmlDeviceGetPowerManagementLimit(handle) / 1000.0,
                )
            )
    except nvml.NVMLError as exc:
        log.debug("GPU metrics sample failed: %s", exc)
    return samples
