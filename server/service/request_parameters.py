"""The request-level parameters Triton gives meaning to, checked the way Triton checks them."""

from __future__ import annotations

from dataclasses import dataclass

from server.errors import ServerError
from server.scheduling.job import Correlation
from server.types import ParameterValue

# Parameters Triton's frontends consume; everything else is a custom parameter passed along.
_SEQUENCE_KEYS = ("sequence_id", "sequence_start", "sequence_end")
_ALLOWED_TRITON_KEYS = frozenset({"triton_enable_empty_final_response"})
# HTTP's binary tensor extension puts this on the request; it only shapes the HTTP response.
_HTTP_KEYS = frozenset({"binary_data_output"})
# Triton's limit on a string correlation ID (TRITONSERVER_InferenceRequestSetCorrelationIdString).
MAX_STRING_CORRELATION_ID = 128


@dataclass(frozen=True, slots=True)
class SchedulingParameters:
    priority: int = 0
    # Queue timeout in microseconds (0 = none).
    timeout_us: int = 0
    # sequence_id / sequence_start / sequence_end; None without a sequence_id (or with 0 / "").
    correlation: Correlation | None = None


_NO_PARAMETERS = SchedulingParameters()


def scheduling_parameters(parameters: dict[str, ParameterValue]) -> SchedulingParameters:
    """Validate reserved keys and extract priority/timeout. Raises INVALID_ARG like Triton."""
    if not parameters:
        return _NO_PARAMETERS
    if len(parameters) == 1 and parameters.get("triton_enable_empty_final_response") is True:
        return _NO_PARAMETERS  # what perf_analyzer sends with every request
    for key, value in parameters.items():
        if key.startswith("triton_") and key not in _ALLOWED_TRITON_KEYS:
            raise ServerError.invalid_arg(
                f"parameter keys starting with 'triton_' are reserved for Triton usage and should not be specified, got '{key}'"
            )
        if key == "triton_enable_empty_final_response" and not isinstance(value, bool):
            raise ServerError.invalid_arg("invalid value type for 'triton_enable_empty_final_response' parameter, expected bool")
        if key in ("sequence_start", "sequence_end") and not isinstance(value, bool):
            raise ServerError.invalid_arg(f"invalid value type for '{key}' parameter, expected bool")
        if key == "sequence_id" and (isinstance(value, (bool, float))):
            raise ServerError.invalid_arg("invalid value type for 'sequence_id' parameter, expected int64 or string")
        if key in _HTTP_KEYS and not isinstance(value, bool):
            raise ServerError.invalid_arg(f"invalid value type for '{key}' parameter, expected bool")
    return SchedulingParameters(
        priority=_non_negative_int(parameters, "priority"),
        timeout_us=_non_negative_int(parameters, "timeout"),
        correlation=_correlation(parameters),
    )


def _correlation(parameters: dict[str, ParameterValue]) -> Correlation | None:
    """The request's sequence, as Triton's frontends read it (int64 ids as unsigned)."""
    sequence_id = parameters.get("sequence_id", 0)
    if isinstance(sequence_id, str) and len(sequence_id) > MAX_STRING_CORRELATION_ID:
        raise ServerError.unsupported("string correlation ID cannot be longer than 128 characters")
    if isinstance(sequence_id, int):
        sequence_id %= 2**64
    if not sequence_id:
        return None
    assert isinstance(sequence_id, int | str)  # bool and float were refused above
    return Correlation(sequence_id, parameters.get("sequence_start") is True, parameters.get("sequence_end") is True)


def _non_negative_int(parameters: dict[str, ParameterValue], key: str) -> int:
    value = parameters.get(key, 0)
    if isinstance(value, bool) or not isinstance(value, int):
        raise ServerError.invalid_arg(f"invalid value type for '{key}' parameter, expected int64 or uint64")
    if value < 0:
        raise ServerError.invalid_arg(f"invalid value for '{key}' parameter, expected a value >= 0, got {value}")
    return value
