"""The first input state of every sequence: ``initial_state`` from the config (zeros, or a file
under ``<model>/initial_state/``), or zeros with each variable dim as 1 (Triton's default).

Blocking (reads files): runs on a load thread, after validate_sequence_config.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from server.datatypes import config_to_wire, numpy_dtype
from server.errors import ServerError
from server.proto import model_config_pb2 as mc
from server.repository.confined import inside_model_dir

# Triton's kInitialStateFolder.
INITIAL_STATE_FOLDER = "initial_state"


def read_initial_states(config: mc.ModelConfig, model_dir: Path) -> dict[str, np.ndarray]:
    """Each state input's first value for one sequence (no batch dim). Raises INVALID_ARG for a
    file outside the model directory, one that cannot be read, or one that is too short."""
    states: dict[str, np.ndarray] = {}
    for state in config.sequence_batching.state:
        wire = config_to_wire(mc.DataType.Name(state.data_type))
        if not state.initial_state:
            shape = tuple(1 if d == -1 else d for d in state.dims)
            states[state.input_name] = _zeros(wire, shape)
            continue
        initial = state.initial_state[0]
        shape = tuple(initial.dims)
        if initial.WhichOneof("state_data") == "zero_data":
            states[state.input_name] = _zeros(wire, shape)
        else:
            states[state.input_name] = _from_file(config.name, model_dir, initial.data_file, wire, shape)
    return states


def _zeros(wire: str, shape: tuple[int, ...]) -> np.ndarray:
    if wire == "BYTES":
        return np.full(shape, "", dtype=object)
    return np.zeros(shape, numpy_dtype(wire))


def _from_file(model: str, model_dir: Path, data_file: str, wire: str, shape: tuple[int, ...]) -> np.ndarray:
    path = inside_model_dir(model_dir, f"{INITIAL_STATE_FOLDER}/{data_file}", "initial_state data_file", model)
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise ServerError.invalid_arg(f"model '{model}': failed to read initial_state data_file '{data_file}': {exc.strerror}") from None
    if wire == "BYTES":
        raise ServerError.invalid_arg(f"model '{model}': an initial_state data_file for a TYPE_STRING state is not supported by ortserve")
    dtype = numpy_dtype(wire)
    expected = int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if expected > len(data):
        # Triton's words, its missing space included.
        raise ServerError.invalid_arg(
            f"initial_state setting expects {expected} bytes, but the data provided from {data_file}only has {len(data)} bytes."
        )
    return np.frombuffer(data[:expected], dtype=dtype).reshape(shape).copy()
