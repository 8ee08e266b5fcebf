"""The ensemble kind: ``platform: "ensemble"``, a pipeline of other models' versions.

Loading one reads no file and opens no session: it completes and validates the config (Triton's
rules, ensemble_config.py) against its members' completed configs, which the manager has loaded
first. Serving one runs each request's steps on the members' own schedulers
(scheduling/ensemble_pipeline.py), looking each member up per step.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from server.errors import ErrorCode, ServerError
from server.lifecycle.servable import Servable
from server.model_config.autocomplete import complete_core_fields
from server.model_config.ensemble_config import (
    ENSEMBLE_PLATFORM,
    ensemble_members,
    ensemble_plan,
    validate_ensemble_config,
    validate_ensemble_members,
)
from server.model_config.io_validation import validate_io_config
from server.model_config.spec import ModelSpec, spec_from_config
from server.observability.statistics import HistogramSink, ModelStats
from server.proto import model_config_pb2 as mc
from server.scheduling.base import Scheduler
from server.scheduling.ensemble_pipeline import EnsembleScheduler, Member


class MemberDirectory(Protocol):
    """Where an ensemble finds its members (the manager)."""

    def get(self, name: str, version: str) -> Servable:
        """The READY version a request would reach; raises the lookup's ServerError."""
        ...

    def load_error(self, name: str) -> str:
        """Why ``name`` failed to load ("" when it did not fail)."""
        ...


@dataclass(slots=True)
class LoadedEnsemble:
    config: mc.ModelConfig


class EnsembleServable:
    """A READY ensemble version: its config, spec and statistics, and its pipeline scheduler."""

    def __init__(
        self, name: str, version: int, config: mc.ModelConfig, members: MemberDirectory, histograms: HistogramSink | None, load_secs: float
    ) -> None:
        self.name = name
        self.version = version
        self.version_str = str(version)
        self.config = config
        self.spec: ModelSpec = spec_from_config(config)
        self.stats = ModelStats(histograms=histograms)
        self.load_duration_secs = load_secs
        lookup = members.get

        def member(model: str, version: str) -> Member:
            return lookup(model, version)

        self.scheduler: Scheduler = EnsembleScheduler(name, self.spec, ensemble_plan(config), member, self.stats)

    def devices(self) -> list[str]:
        return []

    async def close(self, drain_timeout_secs: float | None) -> None:
        await self.scheduler.close(drain_timeout_secs)


class EnsembleKind:
    platform = ENSEMBLE_PLATFORM
    backend = ""

    def __init__(self, members: MemberDirectory) -> None:
        self._members = members

    def load(
        self, config: mc.ModelConfig, name: str, version: int, version_dir: Path, model_dir: Path, network_config: bool
    ) -> LoadedEnsemble:
        """On a load thread: Triton's ensemble checks, then the members' completed configs (read,
        never changed, from the manager's table). Raises INVALID_ARG naming what is wrong."""
        completed = complete_core_fields(config, name, self.platform, self.backend, default_filename="")
        validate_io_config(completed)
        validate_ensemble_config(completed)
        member_configs = {member: self._member_config(name, member, versions) for member, versions in ensemble_members(completed).items()}
        validate_ensemble_members(completed, member_configs)
        return LoadedEnsemble(completed)

    def _member_config(self, ensemble: str, member: str, versions: set[int]) -> mc.ModelConfig:
        """The completed config of the member's version the steps ask for, with Triton's
        dependency messages when there is none."""
        config: mc.ModelConfig | None = None
        for version in sorted(versions):
            try:
                config = self._members.get(member, "" if version < 0 else str(version)).config
            except ServerError as error:
                raise self._dependency_error(ensemble, member, version, error) from None
        assert config is not None  # a member is listed only with the versions its steps name
        return config

    def _dependency_error(self, ensemble: str, member: str, version: int, error: ServerError) -> ServerError:
        failure = self._members.load_error(member)
        if failure:
            return ServerError.invalid_arg(
                f"ensemble '{ensemble}' depends on '{member}' which has no loaded version. "
                f"Model '{member}' loading failed with error: {failure}"
            )
        if error.code is ErrorCode.NOT_FOUND and error.message.endswith(f"'{member}' is not found"):  # no such model at all
            return ServerError.invalid_arg(f"ensemble {ensemble} contains models that are not available or ambiguous: {member}")
        if version >= 0:
            return ServerError.invalid_arg(f"ensemble '{ensemble}' depends on '{member}' whose required version {version} is not loaded.")
        return ServerError.invalid_arg(f"ensemble '{ensemble}' depends on '{member}' which has no loaded version.")

    def serve(
        self, loaded: LoadedEnsemble, name: str, version: int, histograms: HistogramSink | None, load_secs: float
    ) -> EnsembleServable:
        return EnsembleServable(name, version, loaded.config, self._members, histograms, load_secs)

    def discard(self, loaded: LoadedEnsemble) -> None:
        """Nothing to free: an ensemble holds no sessions."""
