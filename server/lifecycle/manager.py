"""The model manager: what serves, in which state, and the lookups every request makes.

Scanning and fingerprints are the repository's (repository/scan.py), which versions to touch is
a pure decision (swap_policy.py), loading is a servable kind's (lifecycle/kinds.py, on load
threads); this class acts and records state. All methods run on the event loop; every file
read or write runs on a load thread.

Availability rule: a new or changed version is loaded and warmed up while the old one keeps
serving; requests switch to it only once it is READY; the old one then drains (bounded by
--version-drain-timeout-secs) and is unloaded. A failed load leaves whatever served before
still serving, with the reason on record.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable
from pathlib import Path
from typing import Any

from server.client_strings import MAX_MODEL_NAME_BYTES, check_client_string, check_model_name
from server.errors import ErrorCode, ServerError
from server.lifecycle.dependencies import DependencyGraph, circular_dependency_message
from server.lifecycle.describe import describe_model, index_entries, load_failure
from server.lifecycle.kinds import Kinds
from server.lifecycle.load_threads import DaemonThreadPool
from server.lifecycle.planning import file_config, planned_cpu_instances
from server.lifecycle.servable import Servable
from server.lifecycle.state import ModelRecord
from server.lifecycle.swap_policy import VersionSnapshot, plan_swap, retire_stale
from server.lifecycle.versions import VersionLoader
from server.model_config import version_policy
from server.model_config.config_file import ignored_fields
from server.model_config.ensemble_config import ensemble_members
from server.proto import model_config_pb2 as mc
from server.repository.fingerprint import FileHasher, ModelFingerprint
from server.repository.layout import ModelSource, read_model, scan_repositories
from server.repository.request_files import PrivateModelFiles
from server.repository.scan import Scan, scan_models
from server.runtime.loader import LoadOptions
from server.runtime.threads import ThreadPlan, apply_thread_plan, available_cores, plan_threads
from server.scheduling.response_cache import ResponseCache
from server.settings import ModelControlMode, Settings
from server.types import ModelIndexEntry, ModelState

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, settings: Settings, response_cache: ResponseCache | None = None) -> None:
        self._settings = settings
        self._models: dict[str, ModelRecord] = {}
        self._load_pool = DaemonThreadPool(settings.model_load_thread_count, "model-load")
        options = LoadOptions(settings.default_max_batch_size, ThreadPlan(False, 1), model_key=settings.security.model_key)
        self._kinds = Kinds(options, self, response_cache)
        # Ensembles and their members: members load first, unloading one reaches its ensembles.
        self._dependencies = DependencyGraph()
        self._versions = VersionLoader(self._load_pool, settings.histogram_latencies, settings.version_drain_timeout_secs)
        self._hasher = FileHasher()
        self._private_files = PrivateModelFiles()

    async def _blocking(self, function: Any, *args: Any) -> Any:
        return await asyncio.get_running_loop().run_in_executor(self._load_pool, function, *args)

    # ---- startup and polling ---------------------------------------------------------------

    async def load_initial(self) -> None:
        """Load what the control mode says to load at startup; failures are recorded, not raised.

        Raises ServerError(ALREADY_EXISTS) if two repositories hold the same model name.
        """
        scanned = await self._scan(self._explicit_startup_names())
        names = self._startup_names(scanned)
        planned = sum(await asyncio.gather(*(self._blocking(planned_cpu_instances, scanned[n][0]) for n in names if n in scanned)))
        self._plan_threads(planned)
        for name in names - scanned.keys():
            record = self._models[name] = ModelRecord(name)
            record.error = f"model '{name}' was not found in any model repository"
            log.error("%s", record.error)
        await asyncio.gather(*(self._apply(name, *scanned[name]) for name in names & scanned.keys()))

    def _plan_threads(self, planned_instances: int) -> None:
        """Decide, once and before any session opens, how ONNX Runtime's threads are shared."""
        plan = apply_thread_plan(plan_threads(self._settings.ort_threads, available_cores()))
        self._kinds.set_load_options(LoadOptions(self._settings.default_max_batch_size, plan, model_key=self._settings.security.model_key))
        log.info("%s", plan.describe(planned_instances, available_cores()))

    def _explicit_startup_names(self) -> set[str] | None:
        """The only models explicit mode loads at startup (None: every model)."""
        if self._settings.model_control_mode is not ModelControlMode.EXPLICIT or "*" in self._settings.load_models:
            return None
        return set(self._settings.load_models)

    def _startup_names(self, scanned: Scan) -> set[str]:
        explicit = self._explicit_startup_names()
        return set(scanned) if explicit is None else explicit

    async def poll_forever(self, interval_secs: float) -> None:
        """Rescan every ``interval_secs`` and act on changes, until cancelled.

        Each finished cycle logs "repository poll N finished" at DEBUG (--log-verbose 1): the
        sign that a change made before cycle N started has been seen, or that none was made.
        """
        cycle = 0
        while True:
            await asyncio.sleep(interval_secs)
            cycle += 1
            try:
                await self.poll_once()
            except Exception:  # a bad scan must not end polling
                log.exception("repository poll failed")
            log.debug("repository poll %d finished", cycle)

    async def poll_once(self) -> None:
        """Load new and changed models, unload removed ones. A model whose last load failed is
        tried again only when its files change."""
        scanned = await self._scan()
        work: list[Awaitable[object]] = [
            self._apply(name, source, fingerprint)
            for name, (source, fingerprint) in scanned.items()
            if name not in self._models or fingerprint is None or self._models[name].attempted != fingerprint
        ]
        work += [self._unload(name, "removed from the model repository", forget=True) for name in self._models.keys() - scanned.keys()]
        await asyncio.gather(*work)

    async def _scan(self, names: set[str] | None = None) -> Scan:
        repositories = list(self._settings.model_repositories)
        result: Scan = await self._blocking(scan_models, repositories, self._settings.model_name, self._hasher, names)
        return result

    # ---- explicit control --------------------------------------------------------------------

    async def load(self, name: str, config_override: mc.ModelConfig | None, files: dict[str, bytes]) -> None:
        """Load or reload ``name``; returns when it serves. Raises ServerError with the reason."""
        check_model_name(name)
        private_dir: Path | None = None
        if files:
            private_dir = await self._blocking(self._private_files.write, name, files)
            versions = (await self._blocking(read_model, private_dir)).versions
            source, fingerprint = ModelSource(name=name, directory=private_dir, versions=versions), None
        else:
            scanned = await self._scan({name})
            if name not in scanned:
                raise ServerError.not_found(
                    f"failed to load '{name}', failed to poll from model repository: model not found in any model repository"
                )
            source, fingerprint = scanned[name]
        record = await self._apply(name, source, fingerprint, config_override, force=True, private_dir=private_dir)
        load_failure(record)

    async def unload(self, name: str, unload_dependents: bool = False) -> None:
        """Drain and unload every version of ``name``; the ensembles that use it are unloaded too
        with ``unload_dependents``, else they become UNAVAILABLE until it is back. Raises NOT_FOUND
        for an unknown name."""
        check_model_name(name)
        if name not in self._models:
            scanned = await self._scan({name})
            if name not in scanned:
                raise ServerError.not_found(f"failed to unload '{name}': model not found")
            return
        await self._unload(name, "unloaded", forget=False, unload_dependents=unload_dependents)

    # ---- the one place that changes what serves ----------------------------------------------

    async def _apply(
        self,
        name: str,
        source: ModelSource,
        fingerprint: ModelFingerprint | None,
        config_override: mc.ModelConfig | None = None,
        force: bool = False,
        private_dir: Path | None = None,
    ) -> ModelRecord:
        record = self._models.setdefault(name, ModelRecord(name))
        async with record.lock:
            loaded_any = False
            try:
                loaded_any = await self._apply_locked(record, source, fingerprint, config_override, force)
            finally:
                self._settle_private_dir(record, private_dir, in_use=loaded_any)
        if loaded_any:
            await self._reload_dependents(name)
        return record

    async def _apply_locked(
        self, record: ModelRecord, source: ModelSource, fingerprint: ModelFingerprint | None, override: mc.ModelConfig | None, force: bool
    ) -> bool:
        """Returns whether any version was (re)loaded from ``source``."""
        record.wanted, record.attempted = True, fingerprint
        try:
            config = override if override is not None else await self._blocking(file_config, source)
            selected = version_policy.select_versions(config.version_policy, source.versions)
            kind = self._kinds.for_config(config)
        except ServerError as error:
            self._model_failed(record, error.message, error.code)
            return False
        self._dependencies.set_members(record.name, set(ensemble_members(config)) if kind is self._kinds.ensemble else set())
        if problem := await self._prepare_members(record.name):
            self._model_failed(record, problem)
            return False
        if not selected:
            policy = version_policy.describe(config.version_policy)
            self._model_failed(
                record,
                f"at least one version must be available under the version policy of model '{record.name}' "
                f"({policy}; version directories: {list(source.versions)})",
            )
            return False
        record.error = ""
        _adopt_source_names(config, source, record.name)
        snapshots = {v: VersionSnapshot(e.state, e.serving is not None, e.loaded_from) for v, e in record.versions.items()}
        digests = {v: (fingerprint.model_files, fingerprint.versions[v]) for v in selected} if fingerprint else None
        plan = plan_swap(snapshots, selected, digests, force)
        # A config from a load request is the network's: its warmup is held to bounds (runtime/warmup.py).
        loads = (self._versions.load(record, kind, source, config, v, digests, override is not None) for v in plan.load)
        loaded = await asyncio.gather(*loads)
        after = {v: VersionSnapshot(e.state, e.serving is not None, e.loaded_from) for v, e in record.versions.items()}
        if plan.stale and retire_stale(after, selected):
            await asyncio.gather(*(self._versions.retire(record, v, keep_entry=False) for v in plan.stale))
        record.refresh_latest()
        log.info("%s", describe_model(record))
        return any(loaded)

    def _model_failed(self, record: ModelRecord, reason: str, code: ErrorCode = ErrorCode.INVALID_ARG) -> None:
        record.error, record.error_code = reason, code
        log.error("model '%s' failed: %s", record.name, reason)

    def _settle_private_dir(self, record: ModelRecord, private_dir: Path | None, in_use: bool) -> None:
        """Request-supplied files stay while versions loaded from them serve; the rest go."""
        if not in_use:
            if private_dir is not None:
                self._private_files.discard(private_dir)
            return
        if record.private_dir is not None and record.private_dir != private_dir:
            self._private_files.discard(record.private_dir)
        record.private_dir = private_dir

    async def _unload(self, name: str, reason: str, forget: bool, unload_dependents: bool = False) -> None:
        await self._unload_one(name, reason, forget)
        await self._release_dependents(name, unload_dependents)

    async def _unload_one(self, name: str, reason: str, forget: bool) -> None:
        record = self._models[name]
        async with record.lock:
            record.wanted, record.error, record.attempted = False, "", None
            await asyncio.gather(*(self._versions.retire(record, v, keep_entry=not forget, reason=reason) for v in list(record.versions)))
            record.refresh_latest()
            if record.private_dir is not None:
                self._private_files.discard(record.private_dir)
                record.private_dir = None
            if forget:
                del self._models[name]
                self._dependencies.forget(name)
            log.info("model '%s': %s", name, reason)

    # ---- ensembles and their members -----------------------------------------------------------

    async def _prepare_members(self, ensemble: str) -> str:
        """Load the members ``ensemble`` needs that do not serve yet (members load before their
        ensemble). Returns Triton's message for a dependency cycle, else ""."""
        cycle = self._dependencies.cycle_through(ensemble)
        if cycle is not None:
            return circular_dependency_message(cycle)
        for member in sorted(self._dependencies.members(ensemble)):
            record = self._models.get(member)
            if record is not None and (record.lock.locked() or record.latest_ready is not None):
                async with record.lock:  # a load in progress (at startup, every model's) ends first
                    continue
            scanned = await self._scan({member})
            if member in scanned:
                await self._apply(member, *scanned[member])
        # A member read just now may lead back here: every model of the cycle says so (Triton's rule).
        cycle = self._dependencies.cycle_through(ensemble)
        return "" if cycle is None else circular_dependency_message(cycle)

    async def _reload_dependents(self, member: str) -> None:
        """A member (re)loaded: the ensembles that use it reload against its new config (those
        loading now, which wait for it, see it anyway)."""
        for name in self._dependencies.dependents(member):
            record = self._models.get(name)
            if record is None or not record.wanted or record.lock.locked():
                continue
            scanned = await self._scan({name})
            if name in scanned:
                await self._apply(name, *scanned[name], force=True)

    async def _release_dependents(self, member: str, unload_dependents: bool) -> None:
        """A member went away: its ensembles are unloaded too, or made UNAVAILABLE (Triton's words)
        until it is loaded again."""
        for name in self._dependencies.dependents(member):
            record = self._models.get(name)
            if record is None or not record.wanted:
                continue
            if unload_dependents:
                await self._unload(name, "unloaded", forget=False, unload_dependents=True)
                continue
            reason = f"ensemble '{name}' depends on '{member}' which has no loaded version."
            async with record.lock:
                await asyncio.gather(*(self._versions.retire(record, v, keep_entry=True, reason=reason) for v in list(record.versions)))
                record.refresh_latest()
            log.info("model '%s': %s", name, reason)
            await self._release_dependents(name, unload_dependents=False)

    def load_error(self, name: str) -> str:
        """Why ``name`` failed to load, as its index entry says ("" when it did not fail)."""
        record = self._models.get(name)
        if record is None:
            return ""
        if record.error:
            return record.error
        return next((entry.reason for entry in record.versions.values() if entry.error_code is not None), "")

    # ---- lookups (request path) ----------------------------------------------------------

    def get(self, name: str, version: str) -> Servable:
        """The version a request addresses; "" means the highest READY version.

        Raises ServerError with Triton's codes and wording (NOT_FOUND, UNAVAILABLE, INVALID_ARG).
        """
        record = self._models.get(name)
        if record is None:
            check_client_string("model name", name, MAX_MODEL_NAME_BYTES)  # before the name is echoed
            raise ServerError.not_found(f"Request for unknown model: '{name}' is not found")
        if not version:
            if record.latest_ready is None:
                raise ServerError.not_found(f"Request for unknown model: '{name}' has no available versions")
            return record.latest_ready
        number = version_policy.parse_version(version)
        entry = record.versions.get(number)
        if entry is None:
            raise ServerError.not_found(f"Request for unknown model: '{name}' version {number} is not found")
        if entry.state is not ModelState.READY or entry.serving is None:
            raise ServerError.unavailable(f"Request for unknown model: '{name}' version {number} is not at ready state")
        return entry.serving

    def ready_versions(self, name: str) -> list[Servable]:
        record = self._models.get(name)
        return record.ready_versions() if record else []

    def all_serving(self) -> list[Servable]:
        return [s for record in self._models.values() for s in record.ready_versions()]

    async def index(self, ready_only: bool) -> list[ModelIndexEntry]:
        """RepositoryIndex; in explicit mode it also lists repository models nobody has loaded
        (found by a scan on a load thread)."""
        unloaded: set[str] = set()
        if self._settings.model_control_mode is ModelControlMode.EXPLICIT and not ready_only:
            repositories = list(self._settings.model_repositories)
            try:
                unloaded = set(await self._blocking(scan_repositories, repositories, self._settings.model_name))
            except Exception:  # an index must answer even while the repository is in flux
                log.warning("repository index: the repositories could not be scanned", exc_info=True)
        return index_entries(self._models, unloaded, ready_only)

    def all_ready(self) -> bool:
        """Strict readiness: every model that should be loaded can serve.

        A model reloading (or whose reload failed) while an older load serves still counts as
        ready; a model with nothing serving — loading for the first time, or failed — does not.
        """
        return all(record.latest_ready is not None for record in self._models.values() if record.wanted)

    # ---- shutdown ------------------------------------------------------------------------

    async def close(self, drain_timeout_secs: float | None) -> None:
        """Drain and unload every version (bounded by the timeout), then stop the load threads."""
        serving = self.all_serving()
        for record in self._models.values():
            for entry in record.versions.values():
                if entry.state is ModelState.READY:
                    entry.state = ModelState.UNLOADING
            record.refresh_latest()
        await asyncio.gather(*(s.close(drain_timeout_secs) for s in serving), self._versions.retiring(drain_timeout_secs))
        self._load_pool.shutdown(wait=False, cancel_futures=True)
        self._private_files.close()


def _adopt_source_names(config: mc.ModelConfig, source: ModelSource, name: str) -> None:
    """What the repository layout says about the config: its served name and model file."""
    if config.name and source.directory.name != name:
        # The model was renamed by --model-name (KServe passes the InferenceService name).
        config.name = name
    if source.model_filename and not config.default_model_filename:
        config.default_model_filename = source.model_filename
    if unused := ignored_fields(config):
        log.info("model '%s': config fields parsed but not acted on: %s", name, ", ".join(unused))
