"""Standard-library json vs orjson on the HTTP inference hot path, at realistic sizes.

Each case times what the HTTP frontend does per request: decode (parse the request body and turn
``data`` into a numpy array) and encode (turn the output arrays into the response body). It prints
a table of µs per call (median of several repeats) and the speed-up, and exits 0.

    .venv/bin/python -m loadtest.bench_json
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
import orjson


@dataclass(frozen=True)
class Case:
    name: str
    request: bytes  # a KServe v2 JSON request body
    input_dtype: np.dtype | type
    output: np.ndarray  # what the response carries


def _request(shape: list[int], datatype: str, data: list) -> bytes:
    body = {"id": "bench", "inputs": [{"name": "INPUT0", "shape": shape, "datatype": datatype, "data": data}]}
    return json.dumps(body).encode()


def cases() -> list[Case]:
    rng = np.random.default_rng(0)

    def floats(*shape: int) -> np.ndarray:
        return rng.standard_normal(shape).astype(np.float32)

    words = np.array([f"token-{i:05d}-" + "x" * 20 for i in range(256)], dtype=object)
    return [
        # mlp: [1, 256] FP32 in, [1, 10] out (the model the HTTP figures use)
        Case("mlp b1 (256 fp32 → 10)", _request([1, 256], "FP32", floats(256).tolist()), np.float32, floats(1, 10)),
        Case("mlp b16 (4096 fp32 → 160)", _request([16, 256], "FP32", floats(4096).tolist()), np.float32, floats(16, 10)),
        # an image classifier: [1, 3, 224, 224] FP32 in (~3 MB of JSON), 1000 logits out
        Case("image (150528 fp32 → 1000)", _request([1, 3, 224, 224], "FP32", floats(150528).tolist()), np.float32, floats(1, 1000)),
        Case("int64 ids (512 → 512)", _request([1, 512], "INT64", list(range(512))), np.int64, np.arange(512, dtype=np.int64)),
        Case("bytes (256 strings → 256)", _request([1, 256], "BYTES", words.tolist()), object, words),
        # an echo of a large tensor: the encode side at size
        Case("echo (150528 fp32 → 150528)", _request([1, 150528], "FP32", floats(150528).tolist()), np.float32, floats(1, 150528)),
    ]


def decode_stdlib(case: Case) -> np.ndarray:
    body = json.loads(case.request)
    return np.asarray(body["inputs"][0]["data"], dtype=case.input_dtype)


def decode_orjson(case: Case) -> np.ndarray:
    body = orjson.loads(case.request)
    return np.asarray(body["inputs"][0]["data"], dtype=case.input_dtype)


def _response(data: object) -> dict:
    return {
        "model_name": "m",
        "model_version": "1",
        "id": "bench",
        "outputs": [{"name": "OUTPUT0", "shape": [1, 1], "datatype": "FP32", "data": data}],
    }


def encode_stdlib(case: Case) -> bytes:
    return json.dumps(_response(case.output.ravel().tolist()), separators=(",", ":")).encode()


def encode_orjson_tolist(case: Case) -> bytes:
    return orjson.dumps(_response(case.output.ravel().tolist()))


def encode_orjson_numpy(case: Case) -> bytes:
    # orjson serialises numeric numpy arrays natively; object (BYTES) arrays still go through tolist.
    flat = case.output.ravel()
    return orjson.dumps(_response(flat if flat.dtype != object else flat.tolist()), option=orjson.OPT_SERIALIZE_NUMPY)


def time_us(fn: Callable[[Case], object], case: Case, min_seconds: float, repeats: int) -> float:
    """Median over ``repeats`` of the mean µs per call in a loop of at least ``min_seconds``."""
    fn(case)
    calls = 1
    while True:  # calibrate the loop length
        start = time.perf_counter()
        for _ in range(calls):
            fn(case)
        if time.perf_counter() - start >= min_seconds:
            break
        calls *= 2
    samples = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(calls):
            fn(case)
        samples.append((time.perf_counter() - start) / calls * 1e6)
    return statistics.median(samples)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--min-seconds", type=float, default=0.2, help="length of one timed loop")
    parser.add_argument("--repeats", type=int, default=5)
    args = parser.parse_args()
    header = (
        f"{'case':30} {'body KB':>8} | {'decode std':>10} {'orjson':>8} {'x':>5} | "
        f"{'encode std':>10} {'orjson':>8} {'x':>5} {'+numpy':>8} {'x':>5}"
    )
    print(header)
    print("-" * len(header))
    for case in cases():
        t = {
            fn.__name__: time_us(fn, case, args.min_seconds, args.repeats)
            for fn in (decode_stdlib, decode_orjson, encode_stdlib, encode_orjson_tolist, encode_orjson_numpy)
        }
        print(
            f"{case.name:30} {len(case.request) / 1024:8.1f} | "
            f"{t['decode_stdlib']:10.1f} {t['decode_orjson']:8.1f} {t['decode_stdlib'] / t['decode_orjson']:5.1f} | "
            f"{t['encode_stdlib']:10.1f} {t['encode_orjson_tolist']:8.1f} {t['encode_stdlib'] / t['encode_orjson_tolist']:5.1f} "
            f"{t['encode_orjson_numpy']:8.1f} {t['encode_stdlib'] / t['encode_orjson_numpy']:5.1f}"
        )
    print("µs per call (median); x = stdlib time / orjson time. decode = loads + np.asarray; encode = response dict → bytes.")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
