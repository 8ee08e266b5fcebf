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
from collections.abc import Sequence

from server.datatypes import encode_raw
from server.service.request_inputs import FeedPlan
from server.types import InferInput, InferRequest, ParameterValue

DIGEST_BYTES = 16
# Request parameters that only place, time or render a request: they never change its outputs.
_NEUTRAL_PARAMETERS = frozenset({"priority", "timeout", "sequence_id", "sequence_start", "sequence_end", "binary_data_output"})
# Where a tensor's data comes from or goes to, not what it is (its bytes are hashed instead).
_PLACEMENT_PARAMETERS = frozenset({"shared_memory_region", "shared_memory_byte_size", "shared_memory_offset"})
_LENGTH = struct.Struct("<Q")
# No parameters (a count of zero).
_NONE = _LENGTH.pack(0)


def request_key(token: bytes, request: InferRequest, plan: FeedPlan, output_names: Sequence[str]) -> bytes:
    """The key of a validated request. Decodes (once) inputs that came as typed contents or JSON;
    raises their decoding's ServerError.

    The small fields (with every data length) are hashed first, in one update, then the data of
    each input in the same order: the lengths make that stream as unambiguous as interleaving.
    """
    header = [token, _LENGTH.pack(len(plan.order))]
    data: list[bytes | bytearray | memoryview] = []
    for index, _ in plan.order:
        item = request.inputs[index]
        tensor_data = _data(item)
        header += (_text(item.name), _text(item.datatype), _shape(item.shape), _parameters(item.parameters, _PLACEMENT_PARAMETERS))
        header.append(_LENGTH.pack(len(tensor_data)))
        data.append(tensor_data)
    header.append(_LENGTH.pack(len(output_names)))
    requested = {output.name: output for output in request.outputs} if request.outputs else {}
    for name in output_names:
        output = requested.get(name)
        header += (_text(name), _LENGTH.pack(output.class_count if output is not None else 0))
        header.append(_parameters(output.parameters, _PLACEMENT_PARAMETERS) if output is not None else _NONE)
    header.append(_parameters(request.parameters, _NEUTRAL_PARAMETERS, neutral_prefix="triton_"))
    digest = hashlib.blake2b(b"".join(header), digest_size=DIGEST_BYTES)
    for tensor_data in data:
        digest.update(tensor_data)
    return digest.digest()


def _data(item: InferInput) -> bytes | bytearray | memoryview:
    if item.raw is not None:
        return item.raw
    if item.array is None and item.decode is not None:
        # Decoded here, once: the feeds are built from ``array`` later (request_inputs._decode).
        item.array, item.decode = item.decode(), None
    return encode_raw(item.array) if item.array is not None else b""


def _shape(shape: tuple[int, ...]) -> bytes:
    return struct.pack(f"<{len(shape) + 1}q", len(shape), *shape)


def _parameters(parameters: dict[str, ParameterValue], neutral: frozenset[str], neutral_prefix: str | None = None) -> bytes:
    if not parameters:
        return _NONE
    kept = sorted(
        (key, value)
        for key, value in parameters.items()
        if key not in neutral and (neutral_prefix is None or not key.startswith(neutral_prefix))
    )
    # The type matters: 1, 1.0, True and "1" are different parameters.
    return _LENGTH.pack(len(kept)) + b"".join(_text(key) + _text(f"{type(value).__name__}:{value!r}") for key, value in kept)


def _text(text: str) -> bytes:
    data = text.encode("utf-8", "surrogatepass")
    return _LENGTH.pack(len(data)) + data
