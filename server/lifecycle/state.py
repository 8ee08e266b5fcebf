"""The state table: what the manager knows about each model name and each of its versions."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from pathlib import Path

from server.errors import ErrorCode
from server.lifecycle.servable import Servable
from server.types import ModelState


@dataclass(slots=True)
class VersionRecord:
    version: int
    state: ModelState = ModelState.LOADING
    reason: str = ""
    # The code of the last failed load (None while it has not failed): a load request answers with it.
    error_code: ErrorCode | None = None
    serving: Servable | None = None
    # (model-level digest, version digest) of the files ``serving`` was loaded from.
    loaded_from: tuple[str, str] | None = None


@dataclass(slots=True)
class ModelRecord:
    """Everything the manager knows about one model name."""

    name: str
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    # A problem with the model as a whole (bad config.pbtxt, no version directory, not found).
    error: str = ""
    error_code: ErrorCode = ErrorCode.INVALID_ARG
    # Whether the model should be loaded now (explicit unload clears it).
    wanted: bool = True
    # Fingerprint of the files at the last load attempt; polling retries only when it changes.
    attempted: object = None
    # Private directory holding files that a load request supplied.
    private_dir: Path | None = None
    # The highest READY version, kept current so the request path does one dict lookup.
    latest_ready: Servable | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def refresh_latest(self) -> None:
        ready = self.ready_versions()
        self.latest_ready = ready[-1] if ready else None

    def ready_versions(self) -> list[Servable]:
        return sorted(
            (r.serving for r in self.versions.values() if r.state is ModelState.READY and r.serving),
            key=lambda s: s.version,
        )
