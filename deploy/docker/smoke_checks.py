"""Client-side checks that scripts/docker-smoke.sh runs against a running ortserve container.

Real clients only: tritonclient.grpc and tritonclient.http (the test extras), plain HTTP for
/metrics. Each subcommand prints one line per check and exits 1 on the first failure.

    python deploy/docker/smoke_checks.py ready    --http 127.0.0.1:18000 [--timeout 120]
    python deploy/docker/smoke_checks.py infer    --grpc 127.0.0.1:18001 --http 127.0.0.1:18000 [--model simple]
    python deploy/docker/smoke_checks.py metrics  --metrics 127.0.0.1:18002 [--model simple]
"""

from __future__ import annotations

import argparse
import re
import sys
import time
import urllib.error
import urllib.request

import numpy as np

_OPENER = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # always local


def fail(message: str) -> None:
    print(f"FAIL: {message}", file=sys.stderr)
    sys.exit(1)


def http_get(url: str, timeout: float = 3.0) -> tuple[int | None, str]:
    try:
        with _OPENER.open(url, timeout=timeout) as response:
            return response.status, response.read().decode(errors="replace")
    except urllib.error.HTTPError as error:
        return error.code, ""
    except (OSError, ValueError):
        return None, ""


def cmd_ready(args: argparse.Namespace) -> None:
    """Wait for /v2/health/ready = 200; print the seconds it took (from --since, epoch seconds)."""
    deadline = time.monotonic() + args.timeout
    while time.monotonic() < deadline:
        if http_get(f"http://{args.http}/v2/health/ready", timeout=1.0)[0] == 200:
            since = args.since if args.since else time.time()
            print(f"ready_after_secs={time.time() - since:.2f}")
            return
        time.sleep(0.05)
    fail(f"http://{args.http}/v2/health/ready not 200 after {args.timeout}s")


def _infer_simple_grpc(grpc_url: str, model: str) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    if not client.is_server_ready():
        fail("gRPC ServerReady is false")
    if not client.is_model_ready(model):
        fail(f"gRPC ModelReady({model}) is false")
    a = np.arange(16, dtype=np.int32).reshape(1, 16)
    b = np.full((1, 16), 3, dtype=np.int32)
    inputs = [grpcclient.InferInput("INPUT0", [1, 16], "INT32"), grpcclient.InferInput("INPUT1", [1, 16], "INT32")]
    inputs[0].set_data_from_numpy(a)
    inputs[1].set_data_from_numpy(b)
    result = client.infer(model, inputs)
    if not np.array_equal(result.as_numpy("OUTPUT0"), a + b) or not np.array_equal(result.as_numpy("OUTPUT1"), a - b):
        fail(f"gRPC infer on {model}: wrong outputs")
    meta = client.get_server_metadata()
    print(f"ok: gRPC infer {model} (server {meta.name} {meta.version})")


def _infer_mlp_grpc(grpc_url: str) -> None:
    import tritonclient.grpc as grpcclient

    client = grpcclient.InferenceServerClient(grpc_url)
    meta = client.get_model_metadata("mlp")
    shape = [4, *[int(d) for d in meta.inputs[0].shape[1:]]]
    data = np.random.default_rng(0).standard_normal(shape).astype(np.float32)
    infer_input = grpcclient.InferInput(meta.inputs[0].name, shape, meta.inputs[0].datatype)
    infer_input.set_data_from_numpy(data)
    output = client.infer("mlp", [infer_input]).as_numpy(meta.outputs[0].name)
    if output is None or output.shape[0] != 4 or not np.isfinite(output).all():
        fail("gRPC infer on mlp: bad output")
    print(f"ok: gRPC infer mlp, batch 4, output {list(output.shape)}")


def _health_http(http_url: str, model: str) -> None:
    import tritonclient.http as httpclient

    client = httpclient.InferenceServerClient(http_url)
    if not client.is_server_live() or not client.is_server_ready():
        fail("HTTP /v2/health/live or /v2/health/ready is not 200")
    if not client.is_model_ready(model):
        fail(f"HTTP /v2/models/{model}/ready is not 200")
    print(f"ok: HTTP health (tritonclient.http): server live and ready, {model} ready")


def cmd_infer(args: argparse.Namespace) -> None:
    _infer_simple_grpc(args.grpc, args.model)
    if args.mlp:
        _infer_mlp_grpc(args.grpc)
    if args.http:
        _health_http(args.http, args.model)


def cmd_metrics(args: argparse.Namespace) -> None:
    status, text = http_get(f"http://{args.metrics}/metrics")
    if status != 200:
        fail(f"/metrics answered {status}")
    wanted = [
        rf'^nv_inference_request_success\{{[^}}]*model="{re.escape(args.model)}"[^}}]*\}} ([1-9][0-9]*)$',
        rf'^nv_inference_count\{{[^}}]*model="{re.escape(args.model)}"',
        r"^nv_inference_pending_request_count\{",
        r"^nv_inference_queue_duration_us\{",
        r'^nv_inference_request_failure\{[^}]*reason="REJECTED"',
        rf'^ortserve_request_duration_seconds_bucket\{{[^}}]*model="{re.escape(args.model)}"',
        r"^ortserve_queue_duration_seconds_bucket\{",
        r"^ortserve_compute_duration_seconds_bucket\{",
        r"^ortserve_batch_size_bucket\{",
    ]
    for pattern in wanted:
        if not re.search(pattern, text, re.MULTILINE):
            fail(f"/metrics has no line matching {pattern}")
    if re.search(r"^nv_inference_request_success_total", text, re.MULTILINE):
        fail("/metrics renamed a Triton counter with a _total suffix")
    success = re.search(wanted[0], text, re.MULTILINE)
    print(
        f"ok: /metrics has Triton's nv_inference_* families and the ortserve_* histograms "
        f"(nv_inference_request_success{{model={args.model}}} = {success.group(1) if success else '?'})"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    ready = sub.add_parser("ready")
    ready.add_argument("--http", required=True)
    ready.add_argument("--timeout", type=float, default=120.0)
    ready.add_argument("--since", type=float, default=0.0, help="epoch seconds the container was started")
    infer = sub.add_parser("infer")
    infer.add_argument("--grpc", required=True)
    infer.add_argument("--http", default="")
    infer.add_argument("--model", default="simple", help="a model with simple's signature")
    infer.add_argument("--mlp", action="store_true", help="also infer on the bundled mlp")
    metrics = sub.add_parser("metrics")
    metrics.add_argument("--metrics", required=True)
    metrics.add_argument("--model", default="simple")
    args = parser.parse_args()
    {"ready": cmd_ready, "infer": cmd_infer, "metrics": cmd_metrics}[args.command](args)


if __name__ == "__main__":
    main()
