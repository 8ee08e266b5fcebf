"""Run a real ortserve process on free 127.0.0.1 ports (for integration tests and benchmarks), and observe it.

Tests wait for what the server shows (a /metrics value, a log line, a probe) instead of sleeping:
``wait_until`` polls a condition with a generous deadline, ``ServerProcess.metrics`` reads one
consistent snapshot of the Prometheus text, ``ServerProcess.wait_for_log`` waits for a line.
"""

from __future__ import annotations

import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from pathlib import Path

REPO_ROOT = Path(__file__).resolve().parent.parent


_SAMPLE = re.compile(r"^(?P<name>[a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(?P<labels>.*)\})? (?P<value>\S+)$")
_LABEL = re.compile(r'(\w+)="((?:[^"\\]|\\.)*)"')


def wait_until(condition: Callable[[], bool], timeout: float, what: str, interval: float = 0.02) -> float:
    """Poll ``condition`` until it is true; return the monotonic time it was first seen true.

    Raises TimeoutError naming ``what`` after ``timeout`` seconds.
    """
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(f"not within {timeout}s: {what}")
        time.sleep(interval)
    return time.monotonic()


class Metrics:
    """One scrape of /metrics: every sample keyed by name and labels."""

    def __init__(self, text: str) -> None:
        self.text = text
        self.samples: dict[tuple[str, frozenset[tuple[str, str]]], float] = {}
        for line in text.splitlines():
            match = _SAMPLE.match(line)
            if match and not line.startswith("#"):
                self.samples[(match["name"], frozenset(_LABEL.findall(match["labels"] or "")))] = float(match["value"])

    def value(self, name: str, **labels: str) -> float:
        """The sample with exactly these labels; 0 when absent (a counter that never moved)."""
        return self.samples.get((name, frozenset(labels.items())), 0.0)

    def model(self, model: str, name: str, version: str = "1", **labels: str) -> float:
        """A per-model series: ``model`` and ``version`` plus any further labels."""
        return self.value(name, model=model, version=version, **labels)


# Ports this process has handed out: a port picked for one server (a health port, say) is
# free until that server binds it, so a later pick must not return it again.
_HANDED_OUT: set[int] = set()


def free_ports(count: int) -> list[int]:
    """``count`` distinct ports free on 127.0.0.1 now, none handed out before by this process.
    Every candidate stays bound until all are chosen: the kernel may give a port that was just
    closed to the next bind, so one-at-a-time picks could repeat (a server's gRPC and HTTP on the
    same port)."""
    held: list[socket.socket] = []
    chosen: list[int] = []
    try:
        while len(chosen) < count:
            sock = socket.socket()
            held.append(sock)
            sock.bind(("127.0.0.1", 0))
            port = sock.getsockname()[1]
            if port not in _HANDED_OUT:
                chosen.append(port)
        _HANDED_OUT.update(chosen)
        return chosen
    finally:
        for sock in held:
            sock.close()


def free_port() -> int:
    return free_ports(1)[0]


def http_status(url: str, timeout: float = 2.0) -> int | None:
    """The HTTP status of a GET, or None when nothing answers."""
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except urllib.error.HTTPError as error:
        return error.code
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return None


class ServerProcess:
    """``python -m server`` in a subprocess; stdout+stderr go to ``log_path``."""

    def __init__(self, repositories: list[Path], extra_args: list[str] | None = None, log_path: Path | None = None) -> None:
        self.grpc_port, self.http_port, self.metrics_port = free_ports(3)
        self.repositories = repositories
        self.extra_args = extra_args or []
        self.log_path = log_path or Path(f"/tmp/ortserve-test-{os.getpid()}-{self.grpc_port}.log")
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def grpc_url(self) -> str:
        return f"127.0.0.1:{self.grpc_port}"

    @property
    def http_url(self) -> str:
        return f"127.0.0.1:{self.http_port}"

    @property
    def metrics_url(self) -> str:
        return f"http://127.0.0.1:{self.metrics_port}/metrics"

    def command(self) -> list[str]:
        args = [sys.executable, "-m", "server", "--host", "127.0.0.1"]
        for repository in self.repositories:
            args += ["--model-repository", str(repository)]
        args += ["--grpc-port", str(self.grpc_port), "--http-port", str(self.http_port)]
        args += ["--metrics-port", str(self.metrics_port), *self.extra_args]
        return args

    def start(self, wait_for: str = "live", timeout: float = 60.0) -> ServerProcess:
        """Start and wait until /v2/health/<wait_for> answers 200 ("" = do not wait)."""
        log = self.log_path.open("wb")
        self.process = subprocess.Popen(self.command(), cwd=REPO_ROOT, stdout=log, stderr=subprocess.STDOUT)
        if wait_for:
            self.wait_until(f"http://{self.http_url}/v2/health/{wait_for}", timeout)
        return self

    def wait_until(self, url: str, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.process is not None and self.process.poll() is not None:
                raise RuntimeError(f"server exited with {self.process.returncode}:\n{self.log()}")
            if http_status(url, timeout=1.0) == 200:
                return
            time.sleep(0.1)
        raise TimeoutError(f"{url} not 200 after {timeout}s:\n{self.log()}")

    def log(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path.exists() else ""

    def wait_for_log(self, text: str, count: int = 1, timeout: float = 60.0) -> None:
        """Until ``text`` occurs ``count`` times in the log. Raises TimeoutError with the log."""
        try:
            wait_until(lambda: self.log().count(text) >= count, timeout, f"{count} x {text!r} in the log", interval=0.05)
        except TimeoutError as exc:
            raise TimeoutError(f"{exc}:\n{self.log()}") from None

    def metrics(self) -> Metrics:
        """One consistent snapshot (the server renders it in one step on its event loop)."""
        with urllib.request.urlopen(self.metrics_url, timeout=10) as response:
            return Metrics(response.read().decode())

    def terminate(self, timeout: float = 40.0) -> int:
        """SIGTERM and wait; returns the exit status (kills after ``timeout``)."""
        assert self.process is not None
        if self.process.poll() is None:
            self.process.send_signal(signal.SIGTERM)
        try:
            return self.process.wait(timeout)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()
            raise

    def __enter__(self) -> ServerProcess:
        # A process started before the with-block is taken over, not started a second time.
        return self if self.process is not None else self.start()

    def __exit__(self, *exc: object) -> None:
        if self.process is not None and self.process.poll() is None:
            self.terminate()
