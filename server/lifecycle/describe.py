"""How the state table reads to people and to clients: the index, one log line per model, and
the error a failed load request answers with (Triton's words)."""

from __future__ import annotations

from collections.abc import Iterable

from server.errors import ServerError
from server.lifecycle.state import ModelRecord
from server.model_config.signature import format_dims
from server.types import ModelIndexEntry, ModelState


def index_entries(records: dict[str, ModelRecord], unloaded: Iterable[str], ready_only: bool) -> list[ModelIndexEntry]:
    """RepositoryIndex rows: every model on record (and ``unloaded`` repository models), by name."""
    entries: list[ModelIndexEntry] = []
    for name in sorted(records.keys() | set(unloaded)):
        record = records.get(name)
        if record is None:
            if not ready_only:
                entries.append(ModelIndexEntry(name, "", ModelState.UNAVAILABLE, "not loaded"))
            continue
        if record.error and not ready_only:
            entries.append(ModelIndexEntry(name, "", ModelState.UNAVAILABLE, record.error))
        for version in sorted(record.versions):
            entry = record.versions[version]
            if not ready_only or entry.state is ModelState.READY:
                entries.append(ModelIndexEntry(name, str(version), entry.state, entry.reason))
    return entries


def describe_model(record: ModelRecord) -> str:
    """The one log line per model: versions and states, tensors, instances."""
    if record.error:
        return f"model '{record.name}': UNAVAILABLE: {record.error}"
    states = ", ".join(f"{v} {e.state.value}" + (f" ({e.reason})" if e.reason else "") for v, e in sorted(record.versions.items()))
    line = f"model '{record.name}': versions [{states}]"
    serving = record.latest_ready
    if serving is not None:
        spec = serving.spec
        inputs = ", ".join(f"{t.name} {t.datatype} {format_dims(spec.wire_shape(t))}" for t in spec.inputs.values())
        outputs = ", ".join(f"{t.name} {t.datatype} {format_dims(spec.wire_shape(t))}" for t in spec.outputs.values())
        devices = serving.devices()
        line += f"; inputs: {inputs}; outputs: {outputs}"
        line += f"; instances: {len(devices)} ({', '.join(devices)}); max_batch_size {spec.max_batch_size}"
    return line


def load_failure(record: ModelRecord) -> None:
    """Raise what a load request answers when the model or any version failed, in Triton's words:
    "load failed for model 'm': version 1 is at UNAVAILABLE state: Invalid argument: ...;".

    The code is the failure's own (a bad config is INVALID_ARG, an ortserve fault INTERNAL).
    """
    if record.error:
        raise ServerError(record.error_code, f"load failed for model '{record.name}': {record.error}\n")
    failed = [(v, e) for v, e in sorted(record.versions.items()) if e.error_code is not None]
    if failed:
        detail = "".join(f"version {v} is at {e.state.value} state: {e.reason};" for v, e in failed)
        raise ServerError(failed[0][1].error_code, f"load failed for model '{record.name}': {detail}\n")  # type: ignore[arg-type]
