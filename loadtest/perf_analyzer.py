"""Run Triton's perf_analyzer (shipped in the tritonclient 2.41 wheel) and read its figures.

Shared by the benchmarks and the integration tests, so both drive the real binary the same way.
The README's test command installs that wheel into TOOL_DIR, apart from the test environment
(its Python half requires protobuf <5); pyproject.toml says why not the perf-analyzer wheel.
"""

from __future__ import annotations

import csv
import io
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parents[1]
# pip install --no-deps --target .tools/perf_analyzer tritonclient==2.41.1 nvidia-cuda-runtime-cu12
TOOL_DIR = REPO_ROOT / ".tools" / "perf_analyzer"

# A noisy, shared machine rarely gives three windows within perf_analyzer's default 10 %; these
# bound a run's length (windows times trials) without letting instability abort it.
QUICK_ARGS = ("--measurement-interval", "1000", "--max-trials", "4", "--stability-percentage", "100")


@dataclass(frozen=True)
class PerfPoint:
    """One concurrency level's client-side figures (latencies in µs)."""

    concurrency: int
    throughput: float
    p50_us: int
    p90_us: int
    p95_us: int
    p99_us: int
    avg_us: int | None  # only in --verbose-csv output

    def as_dict(self) -> dict[str, float | int]:
        return asdict(self)


@dataclass(frozen=True)
class PerfRun:
    command: list[str]
    returncode: int
    output: str
    points: list[PerfPoint]

    @property
    def has_server_stats(self) -> bool:
        """True when perf_analyzer printed the server-side block (it read ModelStatistics)."""
        return "Server:" in self.output and "Inference count" in self.output

    def describe(self) -> str:
        return f"$ {' '.join(self.command)}\nexit {self.returncode}\n{self.output}"


def binary() -> Path:
    """perf_analyzer from TOOL_DIR, else next to this interpreter (a venv with tritonclient 2.41), else on PATH."""
    for candidate in (TOOL_DIR / "bin" / "perf_analyzer", Path(sys.executable).parent / "perf_analyzer"):
        if candidate.exists():
            return candidate
    found = shutil.which("perf_analyzer")
    if found is None:
        msg = f"perf_analyzer not found in {TOOL_DIR / 'bin'}, next to {sys.executable} or on PATH: run the README's test command"
        raise FileNotFoundError(msg)
    return Path(found)


def _cudart_dirs() -> list[str]:
    """Where the nvidia-cuda-runtime-cu12 wheel put libcudart.so.12: TOOL_DIR, and this environment if it has one."""
    dirs = [TOOL_DIR / "nvidia" / "cuda_runtime" / "lib"]
    try:
        import nvidia.cuda_runtime

        dirs.append(Path(nvidia.cuda_runtime.__path__[0]) / "lib")
    except ImportError:
        pass
    return [str(path) for path in dirs if path.is_dir()]


def environment() -> dict[str, str]:
    """The environment with LD_LIBRARY_PATH extended: perf_analyzer links libcudart.so.12 even on CPU."""
    env = dict(os.environ)
    env["LD_LIBRARY_PATH"] = ":".join([*_cudart_dirs(), env.get("LD_LIBRARY_PATH", "")])
    return env


def parse_csv(text: str) -> list[PerfPoint]:
    """The rows of perf_analyzer's ``-f`` CSV, one per concurrency level, in concurrency order
    (perf_analyzer writes them sorted by throughput)."""
    points = []
    for row in csv.DictReader(io.StringIO(text)):
        points.append(
            PerfPoint(
                concurrency=int(row["Concurrency"]),
                throughput=float(row["Inferences/Second"]),
                p50_us=int(row["p50 latency"]),
                p90_us=int(row["p90 latency"]),
                p95_us=int(row["p95 latency"]),
                p99_us=int(row["p99 latency"]),
                avg_us=int(row["Avg latency"]) if row.get("Avg latency") else None,
            )
        )
    return sorted(points, key=lambda point: point.concurrency)


def run(model: str, url: str, args: Sequence[str], timeout_s: float, env: dict[str, str] | None = None) -> PerfRun:
    """``perf_analyzer -m model -u url -i grpc <args>``, killed after ``timeout_s`` (exit 124 then).

    Blocks the calling thread for the whole run.
    """
    with tempfile.TemporaryDirectory(prefix="perf-analyzer-") as tmp:
        csv_path = Path(tmp) / "result.csv"
        command = [str(binary()), "-m", model, "-u", url, "-i", "grpc", "-f", str(csv_path), "--verbose-csv", *args]
        try:
            done = subprocess.run(
                command, env=env or environment(), stdout=subprocess.PIPE, stderr=subprocess.STDOUT, timeout=timeout_s, check=False
            )
        except subprocess.TimeoutExpired as expired:
            output = (expired.output or b"").decode(errors="replace")
            return PerfRun(command, 124, f"{output}\n[timed out after {timeout_s}s]", [])
        points = parse_csv(csv_path.read_text()) if csv_path.exists() else []
        return PerfRun(command, done.returncode, done.stdout.decode(errors="replace"), points)
