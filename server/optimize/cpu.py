"""What the CPU offers INT8 inference, from /proc/cpuinfo's flags.

VNNI (AVX512_VNNI or AVX_VNNI) multiplies u8 x s8 into 32-bit sums in one instruction. Without it,
x86's u8 x s8 path (vpmaddubsw) adds pairs into 16 bits, which can saturate with full 8-bit
weights; ONNX Runtime's answer is ``reduce_range`` (7-bit weights), which costs accuracy. So
reduce_range is used exactly on x86 CPUs without VNNI.
"""

from __future__ import annotations

import platform
from dataclasses import dataclass
from pathlib import Path

CPUINFO = Path("/proc/cpuinfo")
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
# The flags worth naming in a report: the vector widths and the INT8 dot-product instructions.
REPORTED_FLAGS = ("avx2", "avx512f", "avx512bw", "avx512_vnni", "avx_vnni", "avx512_bf16", "avx512_fp16", "amx_int8", "asimddp", "i8mm")


@dataclass(frozen=True, slots=True)
class CpuInfo:
    model_name: str
    machine: str
    flags: frozenset[str]

    @property
    def x86(self) -> bool:
        return self.machine in ("x86_64", "amd64", "i386", "i686")

    @property
    def vnni(self) -> bool:
        return bool(self.flags & VNNI_FLAGS)

    @property
    def avx512(self) -> bool:
        return "avx512f" in self.flags

    def reduce_range(self) -> tuple[bool, str]:
        """Whether quantized weights should use 7 bits, and why."""
        if not self.x86:
            return False, f"{self.machine}: no 16-bit saturation in its INT8 path, full 8-bit weights"
        if self.vnni:
            return False, "the CPU has VNNI: full 8-bit weights"
        return True, "the CPU has no VNNI: 7-bit weights avoid saturating u8 x s8 sums"

    def to_json(self) -> dict[str, object]:
        return {
            "model_name": self.model_name,
            "machine": self.machine,
            "vnni": self.vnni,
            "avx512": self.avx512,
            "flags": [flag for flag in REPORTED_FLAGS if flag in self.flags],
        }


def parse_cpuinfo(text: str, machine: str) -> CpuInfo:
    """The first processor's model name and flags (x86 "flags", ARM "Features")."""
    model_name, flags = "", ""
    for line in text.splitlines():
        key, _, value = line.partition(":")
        key = key.strip().lower()
        if key in ("model name", "hardware", "cpu model") and not model_name:
            model_name = value.strip()
        elif key in ("flags", "features") and not flags:
            flags = value
    return CpuInfo(model_name or platform.processor() or "unknown", machine, frozenset(flags.split()))


def read_cpu_info(path: Path = CPUINFO) -> CpuInfo:
    """Blocks on one small read; an unreadable file gives an empty flag set."""
    try:
        text = path.read_text(errors="replace")
    except OSError:
        text = ""
    return parse_cpuinfo(text, platform.machine().lower())
