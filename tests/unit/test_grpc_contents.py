"""Typed contents (InferTensorContents) become arrays of the input's datatype, or INVALID_ARG.

The range check must not depend on how protobuf hands the values over: protobuf 7's repeated
fields convert themselves to numpy, where a plain cast would wrap 300 to 44 in an INT8 input.
"""

from __future__ import annotations

import numpy as np
import pytest

from server.errors import ServerError
from server.frontends.grpc.convert import _array_from_contents
from server.proto import grpc_service_pb2 as pb


def _tensor(datatype: str, field: str, values: list) -> pb.ModelInferRequest.InferInputTensor:
    contents = pb.InferTensorContents(**{field: values})
    return pb.ModelInferRequest.InferInputTensor(name="I", datatype=datatype, shape=[len(values)], contents=contents)


@pytest.mark.parametrize(
    ("datatype", "field", "values"),
    [
        ("INT8", "int_contents", [127, -128]),
        ("INT16", "int_contents", [32767, -32768]),
        ("INT32", "int_contents", [2**31 - 1, -(2**31)]),
        ("UINT8", "uint_contents", [255, 0]),
        ("UINT16", "uint_contents", [65535, 0]),
        ("UINT32", "uint_contents", [2**32 - 1, 0]),
        ("INT64", "int64_contents", [2**63 - 1, -(2**63)]),
        ("UINT64", "uint64_contents", [2**64 - 1, 0]),
        ("FP32", "fp32_contents", [1.5, -2.25]),
        ("FP64", "fp64_contents", [1e-300, 2.0]),
        ("BOOL", "bool_contents", [True, False]),
    ],
)
def test_values_at_the_bounds_arrive_exactly(datatype: str, field: str, values: list) -> None:
    array = _array_from_contents(_tensor(datatype, field, values), "m")
    assert array.dtype == np.dtype(datatype.lower().replace("fp", "float"))
    assert array.tolist() == values


@pytest.mark.parametrize(
    ("datatype", "field", "values"),
    [
        ("INT8", "int_contents", [300, -1]),
        ("INT8", "int_contents", [0, -129]),
        ("INT16", "int_contents", [32768]),
        ("UINT8", "uint_contents", [256]),
        ("UINT16", "uint_contents", [65536]),
    ],
)
def test_values_out_of_range_are_refused(datatype: str, field: str, values: list) -> None:
    with pytest.raises(ServerError) as caught:
        _array_from_contents(_tensor(datatype, field, values), "m")
    assert str(caught.value) == f"input 'I' for model 'm': a value in {field} is out of range for datatype '{datatype}'"
