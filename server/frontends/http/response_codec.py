"""InferResponse → HTTP response body: KServe v2 JSON, with binary outputs appended after it."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from server.datatypes import encode_raw
from server.frontends.http import json_codec
from server.frontends.http.request_codec import BinaryOutputs
from server.frontends.http.tensor_json import data_from_array
from server.types import InferResponse


@dataclass(frozen=True, slots=True)
class RenderedResponse:
    body: bytes
    # Length of the JSON header when binary outputs follow it (Inference-Header-Content-Length), else None.
    json_length: int | None


def render_response(response: InferResponse, binary: BinaryOutputs) -> RenderedResponse:
    """Raises ServerError(INVALID_ARG) for a BYTES output that cannot be JSON text."""
    outputs: list[dict[str, Any]] = []
    blobs: list[bytes] = []
    for output in response.outputs:
        entry: dict[str, Any] = {"name": output.name, "datatype": output.datatype, "shape": list(output.shape)}
        if output.in_shared_memory:
            pass  # its data is in the region the request named (Triton's entry: no data, no parameters)
        elif binary.wants(output.name):
            raw = encode_raw(output.array)
            entry["parameters"] = {"binary_data_size": len(raw)}
            blobs.append(raw)
        else:
            entry["data"] = data_from_array(output.array, output.name)
        outputs.append(entry)
    document: dict[str, Any] = {"model_name": response.model_name, "model_version": response.model_version}
    # Triton leaves out an empty id and empty parameters.
    if response.id:
        document["id"] = response.id
    if response.parameters:
        document["parameters"] = response.parameters
    document["outputs"] = outputs
    header = json_codec.dumps(document)
    if not blobs:
        return RenderedResponse(header, None)
    return RenderedResponse(b"".join([header, *blobs]), len(header))
