"""The ONNX kind: a version served by ONNX Runtime sessions (one per instance) behind the
dynamic batcher."""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from pathlib import Path

import numpy as np

from server.model_config.autocomplete import ONNX_BACKEND, ONNX_PLATFORM
from server.model_config.spec import ModelSpec, spec_from_config
from server.observability.statistics import HistogramSink, ModelStats
from server.proto import model_config_pb2 as mc
from server.runtime.instance import ModelInstance
from server.runtime.loader import LoadedVersion, LoadOptions, load_version
from server.runtime.memory import release_freed_memory
from server.scheduling.base import Scheduler
from server.scheduling.factory import create_scheduler
from server.scheduling.response_cache import ResponseCache

log = logging.getLogger(__name__)


class OnnxServable:
    """A loaded ONNX version: completed config, request spec, instances, scheduler, statistics.

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
        initial_states: dict[str, np.ndarray] | None = None,
        response_cache: ResponseCache | None = None,
    ) -> None:
        self.name = name
        self.version = version
        self.version_str = str(version)
        self.config = config
        self.spec: ModelSpec = spec or spec_from_config(config)
        self.instances = instances
        self.stats = ModelStats(histograms=histograms)
        self.load_duration_secs = load_duration_secs
        self.scheduler: Scheduler = create_scheduler(config, instances, self.stats, initial_states, response_cache, version)

    def devices(self) -> list[str]:
        return [instance.device for instance in self.instances]

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


class OnnxKind:
    platform = ONNX_PLATFORM
    backend = ONNX_BACKEND

    def __init__(self, options: LoadOptions, response_cache: ResponseCache | None = None) -> None:
        # Replaced by the manager once it knows how many CPU instances the repository plans.
        self.options = options
        # The server's response cache (--cache-config), for the versions whose config enables it.
        self.response_cache = response_cache

    def load(
        self, config: mc.ModelConfig, name: str, version: int, version_dir: Path, model_dir: Path, network_config: bool
    ) -> LoadedVersion:
        options = dataclasses.replace(self.options, network_config=network_config)
        return load_version(config, name, version, version_dir, model_dir, options)

    def serve(
        self, loaded: LoadedVersion, name: str, version: int, histograms: HistogramSink | None, load_duration_secs: float
    ) -> OnnxServable:
        config = loaded.config
        if config.response_cache.enable and self.response_cache is None:
            log.info("model '%s': response_cache is enabled in its config, but the server has no cache (--cache-config local,size=N)", name)
        return OnnxServable(
            name, version, config, loaded.instances, histograms, load_duration_secs, loaded.spec, loaded.initial_states, self.response_cache
        )

    def discard(self, loaded: LoadedVersion) -> None:
        for instance in loaded.instances:
            instance.close()
