"""Issue 10's figures in one run: what each attack costs the server, before and after hardening.

    .venv/bin/python -m loadtest.bench_hardening --baseline-tree /tmp/baseline --baseline-python /path/to/old/venv/bin/python

Starts the current server (this checkout) and, when ``--baseline-tree`` is given, an older
checkout of it (run with its own interpreter, since its generated code may need older protobuf),
and sends each the same attacks against 127.0.0.1. For each it prints what was sent and the
server's answer, peak RSS growth (VmHWM, reset before the attack), CPU seconds and timings, and
finally the fuzz totals. It prints figures; it asserts nothing (the tests do).
"""

from __future__ import annotations

import argparse
import asyncio
import gzip
import http.client
import json
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import ExitStack
from dataclasses import dataclass
from pathlib import Path

import grpc

from loadtest.fuzz import fuzz_grpc, fuzz_http
from loadtest.servers import REPO_ROOT, Running, free_port, http_ok, ortserve
from scripts import onnx_models
from server.proto import grpc_service_pb2 as pb
from server.proto import grpc_service_pb2_grpc as pb_grpc

MIB = 2**20
QUEUE_CONFIG = "max_batch_size: 1\ndynamic_batching { default_queue_policy { max_queue_size: 64 } }"
SLOW_WARMUP = """
max_batch_size: 1
input [ { name: "x", data_type: TYPE_FP32, dims: [ 1 ] } ]
output [ { name: "y", data_type: TYPE_FP32, dims: [ 1 ] } ]
model_warmup [ { name: "forever", batch_size: 1, count: 1000000,
                 inputs { key: "x" value { data_type: TYPE_FP32 dims: [ 1 ] zero_data: true } } } ]
"""


@dataclass(frozen=True)
class Target:
    name: str
    python: str
    tree: Path


class Process:
    """The server's own RSS high-water mark and CPU time, from /proc."""

    def __init__(self, pid: int) -> None:
        self.pid = pid

    def reset_peak(self) -> int:
        Path(f"/proc/{self.pid}/clear_refs").write_text("5")
        return self._status("VmRSS")

    def peak_mb(self, baseline: int) -> float:
        return (self._status("VmHWM") - baseline) / MIB

    def cpu_secs(self) -> float:
        fields = Path(f"/proc/{self.pid}/stat").read_text().rsplit(")", 1)[1].split()
        return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")

    def _status(self, name: str) -> int:
        for line in Path(f"/proc/{self.pid}/status").read_text().splitlines():
            if line.startswith(name + ":"):
                return int(line.split()[1]) * 1024
        return 0


def measured(server: Running, attack: Callable[[], str]) -> str:
    process = Process(server.pid or 0)
    baseline, cpu = process.reset_peak(), process.cpu_secs()
    started = time.monotonic()
    outcome = attack()
    return f"{outcome}; +{process.peak_mb(baseline):.0f} MB peak, {process.cpu_secs() - cpu:.1f} s CPU, {time.monotonic() - started:.1f} s"


def post(server: Running, path: str, body: bytes, headers: dict[str, str]) -> int:
    host, _, port = (server.http_url or "").rpartition(":")
    connection = http.client.HTTPConnection(host, int(port), timeout=300)
    try:
        connection.request("POST", path, body, headers)
        response = connection.getresponse()
        response.read()
        return response.status
    except (OSError, http.client.HTTPException) as exc:
        return -1 if not isinstance(exc, TimeoutError) else -2
    finally:
        connection.close()


def stub(server: Running) -> pb_grpc.GRPCInferenceServiceStub:
    channel = grpc.insecure_channel(server.grpc_url, options=[("grpc.max_send_message_length", -1)])
    return pb_grpc.GRPCInferenceServiceStub(channel)


def grpc_code(call: Callable[[], object]) -> str:
    try:
        call()
        return "OK"
    except grpc.RpcError as error:
        return error.code().name  # type: ignore[attr-defined]


# ---- the attacks -------------------------------------------------------------------------------


def http_bomb(server: Running) -> str:
    bomb = gzip.compress(bytes(1024 * MIB), 9)
    return f"HTTP {post(server, '/v2/models/mlp/infer', bomb, {'Content-Encoding': 'gzip'})}"


def http_many_members(server: Running) -> str:
    return f"HTTP {post(server, '/v2/models/mlp/infer', gzip.compress(b'') * 209_715, {'Content-Encoding': 'gzip'})}"


def grpc_bomb(server: Running) -> str:
    request = pb.ModelInferRequest(model_name="identity")
    request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 128 * MIB])
    request.raw_input_contents.append(bytes(512 * MIB))
    return grpc_code(lambda: stub(server).ModelInfer(request, compression=grpc.Compression.Gzip, timeout=300))


def bad_shapes(server: Running) -> str:
    shapes = [[1] * 65, [0, 2**62, 2**62], [4294967296, 4294967296], [-1, -1], [2**62, 256]]
    codes: Counter[str] = Counter()
    for shape in shapes:
        request = pb.ModelInferRequest(model_name="mlp")
        request.inputs.add(name="input", datatype="FP32", shape=shape).contents.fp32_contents.extend([])
        codes[grpc_code(lambda request=request: stub(server).ModelInfer(request, timeout=60))] += 1
        document = {"inputs": [{"name": "input", "shape": shape, "datatype": "FP32", "data": []}]}
        codes[f"HTTP {post(server, '/v2/models/mlp/infer', json.dumps(document).encode(), {})}"] += 1
    return ", ".join(f"{code} x{count}" for code, count in sorted(codes.items()))


def garbage_protobuf(server: Running) -> str:
    channel = grpc.insecure_channel(server.grpc_url)
    call = channel.unary_unary("/inference.GRPCInferenceService/ModelInfer", lambda b: b, lambda b: b)
    before = server.log_path.read_text(errors="replace").count("Traceback")
    codes = Counter(grpc_code(lambda: call(os.urandom(64), timeout=30)) for _ in range(50))
    tracebacks = server.log_path.read_text(errors="replace").count("Traceback") - before
    return f"{dict(codes)}, {tracebacks} tracebacks logged for 50 requests"


def refused_large_requests(server: Running) -> str:
    """50 concurrent 32 MB requests the model must refuse (batch 32768 > max_batch_size 4)."""
    request = pb.ModelInferRequest(model_name="mlp")
    request.inputs.add(name="input", datatype="FP32", shape=[32768, 256])
    request.raw_input_contents.append(bytes(32 * MIB))
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(grpc_code(lambda: stub(server).ModelInfer(request, timeout=300)))) for _ in range(50)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return str(dict(Counter(results)))


def bytes_request(server: Running) -> str:
    """One 32 MB request of 2-byte strings (5.6 M elements)."""
    count = 32 * MIB // 6
    request = pb.ModelInferRequest(model_name="strings")
    request.inputs.add(name="INPUT0", datatype="BYTES", shape=[1, count])
    request.raw_input_contents.append((b"\x02\x00\x00\x00ab") * count)
    request.outputs.add(name="OUTPUT0")
    return grpc_code(lambda: stub(server).ModelInfer(request, timeout=300))


def overload_burst(server: Running) -> str:
    """2,000 requests at once at a model whose queue holds 64 (a 10 s client deadline)."""

    async def burst() -> list[tuple[str, float]]:
        async with grpc.aio.insecure_channel(server.grpc_url) as channel:
            client = pb_grpc.GRPCInferenceServiceStub(channel)
            request = pb.ModelInferRequest(model_name="queued")
            request.inputs.add(name="x", datatype="FP32", shape=[1, 1])
            request.raw_input_contents.append(bytes(4))

            async def one() -> tuple[str, float]:
                started = time.perf_counter()
                try:
                    await client.ModelInfer(request, timeout=10)
                    code = "OK"
                except grpc.aio.AioRpcError as error:
                    code = error.code().name
                return code, (time.perf_counter() - started) * 1000

            return await asyncio.gather(*(one() for _ in range(2000)))

    outcomes = asyncio.run(burst())
    codes = Counter(code for code, _ in outcomes)
    rejected = sorted(ms for code, ms in outcomes if code == "UNAVAILABLE")
    stats = stub(server).ModelStatistics(pb.ModelStatisticsRequest(name="queued"), timeout=30).model_stats[0].inference_stats.fail
    server_ms = stats.ns / stats.count / 1e6 if stats.count else 0.0
    if not rejected:
        return f"{dict(codes)}"
    p50, p99 = statistics.median(rejected), rejected[min(len(rejected) - 1, int(len(rejected) * 0.99))]
    return f"{dict(codes)}; rejection p50 {p50:.1f} ms, p99 {p99:.1f} ms at the client, {server_ms:.3f} ms mean server time"


def unread_stream(server: Running) -> str:
    sent = 0

    def requests() -> Iterator[pb.ModelInferRequest]:
        nonlocal sent
        for index in range(3000):
            request = pb.ModelInferRequest(model_name="identity", id=str(index))
            request.inputs.add(name="INPUT0", datatype="FP32", shape=[1, 25600])
            request.raw_input_contents.append(bytes(102400))
            sent += 1
            yield request

    call = stub(server).ModelStreamInfer(requests(), timeout=300)
    last, still = -1, 0
    while still < 6 and sent < 3000:
        time.sleep(0.5)
        still, last = (still + 1 if sent == last else 0), sent
    call.cancel()
    return f"3,000 x 100 KB, responses never read: client could send {sent}"


def slow_clients(server: Running, wait_secs: float) -> str:
    host, _, port = (server.http_url or "").rpartition(":")
    sockets = []
    for _ in range(1000):
        try:
            sock = socket.create_connection((host, int(port)), timeout=5)
            sock.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Slow: ")
            sockets.append(sock)
        except OSError:
            break
    time.sleep(wait_secs)
    open_count = 0
    for sock in sockets:
        sock.setblocking(False)
        try:
            open_count += 0 if sock.recv(1) == b"" else 1
        except BlockingIOError:
            open_count += 1
        except OSError:
            pass
        sock.close()
    return f"1,000 connections sending half a header: {len(sockets)} accepted, {open_count} still open after {wait_secs:g} s"


def names_and_ids(server: Running) -> str:
    request = pb.ModelInferRequest(model_name="mlp", id="r" * MIB)
    request.inputs.add(name="input", datatype="FP32", shape=[1, 256])
    request.raw_input_contents.append(bytes(1024))
    huge_id = grpc_code(lambda: stub(server).ModelInfer(request, timeout=30))
    long_name = grpc_code(lambda: stub(server).ModelMetadata(pb.ModelMetadataRequest(name="m" * 300), timeout=30))
    return f"1 MB request id: {huge_id}; 300-char model name: {long_name}"


def parser_refusal(server: Running) -> str:
    host, _, port = (server.http_url or "").rpartition(":")
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        sock.sendall(b"POST /v2/models/mlp/infer HTTP/1.1\r\nHost: x\r\nContent-Length: nope\r\n\r\n")
        reply = sock.recv(4096)
    content_type = next((line for line in reply.split(b"\r\n") if line.lower().startswith(b"content-type")), b"?")
    return f"bad Content-Length: {reply.split(b' ')[1].decode()} {content_type.decode()}"


def escaping_load(server: Running) -> str:
    config = json.dumps({"default_model_filename": "../../mlp/1/model.onnx"})
    request = pb.RepositoryModelLoadRequest(model_name="identity")
    request.parameters["config"].string_param = config
    code = grpc_code(lambda: stub(server).RepositoryModelLoad(request, timeout=120))
    probe = pb.RepositoryModelLoadRequest(model_name="identity")
    probe.parameters["config"].string_param = json.dumps({"default_model_filename": "/etc/passwd"})
    try:
        stub(server).RepositoryModelLoad(probe, timeout=120)
        detail = "OK"
    except grpc.RpcError as error:
        detail = error.details()[-60:]  # type: ignore[attr-defined]
    return f"default_model_filename '../../mlp/1/model.onnx': {code}; '/etc/passwd' says ...{detail!r}"


def network_warmup(server: Running) -> str:
    config = {
        "max_batch_size": 4,
        "model_warmup": [
            {"name": "big", "batch_size": 1, "inputs": {"INPUT0": {"data_type": "TYPE_FP32", "dims": [100_000_000], "random_data": True}}}
        ],
    }
    request = pb.RepositoryModelLoadRequest(model_name="identity")
    request.parameters["config"].string_param = json.dumps(config)
    return f"random_data dims [100000000]: {grpc_code(lambda: stub(server).RepositoryModelLoad(request, timeout=300))}"


# ---- running them ------------------------------------------------------------------------------


def build_repository(root: Path) -> Path:
    repository = root / "repo"

    def write(name: str, model: object, config: str | None = None) -> None:
        version = repository / name / "1"
        version.mkdir(parents=True)
        onnx_models.save(model, str(version / "model.onnx"))  # type: ignore[arg-type]
        if config:
            (repository / name / "config.pbtxt").write_text(config)

    write("mlp", onnx_models.mlp())
    write("identity", onnx_models.identity("FP32", ["batch", "n"]))
    write("strings", onnx_models.identity("BYTES", ["batch", "n"]))
    write("queued", onnx_models.slow_echo(), QUEUE_CONFIG)
    return repository


ATTACKS: list[tuple[str, Callable[[Running], str]]] = [
    ("1 HTTP gzip bomb (1 GiB of zeros, ~1 MB)", http_bomb),
    ("2 HTTP 209,715 empty gzip members (4 MB)", http_many_members),
    ("3 gRPC gzip bomb (512 MB, ~0.5 MB)", grpc_bomb),
    ("5 hostile shapes, gRPC and HTTP", bad_shapes),
    ("6 unparseable protobuf x50", garbage_protobuf),
    ("7a 50 x 32 MB requests to refuse", refused_large_requests),
    ("7b one 32 MB BYTES request (2-byte strings)", bytes_request),
    ("8 2,000-request burst, queue of 64", overload_burst),
    ("9 stream never read", unread_stream),
    ("13 1 MB request id, 300-char name", names_and_ids),
    ("14 aiohttp parser refusal", parser_refusal),
]
EXPLICIT_ATTACKS: list[tuple[str, Callable[[Running], str]]] = [
    ("4 default_model_filename escapes", escaping_load),
    ("11 network warmup of 1.1 GB", network_warmup),
]


def shutdown_during_load(target: Target, root: Path, current: bool) -> str:
    repository = root / f"slow-{target.name}"
    version = repository / "slow" / "1"
    version.mkdir(parents=True)
    onnx_models.save(onnx_models.slow_echo(), str(version / "model.onnx"))
    (repository / "slow" / "config.pbtxt").write_text(SLOW_WARMUP)
    http_port = free_port()
    command = [target.python, "-m", "server", "--host", "127.0.0.1", "--model-repository", str(repository), "--exit-timeout-secs", "5"]
    command += ["--grpc-port", str(free_port()), "--http-port", str(http_port), "--metrics-port", str(free_port())]
    process = subprocess.Popen(command, cwd=target.tree, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 60
    while not http_ok(f"http://127.0.0.1:{http_port}/v2/health/live") and time.monotonic() < deadline:
        time.sleep(0.2)
    time.sleep(1.0)  # the warmup is under way
    process.send_signal(signal.SIGTERM)
    started = time.monotonic()
    try:
        process.wait(90)
        return f"SIGTERM during a long warmup, --exit-timeout-secs 5: exited after {time.monotonic() - started:.1f} s"
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait()
        return "SIGTERM during a long warmup, --exit-timeout-secs 5: still running after 90 s (killed)"


def run_target(target: Target, current: bool, root: Path) -> dict[str, str]:
    """Every attack on a fresh server, so that one attack's freed memory does not hide the next's."""
    results: dict[str, str] = {}
    repository = build_repository(root / target.name)
    # The idle timeout is shortened so that the slow-clients figure is read within seconds.
    extra = ["--http-idle-timeout-secs=3"] if current else []
    explicit = ["--model-control-mode=explicit", "--load-model=*"]
    slow: Callable[[Running], str] = lambda server: slow_clients(server, wait_secs=5)  # noqa: E731
    plan = [(label, attack, extra) for label, attack in ATTACKS]
    plan += [("10 slow clients", slow, extra)] + [(label, attack, explicit) for label, attack in EXPLICIT_ATTACKS]
    for index, (label, attack, args) in enumerate(plan):
        with ortserve(repository, args, f"{target.name}-{index}", root / "logs", python=target.python, tree=target.tree) as server:
            results[label] = measured(server, lambda attack=attack, server=server: attack(server))
        print(f"  [{target.name}] {label}: {results[label]}", flush=True)
    results["12 exit timeout during a load"] = shutdown_during_load(target, root, current)
    print(f"  [{target.name}] 12: {results['12 exit timeout during a load']}", flush=True)
    return results


def fuzz_figures(root: Path, grpc_count: int, http_count: int) -> str:
    with ortserve(REPO_ROOT / "model_repo", [], "fuzz", root / "logs") as server:
        grpc_results = fuzz_grpc(server.grpc_url, grpc_count, seed=2026)
        http_results = fuzz_http(int((server.http_url or ":0").rpartition(":")[2]), http_count, seed=2026)
    return (
        f"gRPC {grpc_results.sent} cases: {dict(grpc_results.outcomes)}, defects {len(grpc_results.defects)}; "
        f"HTTP {http_results.sent} cases: {dict(http_results.outcomes)}, defects {len(http_results.defects)}"
    )


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m loadtest.bench_hardening", description=__doc__.splitlines()[0])
    parser.add_argument("--baseline-tree", type=Path, help="a checkout of the server before hardening, to compare with")
    parser.add_argument("--baseline-python", default=sys.executable, help="the interpreter (venv) that runs the baseline")
    parser.add_argument("--fuzz-grpc", type=int, default=20_000)
    parser.add_argument("--fuzz-http", type=int, default=5_000)
    options = parser.parse_args(argv)
    targets = [(Target("now", sys.executable, REPO_ROOT), True)]
    if options.baseline_tree:
        targets.insert(0, (Target("before", options.baseline_python, options.baseline_tree.resolve()), False))
    with ExitStack() as stack:
        root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="bench-hardening-")))
        table = {target.name: run_target(target, current, root) for target, current in targets}
        fuzz = fuzz_figures(root, options.fuzz_grpc, options.fuzz_http)
    print("\nitem | " + " | ".join(table))
    for label in table["now"]:
        print(f"{label} | " + " | ".join(table[name].get(label, "-") for name in table))
    print(f"\nfuzz (now): {fuzz}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
