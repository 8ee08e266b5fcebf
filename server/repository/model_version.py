"""A model version's lifecycle record and, once loaded, the parts that serve it."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field

from server.observability.statistics import HistogramSink, ModelStats
from server.proto import model_config_pb2 as mc
from server.repository.spec import ModelSpec, spec_from_config
from server.runtime.instance import ModelInstance
from server.scheduling.base import Scheduler
from server.scheduling.factory import create_scheduler
from server.types import ModelState

log = logging.getLogger(__name__)


class ServingVersion:
    """A loaded version: completed config, request spec, instances, scheduler and statistics.

    Created on the event loop once its sessions are open.
    """

    def __init__(
        self,
        name: str,
        version: int,
        config: mc.ModelConfig,
        instances: list[ModelInstance],
        histograms: HistogramSink | None = None,
        load_duration_secs: float = 0.0,
    ) -> None:
        self.name = name
        self.version = version
        self.version_str = str(version)
        self.config = config
        self.spec: ModelSpec = spec_from_config(config)
        self.instances = instances
        self.stats = ModelStats(histograms=histograms)
        self.load_duration_secs = load_duration_secs
        self.scheduler: Scheduler = create_scheduler(config, instances, self.stats)

    async def close(self, drain_timeout_secs: float | None) -> None:
        """Drain queued and running requests (bounded), then release every session."""
        await self.scheduler.close(drain_timeout_secs)
        for instance in self.instances:
            instance.close()


@dataclass(slots=True)
class VersionRecord:
    version: int
    state: ModelState = ModelState.LOADING
    reason: str = ""
    serving: ServingVersion | None = None


@dataclass(slots=True)
class ModelRecord:
    """Everything the manager knows about one model name."""

    name: str
    versions: dict[int, VersionRecord] = field(default_factory=dict)
    # A problem with the model as a whole (bad config.pbtxt, no version directory).
    error: str = ""
    # The highest READY version, kept current so the request path does one dict lookup.
    latest_ready: ServingVersion | None = None

    def refresh_latest(self) -> None:
        ready = [r.serving for r in self.versions.values() if r.state is ModelState.READY and r.serving]
        self.latest_ready = max(ready, key=lambda s: s.version) if ready else None

    def ready_versions(self) -> list[ServingVersion]:
        return sorted(
            (r.serving for r in self.versions.values() if r.state is ModelState.READY and r.serving),
            key=lambda s: s.version,
        )
