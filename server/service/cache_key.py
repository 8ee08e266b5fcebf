"""The response cache's key: a 128-bit BLAKE2b digest of everything that decides a response.

It covers the version's cache token (model name, version and load generation), then for each
input in the model's order its name, datatype, shape, parameters and data bytes, then the
requested outputs in order with their classification counts and parameters, then the request
parameters that could change the result. Every field is length-prefixed, so no two different
requests hash the same byte stream; on a key match nothing else is compared, because the key
covers everything (unlike Triton's 64-bit hash of names and bytes, without shapes or types).

Data is hashed as its wire bytes: raw tensors as they arrived (no decoding: a hit costs no
numpy), typed gRPC contents and JSON ``data`` as the raw bytes of their decoded arrays, so the
same tensor sent either way gives the same key.
"""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Callable, Sequence

from server.datatypes import encode_raw
from server.service.request_inputs import FeedPlan
from server.types import InferInput, InferRequest, ParameterValue, RequestedOutput

DIGEST_BYTES = 16
# Request parameters that only place, time or render a request: they never change its outputs.
_NEUTRAL_PARAMETERS = frozenset({"priority", "timeout", "sequence_id", "sequence_start", "sequence_end", "binary_data_output"})
# Where a tensor's data comes from or goes to, not what it is (its bytes are hashed instead).
_PLACEMENT_PARAMETERS = frozenset({"shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"})
_LENGTH = struct.Struct("<Q")
# A digest's ``update``.
_Update = Callable[[bytes | bytearray | memoryview], None]


def request_key(token: bytes, request: InferRequest, plan: FeedPlan, output_names: Sequence[str]) -> bytes:
    """The key of a validated request. Decodes (once) inputs that came as typed contents or JSON;
    raises their decoding's ServerError."""
    digest = hashlib.blake2b(token, digest_size=DIGEST_BYTES)
    update = digest.update
    update(_LENGTH.pack(len(plan.order)))
    for index, _ in plan.order:
        _input(update, request.inputs[index])
    update(_LENGTH.pack(len(output_names)))
    requested = {output.name: output for output in request.outputs}
    for name in output_names:
        _output(update, name, requested.get(name))
    _parameters(update, request.parameters, _NEUTRAL_PARAMETERS, neutral_prefix="triton_")
    return digest.digest()


def _input(update: _Update, item: InferInput) -> None:
    _text(update, item.name)
    _text(update, item.datatype)
    update(_LENGTH.pack(len(item.shape)))
    update(struct.pack(f"<{len(item.shape)}q", *item.shape))
    _parameters(update, item.parameters, _PLACEMENT_PARAMETERS)
    data = _data(item)
    update(_LENGTH.pack(len(data)))
    update(data)


def _output(update: _Update, name: str, output: RequestedOutput | None) -> None:
    _text(update, name)
    update(_LENGTH.pack(output.class_count if output is not None else 0))
    _parameters(update, output.parameters if output is not None else {}, _PLACEMENT_PARAMETERS)


def _data(item: InferInput) -> bytes | bytearray | memoryview:
    if item.raw is not None:
        return item.raw
    if item.array is None and item.decode is not None:
        # Decoded here, once: the feeds are built from ``array`` later (request_inputs._decode).
        item.array, item.decode = item.decode(), None
    return encode_raw(item.array) if item.array is not None else b""


def _parameters(update: _Update, parameters: dict[str, ParameterValue], neutral: frozenset[str], neutral_prefix: str | None = None) -> None:
    kept = [
        (key, value)
        for key, value in parameters.items()
        if key not in neutral and (neutral_prefix is None or not key.startswith(neutral_prefix))
    ]
    update(_LENGTH.pack(len(kept)))
    for key, value in sorted(kept, key=lambda item: item[0]):
        _text(update, key)
        # The type matters: 1, 1.0, True and "1" are different parameters.
        _text(update, f"{type(value).__name__}:{value!r}")


def _text(update: _Update, text: str) -> None:
    data = text.encode("utf-8", "surrogatepass")
    update(_LENGTH.pack(len(data)))
    update(data)
