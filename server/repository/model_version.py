"""A model version's lifecycle record and, once loaded, the parts that serve it."""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass, field
from pathlib import Path

from server.errors import ErrorCode
from server.observability.statistics import HistogramSink, ModelStats
from server.proto import model_config_pb2 as mc
from server.repository.spec import ModelSpec, spec_from_config
from server.runtime.instance import ModelInstance
from server.runtime.memory import release_freed_memory
from server.scheduling.base import Scheduler
from server.scheduling.factory import create_scheduler
from server.types import ModelState

log = logging.getLogger(__name__)


class ServingVersion:
    """A loaded version: completed config, request spec, instances, scheduler and statistics.

    Created on the event loop once its sessions are open and warmed up.
    """

    def __init__(
        self,
        name: str,
        version: int,
        config: mc.ModelConfig,
        instances: list[ModelInstance],
        histograms: HistogramSink | None = None,
        load_duration_secs: float = 0.0,
        spec: ModelSpec | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.version_str = str(version)
        self.config = config
        self.spec: ModelSpec = spec or spec_from_config(config)
        self.instances = instances
        self.stats = ModelStats(histograms=histograms)
        self.load_duration_secs = load_duration_secs
        self.scheduler: Scheduler = create_scheduler(config, instances, self.stats)

    async def close(self, drain_timeout_secs: float | None) -> None:
        """Drain queued and running requests (bounded), then release every session.

        Sessions are destroyed on a worker thread: freeing a large model takes time the event
        loop must not spend.
        """
        await self.scheduler.close(drain_timeout_secs)
        await asyncio.get_running_loop().run_in_executor(None, self._release)

    def _release(self) -> None:
        for instance in self.instances:
            instance.close()
        self.instances = []
        release_freed_memory()


@dataclass(slots=True)
class VersionRecord:
    version: int
    state: ModelState = ModelState.LOADING
    reason: str = ""
    # The code of the last failed load (None while it has not failed): a load request answers with it.
    error_code: ErrorCode | None = None
    serving: ServingVersion | None = None
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
    latest_ready: ServingVersion | None = None
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    def refresh_latest(self) -> None:
        ready = self.ready_versions()
        self.latest_ready = ready[-1] if ready else None

    def ready_versions(self) -> list[ServingVersion]:
        return sorted(
            (r.serving for r in self.versions.values() if r.state is ModelState.READY and r.serving),
            key=lambda s: s.version,
        )
