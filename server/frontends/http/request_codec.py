"""An HTTP inference request body → InferRequest, with Triton's binary tensor extension.

The body is a JSON header, optionally followed by binary tensors: an input whose parameters hold
``binary_data_size: N`` takes the next N bytes after the header, in the order the inputs are
listed; the ``Inference-Header-Content-Length`` header says where the JSON ends. Binary inputs
stay views of the body and are decoded (zero-copy) by the core with the request's datatype and
shape, exactly like gRPC's ``raw_input_contents``. Only the wire format is checked here; names,
shapes, datatypes and parameters are checked by the core, with the same messages as for gRPC.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass, field
from math import prod
from typing import Any

import numpy as np

from server.datatypes import SUPPORTED_DATATYPES, bf16_unsupported, element_size
from server.errors import ServerError
from server.frontends.http import json_codec
from server.frontends.http.tensor_json import array_from_data
from server.types import InferInput, InferRequest, ParameterValue, RequestedOutput, TensorMetadata

HEADER_LENGTH = "Inference-Header-Content-Length"


@dataclass(slots=True)
class BinaryOutputs:
    """Which outputs the response carries as binary: per-output ``binary_data``, else the request's
    ``binary_data_output`` (Triton's rule)."""

    default: bool = False
    explicit: dict[str, bool] = field(default_factory=dict)

    def wants(self, name: str) -> bool:
        return self.explicit.get(name, self.default)


@dataclass(slots=True)
class HttpInferRequest:
    request: InferRequest
    binary_outputs: BinaryOutputs


def header_length(value: str | None, body_size: int) -> int | None:
    """The JSON header's length from ``Inference-Header-Content-Length`` (None when absent)."""
    if value is None:
        return None
    try:
        length = int(value)
    except ValueError:
        raise ServerError.invalid_arg(f"{HEADER_LENGTH} '{value}' is not an integer") from None
    if not 0 <= length <= body_size:
        raise ServerError.invalid_arg(f"{HEADER_LENGTH} {length} is outside the request body of {body_size} bytes")
    return length


def parse_infer_body(body: bytes | bytearray, json_length: int | None, model: str, version: str) -> HttpInferRequest:
    """Raises ServerError(INVALID_ARG) for malformed JSON, bad field types or binary sizes that do not add up."""
    view = memoryview(body)
    end = len(body) if json_length is None else json_length
    document = json_codec.loads(view[:end], "inference request")
    if not isinstance(document, dict):
        raise ServerError.invalid_arg(f"the inference request for model '{model}' must be a JSON object")
    inputs, sizes = _inputs(document.get("inputs"), model)
    _attach_binary(inputs, sizes, view[end:], model, json_length is None)
    parameters = parameters_from_json(document.get("parameters"), f"the inference request for model '{model}'")
    outputs, binary = _outputs(document.get("outputs"), model)
    binary.default = parameters.get("binary_data_output") is True
    request_id = document.get("id", "")
    if not isinstance(request_id, str):
        raise ServerError.invalid_arg(f"the 'id' of the inference request for model '{model}' must be a string")
    request = InferRequest(
        model_name=model, model_version=version, id=request_id, inputs=inputs, outputs=outputs, parameters=parameters, size_bytes=len(body)
    )
    return HttpInferRequest(request, binary)


def parameters_from_json(value: Any, where: str) -> dict[str, ParameterValue]:
    """A JSON ``parameters`` object as InferParameter values (bool, int, float or string)."""
    if value is None:
        return {}
    if not isinstance(value, dict):
        raise ServerError.invalid_arg(f"the 'parameters' of {where} must be a JSON object")
    for key, item in value.items():
        if not isinstance(item, bool | int | float | str):
            raise ServerError.invalid_arg(f"parameter '{key}' of {where} must be a bool, a number or a string")
    return value


def _inputs(value: Any, model: str) -> tuple[list[InferInput], list[int | None]]:
    if not isinstance(value, list):
        raise ServerError.invalid_arg(f"the inference request for model '{model}' must have an 'inputs' array")
    inputs: list[InferInput] = []
    sizes: list[int | None] = []
    for index, entry in enumerate(value):
        item, size = _input(entry, index, model)
        inputs.append(item)
        sizes.append(size)
    return inputs, sizes


def _input(entry: Any, index: int, model: str) -> tuple[InferInput, int | None]:
    """One input and its binary_data_size (None when its data is in the JSON or absent)."""
    if not isinstance(entry, dict):
        raise ServerError.invalid_arg(f"input {index} of the inference request for model '{model}' must be a JSON object")
    name = _string(entry, "name", f"input {index}", model)
    datatype = _string(entry, "datatype", f"input '{name}'", model)
    shape = entry.get("shape")
    if not isinstance(shape, list) or not all(type(d) is int for d in shape):
        raise ServerError.invalid_arg(f"input '{name}' for model '{model}' must have a 'shape' array of integers")
    parameters = parameters_from_json(entry.get("parameters"), f"input '{name}' for model '{model}'")
    item = InferInput(name=name, datatype=datatype, shape=tuple(shape), parameters=parameters)
    if "shared_memory_region" in parameters and ("data" in entry or "binary_data_size" in parameters):
        given = " ".join(f"'{field}'" for field in ("data", "binary_data_size") if field in entry or field in parameters)
        raise ServerError.invalid_arg(
            "Input must set only one of the following fields: 'data', 'binary_data_size' in 'parameters', "
            f"'shared_memory_region' in 'parameters'. But set {given} 'shared_memory_region'"
        )
    size = parameters.pop("binary_data_size", None) if parameters else None
    if size is not None:
        if "data" in entry:
            raise ServerError.invalid_arg(f"input '{name}' for model '{model}' has both 'data' and a 'binary_data_size' parameter")
        if type(size) is not int or size < 0:
            raise ServerError.invalid_arg(f"the 'binary_data_size' of input '{name}' for model '{model}' must be an integer >= 0")
        return item, size
    if "data" in entry:
        # Decoded by the core once the request is validated and admitted.
        item.decode = functools.partial(array_from_data, entry["data"], datatype, item.shape, name, model)
    # Neither: the core answers (data in shared memory, or no data at all).
    return item, None


def _string(entry: dict[str, Any], key: str, what: str, model: str) -> str:
    value = entry.get(key)
    if not isinstance(value, str):
        raise ServerError.invalid_arg(f"{what} of the inference request for model '{model}' must have a '{key}' string")
    return value


def _attach_binary(inputs: list[InferInput], sizes: list[int | None], binary: memoryview, model: str, no_header: bool) -> None:
    """Give each binary input its slice of the bytes after the JSON; they must add up exactly."""
    offset = 0
    for item, size in zip(inputs, sizes):
        if size is None:
            continue
        if offset + size > len(binary):
            hint = f" (is the {HEADER_LENGTH} header missing?)" if no_header else ""
            raise ServerError.invalid_arg(
                f"input '{item.name}' for model '{model}' declares binary_data_size {size} but only "
                f"{len(binary) - offset} bytes of binary data remain{hint}"
            )
        item.raw = binary[offset : offset + size]
        offset += size
    if offset != len(binary):
        raise ServerError.invalid_arg(
            f"unexpected additional input data for model '{model}': {len(binary) - offset} bytes after the "
            "binary data that the inputs' binary_data_size parameters account for"
        )


def _outputs(value: Any, model: str) -> tuple[list[RequestedOutput], BinaryOutputs]:
    binary = BinaryOutputs()
    if value is None:
        return [], binary
    if not isinstance(value, list):
        raise ServerError.invalid_arg(f"the 'outputs' of the inference request for model '{model}' must be an array")
    outputs: list[RequestedOutput] = []
    for index, entry in enumerate(value):
        if not isinstance(entry, dict):
            raise ServerError.invalid_arg(f"output {index} of the inference request for model '{model}' must be a JSON object")
        name = _string(entry, "name", f"output {index}", model)
        parameters = parameters_from_json(entry.get("parameters"), f"output '{name}' for model '{model}'")
        wanted = parameters.pop("binary_data", None) if parameters else None
        if wanted is not None:
            if not isinstance(wanted, bool):
                raise ServerError.invalid_arg(f"the 'binary_data' parameter of output '{name}' for model '{model}' must be a bool")
            if wanted and "shared_memory_region" in parameters:
                raise ServerError.invalid_arg("Output can't set both 'shared_memory_region' and 'binary_data'")
            binary.explicit[name] = wanted
        outputs.append(RequestedOutput(name, parameters, class_count=_class_count(parameters)))
    return outputs, binary


def _class_count(parameters: dict[str, ParameterValue]) -> int:
    """The ``classification`` parameter: a JSON unsigned integer, 0 meaning none (Triton's HTTP rule)."""
    if "classification" not in parameters:
        return 0
    count = parameters.pop("classification")
    if type(count) is not int or count < 0:
        raise ServerError.invalid_arg("Unable to set 'classification': attempt to access JSON non-unsigned-integer as unsigned-integer")
    if count and "shared_memory_region" in parameters:
        raise ServerError.invalid_arg("Output can't set both 'shared_memory_region' and 'classification'")
    return count


def parse_raw_body(
    body: bytes | bytearray, model: str, version: str, tensors: tuple[TensorMetadata, ...], batching: bool
) -> HttpInferRequest:
    """Triton's raw form: the whole body is the only input of a one-input model, as a batch of one,
    its shape deduced from the config; every output comes back as binary.

    ``tensors`` are the model's inputs (metadata shapes). A BYTES input takes the body as its one
    element. Raises ServerError(INVALID_ARG) with Triton's messages for what it cannot deduce.
    """
    if len(tensors) != 1:
        raise ServerError.invalid_arg(
            f"{_NO_ID}Raw request must only have 1 input (found 1) to be deduced but got {len(tensors)} inputs "
            f"in '{model}' model configuration"
        )
    tensor = tensors[0]
    if tensor.datatype not in SUPPORTED_DATATYPES:
        raise bf16_unsupported(tensor.name)
    shape = _raw_shape(body, tensor, batching)
    if tensor.datatype == "BYTES":
        item = InferInput(name=tensor.name, datatype="BYTES", shape=shape, array=_one_string(body, tensor.name, model, shape))
    else:
        item = InferInput(name=tensor.name, datatype=tensor.datatype, shape=shape, raw=body)
    request = InferRequest(model_name=model, model_version=version, inputs=[item], size_bytes=len(body))
    return HttpInferRequest(request, BinaryOutputs(default=True))


# Triton's core words its raw-input refusals with the request id, which a raw request never has.
_NO_ID = "[request id: <id_unknown>] "


def _raw_shape(body: bytes | bytearray, tensor: TensorMetadata, batching: bool) -> tuple[int, ...]:
    """Triton's deduction: batch dim 1, the config dims, and at most one variable dim filled from
    the body's size (a size that does not divide is left to the byte-size check)."""
    dims = list(tensor.shape[1:] if batching else tensor.shape)
    variable = [index for index, d in enumerate(dims) if d < 0]
    if len(variable) > 1:
        raise ServerError.invalid_arg(
            f"{_NO_ID}The shape of the raw input '{tensor.name}' can not be deduced because there are more than one "
            "variable-sized dimension"
        )
    known = prod(d for d in dims if d >= 0)
    if tensor.datatype == "BYTES":
        if variable or known != 1:
            raise ServerError.invalid_arg(f"{_NO_ID}For BYTE datatype raw input '{tensor.name}', the model must have input shape [1]")
    elif variable:
        dims[variable[0]] = len(body) // known // element_size(tensor.datatype) if known else 0
    return ((1,) if batching else ()) + tuple(dims)


def _one_string(body: bytes | bytearray, name: str, model: str, shape: tuple[int, ...]) -> np.ndarray:
    """The body as the single BYTES element (ONNX Runtime string tensors hold UTF-8 text)."""
    try:
        text = body.decode("utf-8")
    except UnicodeDecodeError:
        raise ServerError.invalid_arg(
            f"input '{name}' for model '{model}' holds a BYTES element that is not valid UTF-8; ONNX Runtime string tensors hold UTF-8 text"
        ) from None
    array = np.empty(1, dtype=object)
    array[0] = text
    return array.reshape(shape)
