"""What the GPU tests need to know about the machine, asked the way the server asks it.

The CUDA provider is probed in a child interpreter, so the pytest process itself never creates a
CUDA context or holds GPU memory; the servers under test are child processes too.
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import tritonclient.grpc as grpcclient

from scripts.harness import REPO_ROOT

SAMPLE = re.compile(r'^(?P<name>nv_\w+)(?:\{gpu_uuid="(?P<uuid>[^"]*)"\})? (?P<value>\S+)$')
_PROBE = (
    "import json\nfrom server.runtime import gpus\n"
    "print(json.dumps([gpus.cuda_provider_problem(), gpus.usable_gpu_count(), gpus.cuda_build_version()]))"
)


def probe_cuda(env: dict[str, str] | None = None) -> tuple[str | None, int, str | None]:
    """(why the CUDA provider cannot start or None, usable GPUs, the build's CUDA version), as a
    fresh server process would find them."""
    done = subprocess.run([sys.executable, "-c", _PROBE], cwd=REPO_ROOT, capture_output=True, text=True, timeout=180, env=env, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"CUDA probe failed (exit {done.returncode}):\n{done.stdout}\n{done.stderr}")
    problem, usable, cuda = json.loads(done.stdout.strip().splitlines()[-1])
    return problem, usable, cuda


def metrics_text(metrics_url: str) -> str:
    with urllib.request.urlopen(metrics_url, timeout=10) as response:
        return response.read().decode()


def gpu_gauges(metrics_url: str) -> dict[str, dict[str, float]]:
    """nv_gpu_* samples from /metrics: {metric name: {gpu_uuid: value}}."""
    gauges: dict[str, dict[str, float]] = {}
    for line in metrics_text(metrics_url).splitlines():
        match = SAMPLE.match(line)
        if match and match["name"].startswith("nv_gpu_"):
            gauges.setdefault(match["name"], {})[match["uuid"] or ""] = float(match["value"])
    return gauges


def shadow_cuda_library(directory: Path, cuda_version: str) -> Path:
    """A directory whose ``libcublasLt.so.<major>`` is not a library. First on LD_LIBRARY_PATH, it
    makes the dynamic loader fail on the CUDA provider's dependency (it stops at the first file of
    that name), whatever else the machine has installed."""
    directory.mkdir(parents=True, exist_ok=True)
    major = cuda_version.split(".")[0]
    (directory / f"libcublasLt.so.{major}").write_text("not a shared library\n")
    return directory


def settled_index(client: grpcclient.InferenceServerClient, names: set[str], timeout: float = 120.0) -> dict[str, dict]:
    """The repository index once every model in ``names`` is READY or UNAVAILABLE."""
    deadline, index = time.monotonic() + timeout, {}
    while time.monotonic() < deadline:
        index = {m["name"]: m for m in client.get_model_repository_index(as_json=True)["models"]}
        if all(index.get(name, {}).get("state") in ("READY", "UNAVAILABLE") for name in names):
            return index
        time.sleep(0.1)
    raise TimeoutError(f"models {sorted(names)} did not settle: {index}")
