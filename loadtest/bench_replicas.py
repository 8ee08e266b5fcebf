"""Scale-out on one machine: several ortserve replicas on 127.0.0.1 and real gRPC clients.

What a Kubernetes deployment relies on, shown with real processes and grpcio's own machinery
(the same as tritonclient's, whose channel is a grpcio channel):

1. spread      — a ``round_robin`` channel over the replicas' addresses spreads requests evenly
                 (counted by each replica's nv_inference_request_success).
2. not-ready   — a replica that is live but not ready (a model failed to load, --strict-readiness)
                 gets no requests from a client that health-checks (grpc.health.v1 Watch on
                 "inference.GRPCInferenceService", the service config's healthCheckConfig), and
                 gets its share from one that does not.
3. kill        — one replica killed under load (SIGKILL: a crash; SIGTERM: graceful drain): a
                 client without retries loses at most the requests in flight on it (plus those
                 that race its removal); with a retry policy on UNAVAILABLE it loses none.
4. late, static list — a replica whose address the client knew from the start but which came up
                 later: traffic reaches it after the channel's reconnect backoff.
5. late, behind an L4 proxy — what a ClusterIP Service does to gRPC: each client connection is
                 pinned to one backend, so a replica added later gets nothing until connections
                 are re-made. --grpc-max-connection-age-ms makes the servers close connections
                 (GOAWAY) so clients reconnect and the new replica receives its share.

Everything binds 127.0.0.1 and every loop is bounded in time. Run as a CLI for the figures:

    .venv/bin/python -m loadtest.bench_replicas            # all experiments, ~1 minute
    .venv/bin/python -m loadtest.bench_replicas --json loadtest/results/replicas.json

tests/integration/test_replicas.py runs the same experiments, shorter, and asserts the behaviour.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import re
import signal
import sys
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path

import grpc
import numpy as np

from scripts.harness import REPO_ROOT, ServerProcess, http_status
from server.proto import grpc_service_pb2 as pb
from server.proto import grpc_service_pb2_grpc as pb_grpc

MODEL = "simple"
HEALTH_SERVICE = "inference.GRPCInferenceService"
RETRY_POLICY = {
    "maxAttempts": 5,
    "initialBackoff": "0.02s",
    "maxBackoff": "0.5s",
    "backoffMultiplier": 2,
    "retryableStatusCodes": ["UNAVAILABLE"],
}


# ---------------------------------------------------------------------------------------- replicas


def start_replicas(count: int, log_dir: Path, extra_args: Sequence[str] = (), repository: Path | None = None) -> list[ServerProcess]:
    """Start ``count`` replicas on free ports (in parallel) and wait until each is ready."""
    repository = repository or REPO_ROOT / "model_repo"
    log_dir.mkdir(parents=True, exist_ok=True)
    replicas = [ServerProcess([repository], list(extra_args), log_path=log_dir / f"replica-{i}.log") for i in range(count)]
    for replica in replicas:
        replica.start(wait_for="")
    for replica in replicas:
        replica.wait_until(f"http://{replica.http_url}/v2/health/ready", 60)
    return replicas


def restart_on_same_ports(old: ServerProcess, wait_for: str = "ready") -> ServerProcess:
    """A new process for a replica that exited, listening where the old one did."""
    new = ServerProcess(old.repositories, old.extra_args, log_path=old.log_path.with_suffix(".restarted.log"))
    new.grpc_port, new.http_port, new.metrics_port = old.grpc_port, old.http_port, old.metrics_port
    new.start(wait_for="")
    if wait_for:
        new.wait_until(f"http://{new.http_url}/v2/health/{wait_for}", 60)
    return new


def stop_all(replicas: Sequence[ServerProcess]) -> None:
    for replica in replicas:
        if replica.process is not None and replica.process.poll() is None:
            replica.process.send_signal(signal.SIGTERM)
    for replica in replicas:
        if replica.process is not None:
            try:
                replica.process.wait(30)
            except Exception:
                replica.process.kill()
                replica.process.wait()


_SUCCESS = re.compile(r'^nv_inference_request_success\{[^}]*model="' + MODEL + r'"[^}]*\} ([0-9.e+]+)$', re.MULTILINE)


def served(replica: ServerProcess) -> int:
    """Successful requests for MODEL on this replica so far (0 when it does not answer)."""
    import urllib.request

    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))
    try:
        with opener.open(replica.metrics_url, timeout=2) as response:
            text = response.read().decode()
    except OSError:
        return 0
    return int(sum(float(v) for v in _SUCCESS.findall(text)))


def served_by(replicas: Sequence[ServerProcess]) -> list[int]:
    return [served(r) for r in replicas]


# ----------------------------------------------------------------------------------------- clients


def service_config(health_check: bool = False, retries: bool = False, lb_policy: str = "round_robin") -> str:
    config: dict[str, object] = {"loadBalancingConfig": [{lb_policy: {}}]}
    if health_check:
        config["healthCheckConfig"] = {"serviceName": HEALTH_SERVICE}
    if retries:
        config["methodConfig"] = [{"name": [{"service": HEALTH_SERVICE}], "retryPolicy": RETRY_POLICY}]
    return json.dumps(config)


def round_robin_channel(addresses: Sequence[str], health_check: bool = False, retries: bool = False) -> grpc.Channel:
    """A channel over a static address list: ``ipv4:127.0.0.1:p1,127.0.0.1:p2,...``, round_robin."""
    target = "ipv4:" + ",".join(addresses)
    options = [
        ("grpc.lb_policy_name", "round_robin"),
        ("grpc.service_config", service_config(health_check, retries)),
        ("grpc.enable_retries", 1 if retries else 0),
        # Fast reconnection attempts, so the late-replica figure is about the mechanism, not a
        # long backoff (gRPC's default starts at 1 s and grows to 120 s).
        ("grpc.initial_reconnect_backoff_ms", 200),
        ("grpc.max_reconnect_backoff_ms", 1000),
    ]
    return grpc.insecure_channel(target, options=options)


def infer_request() -> pb.ModelInferRequest:
    a = np.arange(16, dtype=np.int32)
    request = pb.ModelInferRequest(model_name=MODEL)
    for name in ("INPUT0", "INPUT1"):
        request.inputs.add(name=name, datatype="INT32", shape=[1, 16])
        request.raw_input_contents.append(a.tobytes())
    return request


@dataclass
class LoadResult:
    sent: int = 0
    ok: int = 0
    errors: dict[str, int] = field(default_factory=dict)
    in_flight_at_mark: int = -1  # requests outstanding when mark() was called
    examples: dict[str, str] = field(default_factory=dict)  # one error message per status code

    @property
    def failed(self) -> int:
        return sum(self.errors.values())


class Load:
    """``threads`` client threads sending MODEL requests back to back until stopped or ``limit``.

    Each thread has its own stub on a shared channel (or its own channel when ``channels`` gives
    one per thread). Errors are counted by status code; nothing is retried by the application.
    """

    def __init__(self, channels: Sequence[grpc.Channel], threads: int, timeout_secs: float = 5.0, limit: int = 0) -> None:
        self._stubs = [pb_grpc.GRPCInferenceServiceStub(channels[i % len(channels)]) for i in range(threads)]
        self._timeout = timeout_secs
        self._limit = limit
        self._stop = threading.Event()
        self._lock = threading.Lock()
        self._in_flight = 0
        self.result = LoadResult()
        self._threads = [threading.Thread(target=self._run, args=(stub,), daemon=True) for stub in self._stubs]

    def _run(self, stub: pb_grpc.GRPCInferenceServiceStub) -> None:
        request = infer_request()
        while not self._stop.is_set():
            with self._lock:
                if self._limit and self.result.sent >= self._limit:
                    return
                self.result.sent += 1
                self._in_flight += 1
            try:
                stub.ModelInfer(request, timeout=self._timeout)
                outcome = None
            except grpc.RpcError as error:
                outcome = error.code().name
                self.result.examples.setdefault(outcome, str(error.details()))
            with self._lock:
                self._in_flight -= 1
                if outcome is None:
                    self.result.ok += 1
                else:
                    self.result.errors[outcome] = self.result.errors.get(outcome, 0) + 1

    def mark(self) -> int:
        with self._lock:
            self.result.in_flight_at_mark = self._in_flight
            return self._in_flight

    def __enter__(self) -> Load:
        for thread in self._threads:
            thread.start()
        return self

    def join(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self.join(self._timeout + 5)


def wait_ready(channel: grpc.Channel, timeout: float = 10.0) -> None:
    grpc.channel_ready_future(channel).result(timeout=timeout)


# ------------------------------------------------------------------------------------- experiments


@dataclass
class Spread:
    requests: int
    per_replica: list[int]
    max_over_min: float


def spread(replicas: Sequence[ServerProcess], requests: int = 600, threads: int = 4) -> Spread:
    with round_robin_channel([r.grpc_url for r in replicas]) as channel:
        wait_ready(channel)
        with Load([channel], threads, limit=3 * len(replicas)) as warmup:
            warmup.join(10)
        before = served_by(replicas)
        with Load([channel], threads, limit=requests) as load:
            load.join(60)
        after = served_by(replicas)
    counts = [a - b for a, b in zip(after, before)]
    return Spread(requests, counts, max(counts) / max(1, min(counts)))


@dataclass
class NotReady:
    requests: int
    not_ready_http_status: int | None
    not_ready_health: str
    with_health_check: list[int]  # per replica, the not-ready one last
    without_health_check: list[int]


def broken_repository(root: Path) -> Path:
    """``simple`` (good) plus a model whose ONNX file is garbage: live, serving simple, not ready."""
    import shutil

    repo = root / "broken_repo"
    if not repo.exists():
        shutil.copytree(REPO_ROOT / "model_repo" / "simple", repo / "simple")
        (repo / "broken" / "1").mkdir(parents=True)
        (repo / "broken" / "1" / "model.onnx").write_bytes(b"this is not an ONNX model")
    return repo


def health_status(replica: ServerProcess) -> str:
    from grpc_health.v1 import health_pb2, health_pb2_grpc

    with grpc.insecure_channel(replica.grpc_url) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        response = stub.Check(health_pb2.HealthCheckRequest(service=HEALTH_SERVICE), timeout=5)
        return health_pb2.HealthCheckResponse.ServingStatus.Name(response.status)


def not_ready(ready: Sequence[ServerProcess], unready: ServerProcess, requests: int = 300, threads: int = 4) -> NotReady:
    everyone = [*ready, unready]
    figures: dict[bool, list[int]] = {}
    for check in (True, False):
        with round_robin_channel([r.grpc_url for r in everyone], health_check=check) as channel:
            wait_ready(channel)
            time.sleep(0.5)  # health watches answered for every subchannel
            before = served_by(everyone)
            with Load([channel], threads, limit=requests) as load:
                load.join(60)
            figures[check] = [a - b for a, b in zip(served_by(everyone), before)]
    return NotReady(
        requests=requests,
        not_ready_http_status=http_status(f"http://{unready.http_url}/v2/health/ready"),
        not_ready_health=health_status(unready),
        with_health_check=figures[True],
        without_health_check=figures[False],
    )


@dataclass
class Kill:
    how: str  # SIGKILL | SIGTERM
    retries: bool
    threads: int
    duration_secs: float
    sent: int
    ok: int
    errors: dict[str, int]
    in_flight_at_kill: int  # all replicas together, from the client side
    victim_served_before_kill: int


def kill_under_load(
    replicas: list[ServerProcess], victim: int, how: signal.Signals, retries: bool, threads: int = 6, duration_secs: float = 3.0
) -> tuple[Kill, ServerProcess]:
    """Load over all replicas, kill ``replicas[victim]`` a third of the way in; returns the figures
    and a replacement process for the victim (same ports), so the set can be reused."""
    target = replicas[victim]
    assert target.process is not None
    with round_robin_channel([r.grpc_url for r in replicas], health_check=True, retries=retries) as channel:
        wait_ready(channel)
        time.sleep(0.3)
        before = served(target)
        with Load([channel], threads) as load:
            time.sleep(duration_secs / 3)
            served_before = served(target) - before
            in_flight = load.mark()
            target.process.send_signal(how)
            time.sleep(duration_secs * 2 / 3)
        target.process.wait(30)
    figures = Kill(
        how.name, retries, threads, duration_secs, load.result.sent, load.result.ok, dict(load.result.errors), in_flight, served_before
    )
    return figures, restart_on_same_ports(target)


@dataclass
class Late:
    setup: str
    max_connection_age_ms: int
    secs_to_first_request: float | None  # from the late replica being ready; None = never in the window
    share_after: float  # of requests in the window after the first one reached it
    per_replica_after: list[int]
    window_secs: float


def _watch_late(
    replicas: Sequence[ServerProcess], late: ServerProcess, ready_at: float, window_secs: float
) -> tuple[float | None, list[int]]:
    """Seconds from ``ready_at`` until ``late`` served its first request (None: not within
    ``window_secs``), and the requests per replica in the window that follows it (or, when it never
    came, in the whole ``window_secs`` after ready_at)."""
    before = served_by(replicas)
    first = None
    while time.monotonic() < ready_at + window_secs:
        if served(late) > before[-1]:
            first = time.monotonic() - ready_at
            break
        time.sleep(0.05)
    if first is None:
        return None, [a - b for a, b in zip(served_by(replicas), before)]
    start = served_by(replicas)
    time.sleep(window_secs)
    return first, [a - b for a, b in zip(served_by(replicas), start)]


def late_static_list(
    early: Sequence[ServerProcess], late: ServerProcess, threads: int = 4, window_secs: float = 3.0
) -> tuple[Late, ServerProcess]:
    """The client lists all addresses from the start; ``late`` is down and then started."""
    assert late.process is None or late.process.poll() is not None, "late replica must be down"
    everyone = [*early, late]
    with round_robin_channel([r.grpc_url for r in everyone], health_check=True) as channel:
        wait_ready(channel)
        with Load([channel], threads):
            time.sleep(1.0)
            started = restart_on_same_ports(late)
            ready_at = time.monotonic()
            everyone[-1] = started
            first, counts = _watch_late(everyone, started, ready_at, window_secs)
    total = sum(counts)
    return Late("static address list, round_robin", 0, first, counts[-1] / total if total else 0.0, counts, window_secs), started


class TcpProxy:
    """An L4 (TCP) proxy on 127.0.0.1, like a ClusterIP Service: each new connection goes to the
    next backend in turn and stays there. Backends can be added while it runs."""

    def __init__(self, backends: Sequence[tuple[str, int]]) -> None:
        self.backends = list(backends)
        self.connections: dict[tuple[str, int], int] = {}
        self._next = 0
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.AbstractServer | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self.port = 0

    def add_backend(self, backend: tuple[str, int]) -> None:
        self._loop.call_soon_threadsafe(self.backends.append, backend)

    async def _pipe(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while data := await reader.read(65536):
                writer.write(data)
                await writer.drain()
        except (ConnectionError, OSError):
            pass
        finally:
            with contextlib.suppress(Exception):
                writer.close()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        backend = self.backends[self._next % len(self.backends)]
        self._next += 1
        try:
            backend_reader, backend_writer = await asyncio.open_connection(*backend)
        except OSError:
            writer.close()
            return
        self.connections[backend] = self.connections.get(backend, 0) + 1
        self._writers |= {writer, backend_writer}
        try:
            await asyncio.gather(self._pipe(reader, backend_writer), self._pipe(backend_reader, writer))
        finally:
            self._writers -= {writer, backend_writer}

    def __enter__(self) -> TcpProxy:
        self._thread.start()
        future = asyncio.run_coroutine_threadsafe(asyncio.start_server(self._handle, "127.0.0.1", 0), self._loop)
        self._server = future.result(5)
        self.port = self._server.sockets[0].getsockname()[1]
        return self

    def __exit__(self, *exc: object) -> None:
        async def close() -> None:
            """Stop listening, drop every connection, and let the handlers end on their own."""
            assert self._server is not None
            self._server.close()
            for writer in list(self._writers):
                writer.transport.abort()
            for _ in range(100):
                if not self._writers:
                    break
                await asyncio.sleep(0.01)

        asyncio.run_coroutine_threadsafe(close(), self._loop).result(5)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(5)
        self._loop.close()


def late_behind_proxy(
    early: Sequence[ServerProcess], late: ServerProcess, max_age_ms: int, clients: int = 6, window_secs: float = 3.0
) -> Late:
    """``clients`` channels (pick_first, as a plain client) through the proxy to ``early``; then
    ``late`` starts and joins the proxy's backends."""
    everyone = [*early, late]
    backends = [("127.0.0.1", r.grpc_port) for r in early]
    with TcpProxy(backends) as proxy:
        channels = [
            grpc.insecure_channel(f"127.0.0.1:{proxy.port}", options=[("grpc.use_local_subchannel_pool", 1)]) for _ in range(clients)
        ]
        try:
            for channel in channels:
                wait_ready(channel)
            with Load(channels, clients):
                time.sleep(1.0)
                late.start(wait_for="")
                late.wait_until(f"http://{late.http_url}/v2/health/ready", 60)
                proxy.add_backend(("127.0.0.1", late.grpc_port))
                ready_at = time.monotonic()
                first, counts = _watch_late(everyone, late, ready_at, window_secs)
        finally:
            for channel in channels:
                channel.close()
    total = sum(counts)
    setup = "L4 proxy (like a ClusterIP Service), pick_first clients"
    return Late(setup, max_age_ms, first, counts[-1] / total if total else 0.0, counts, window_secs)


# ------------------------------------------------------------------------------------------- CLI


def run_all(log_dir: Path, duration_secs: float, window_secs: float, say: Callable[[str], None] = print) -> dict[str, object]:
    figures: dict[str, object] = {}
    replicas = start_replicas(3, log_dir)
    extra: list[ServerProcess] = []
    try:
        result = spread(replicas)
        figures["spread"] = asdict(result)
        say(f"spread: {result.requests} requests over 3 replicas, round_robin → {result.per_replica} (max/min {result.max_over_min:.2f})")

        unready = ServerProcess([broken_repository(log_dir)], log_path=log_dir / "unready.log").start(wait_for="live")
        extra.append(unready)
        nr = not_ready(replicas[:2], unready)
        figures["not_ready"] = asdict(nr)
        say(
            f"not-ready replica (HTTP ready {nr.not_ready_http_status}, gRPC health {nr.not_ready_health}): "
            f"with healthCheckConfig {nr.with_health_check}, without {nr.without_health_check} (its count last)"
        )
        stop_all([unready])

        kills = []
        for how in (signal.SIGKILL, signal.SIGTERM):
            for retries in (False, True):
                kill, replicas[2] = kill_under_load(replicas, 2, how, retries, duration_secs=duration_secs)
                kills.append(asdict(kill))
                say(
                    f"{how.name} one of 3 under load ({kill.threads} client threads, {kill.duration_secs:.0f} s), retries "
                    f"{'on ' if retries else 'off'}: {sum(kill.errors.values())} failed "
                    f"of {kill.sent} {kill.errors or ''} (in flight at the kill: {kill.in_flight_at_kill})"
                )
        figures["kill"] = kills

        stop_all([replicas[2]])
        late, replicas[2] = late_static_list(replicas[:2], replicas[2], window_secs=window_secs)
        figures["late_static_list"] = asdict(late)
        say(late_line(late))

        for age_ms in (0, 1000):
            args = [f"--grpc-max-connection-age-ms={age_ms}", "--grpc-max-connection-age-grace-ms=500"] if age_ms else []
            group = start_replicas(2, log_dir / f"age{age_ms}", args)
            late_one = ServerProcess([REPO_ROOT / "model_repo"], args, log_path=log_dir / f"age{age_ms}" / "late.log")
            extra += [*group, late_one]
            result_late = late_behind_proxy(group, late_one, age_ms, window_secs=window_secs)
            figures[f"late_behind_proxy_age_{age_ms}"] = asdict(result_late)
            say(late_line(result_late))
            stop_all([*group, late_one])
    finally:
        stop_all([*replicas, *extra])
    return figures


def late_line(late: Late) -> str:
    when = f"{late.secs_to_first_request:.2f} s" if late.secs_to_first_request is not None else f"never within {late.window_secs:.0f} s"
    age = f", --grpc-max-connection-age-ms={late.max_connection_age_ms}" if late.max_connection_age_ms else ", no max connection age"
    if late.setup.startswith("static"):
        age = ""
    window = "then" if late.secs_to_first_request is not None else "meanwhile"
    counts = f"{late.per_replica_after} ({late.share_after:.0%} to it)"
    return f"late replica, {late.setup}{age}: first request {when} after it was ready; {window} {counts}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Scale-out figures: ortserve replicas on 127.0.0.1 with real gRPC clients.")
    parser.add_argument("--duration-secs", type=float, default=3.0, help="load duration of each kill experiment")
    parser.add_argument("--window-secs", type=float, default=3.0, help="observation window of the late-replica experiments")
    parser.add_argument("--log-dir", type=Path, default=REPO_ROOT / "loadtest" / "results" / "replicas")
    parser.add_argument("--json", type=Path, default=None, help="also write the figures here")
    args = parser.parse_args(argv)
    args.log_dir.mkdir(parents=True, exist_ok=True)
    started = time.monotonic()
    figures = run_all(args.log_dir, args.duration_secs, args.window_secs)
    print(f"done in {time.monotonic() - started:.0f} s; server logs in {args.log_dir}")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(figures, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
