"""The model manager: what is loaded, in which state, and the lookups every request makes.

Scanning, fingerprints and version selection are pure reads (layout.py, fingerprint.py,
version_policy.py); loading is the runtime's job (runtime/loader.py, on load threads); this
class decides and records state. All methods run on the event loop.

Availability rule: a new or changed version is loaded and warmed up while the old one keeps
serving; requests switch to it only once it is READY; the old one then drains and is unloaded.
A failed load leaves whatever served before still serving, with the reason on record.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import time
from pathlib import Path

from server.client_strings import MAX_MODEL_NAME_BYTES, check_client_string, check_model_name
from server.errors import ErrorCode, ServerError
from server.observability.histograms import VersionHistograms
from server.proto import model_config_pb2 as mc
from server.repository import version_policy
from server.repository.config_file import ignored_fields, read_config_file
from server.repository.fingerprint import FileHasher, ModelFingerprint
from server.repository.layout import ModelSource, read_model, scan_repositories
from server.repository.load_threads import DaemonThreadPool
from server.repository.model_version import ModelRecord, ServingVersion, VersionRecord
from server.repository.request_files import PrivateModelFiles
from server.repository.signature import format_dims
from server.runtime.loader import LoadOptions, load_version
from server.runtime.threads import available_cores, default_intra_op_threads
from server.settings import ModelControlMode, Settings
from server.types import ModelIndexEntry, ModelState

log = logging.getLogger(__name__)

Scan = dict[str, tuple[ModelSource, ModelFingerprint | None]]


class ModelManager:
    def __init__(self, settings: Settings) -> None:
        self._settings = settings
        self._models: dict[str, ModelRecord] = {}
        self._load_pool = DaemonThreadPool(settings.model_load_thread_count, "model-load")
        self._load_options = LoadOptions(settings.default_max_batch_size, 1, model_key=settings.security.model_key)
        self._hasher = FileHasher()
        self._private_files = PrivateModelFiles()
        self._retiring: set[asyncio.Task[None]] = set()

    # ---- startup and polling ---------------------------------------------------------------

    async def load_initial(self) -> None:
        """Load what the control mode says to load at startup; failures are recorded, not raised.

        Raises DuplicateModelError if two repositories hold the same model name.
        """
        scanned = await self._scan(self._explicit_startup_names())
        names = self._startup_names(scanned)
        planned = sum(_planned_cpu_instances(scanned[n][0]) for n in names if n in scanned)
        threads = default_intra_op_threads(planned, available_cores())
        self._load_options = LoadOptions(self._settings.default_max_batch_size, threads, model_key=self._settings.security.model_key)
        log.info("%d CPU instance(s) planned on %d core(s): %d intra-op thread(s) each by default", planned, available_cores(), threads)
        for name in names - scanned.keys():
            record = self._models[name] = ModelRecord(name)
            record.error = f"model '{name}' was not found in any model repository"
            log.error("%s", record.error)
        await asyncio.gather(*(self._apply(name, *scanned[name]) for name in names & scanned.keys()))

    def _explicit_startup_names(self) -> set[str] | None:
        """The only models explicit mode loads at startup (None: every model)."""
        if self._settings.model_control_mode is not ModelControlMode.EXPLICIT or "*" in self._settings.load_models:
            return None
        return set(self._settings.load_models)

    def _startup_names(self, scanned: Scan) -> set[str]:
        if self._settings.model_control_mode is not ModelControlMode.EXPLICIT:
            return set(scanned)
        if "*" in self._settings.load_models:
            return set(scanned)
        return set(self._settings.load_models)

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
        work = [
            self._apply(name, source, fingerprint)
            for name, (source, fingerprint) in scanned.items()
            if name not in self._models or fingerprint is None or self._models[name].attempted != fingerprint
        ]
        work += [self._unload(name, "removed from the model repository", forget=True) for name in self._models.keys() - scanned.keys()]
        await asyncio.gather(*work)

    async def _scan(self, names: set[str] | None = None) -> Scan:
        """The models on disk with their fingerprints; only ``names`` when given (hashing every
        model of a large repository to load one of them would read it all)."""
        return await asyncio.get_running_loop().run_in_executor(self._load_pool, self._scan_blocking, names)

    def _scan_blocking(self, names: set[str] | None) -> Scan:
        sources = scan_repositories(list(self._settings.model_repositories), self._settings.model_name)
        scanned: Scan = {}
        for name, source in sources.items():
            if names is not None and name not in names:
                continue
            try:
                scanned[name] = (source, self._hasher.fingerprint(source))
            except OSError as exc:  # files changing under us: decide on the next poll
                log.warning("model '%s': could not read its files (%s); will look again", name, exc)
                scanned[name] = (source, None)
        return scanned

    # ---- explicit control --------------------------------------------------------------------

    async def load(self, name: str, config_override: mc.ModelConfig | None, files: dict[str, bytes]) -> None:
        """Load or reload ``name``; returns when it serves. Raises ServerError with the reason."""
        check_model_name(name)
        if files:
            directory = self._private_files.write(name, files)
            source = read_model(directory)
            source = ModelSource(name=name, directory=directory, versions=source.versions)
            fingerprint = None
        else:
            scanned = await self._scan({name})
            if name not in scanned:
                raise ServerError.not_found(
                    f"failed to load '{name}', failed to poll from model repository: model not found in any model repository"
                )
            source, fingerprint = scanned[name]
        record = await self._apply(name, source, fingerprint, config_override, force=True, private_dir=directory if files else None)
        load_failure(record)

    async def unload(self, name: str) -> None:
        """Drain and unload every version of ``name``. Raises NOT_FOUND for an unknown name."""
        check_model_name(name)
        if name not in self._models:
            scanned = await self._scan({name})
            if name not in scanned:
                raise ServerError.not_found(f"failed to unload '{name}': model not found")
            return
        await self._unload(name, "unloaded", forget=False)

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
        return record

    async def _apply_locked(
        self,
        record: ModelRecord,
        source: ModelSource,
        fingerprint: ModelFingerprint | None,
        config_override: mc.ModelConfig | None,
        force: bool,
    ) -> bool:
        """Returns whether any version was (re)loaded from ``source``."""
        name = record.name
        record.wanted, record.attempted = True, fingerprint
        try:
            config = config_override if config_override is not None else _file_config(source)
            versions = version_policy.select_versions(config.version_policy, source.versions)
        except ServerError as error:
            self._model_failed(record, error.message, error.code)
            return False
        if not versions:
            self._model_failed(
                record,
                f"at least one version must be available under the version policy of model '{name}' "
                f"({version_policy.describe(config.version_policy)}; version directories: {list(source.versions)})",
            )
            return False
        record.error = ""
        if config.name and source.directory.name != name:
            # The model was renamed by --model-name (KServe passes the InferenceService name).
            config.name = name
        if source.model_filename and not config.default_model_filename:
            config.default_model_filename = source.model_filename
        if unused := ignored_fields(config):
            log.info("model '%s': config fields parsed but not acted on: %s", name, ", ".join(unused))
        stale = [v for v in record.versions if v not in versions]
        to_load = [v for v in versions if force or _needs_load(record.versions.get(v), fingerprint, v)]
        # A config from a load request is the network's: its warmup is held to bounds (runtime/warmup.py).
        options = dataclasses.replace(self._load_options, network_config=config_override is not None)
        loaded = await asyncio.gather(*(self._load_version(record, source, config, v, fingerprint, options) for v in to_load))
        if stale and any(record.versions[v].state is ModelState.READY for v in versions):
            await asyncio.gather(*(self._retire(record, v, keep_entry=False) for v in stale))
        record.refresh_latest()
        log.info("%s", describe_model(record))
        return any(loaded)

    async def _load_version(
        self,
        record: ModelRecord,
        source: ModelSource,
        config: mc.ModelConfig,
        version: int,
        fingerprint: ModelFingerprint | None,
        options: LoadOptions,
    ) -> bool:
        """Load one version next to whatever serves it now; True once the new load serves."""
        entry = record.versions.setdefault(version, VersionRecord(version))
        entry.error_code = None
        if entry.serving is None:
            entry.state, entry.reason = ModelState.LOADING, ""
        started = time.monotonic()
        try:
            loaded = await asyncio.get_running_loop().run_in_executor(
                self._load_pool, load_version, config, source.name, version, source.versions[version], source.directory, options
            )
        except Exception as exc:  # a bug or an unexpected ORT failure must not stop other models
            error = exc if isinstance(exc, ServerError) else ServerError.internal(f"internal error while loading: {exc}")
            if not isinstance(exc, ServerError):
                log.exception("model '%s' version %d failed to load", source.name, version)
            entry.error_code = error.code
            if entry.serving is not None:
                entry.reason = f"reload failed, the previous load keeps serving: {error.status_text()}"
            else:
                entry.state, entry.reason = ModelState.UNAVAILABLE, error.status_text()
            log.error("model '%s' version %d: %s", source.name, version, entry.reason)
            return False
        histograms = VersionHistograms() if self._settings.histogram_latencies else None
        new = ServingVersion(source.name, version, loaded.config, loaded.instances, histograms, time.monotonic() - started, loaded.spec)
        old, entry.serving = entry.serving, new
        entry.state, entry.reason, entry.error_code = ModelState.READY, "", None
        entry.loaded_from = (fingerprint.model_files, fingerprint.versions[version]) if fingerprint else None
        record.refresh_latest()
        if old is not None:
            self._retire_in_background(old)
        return True

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

    async def _unload(self, name: str, reason: str, forget: bool) -> None:
        record = self._models[name]
        async with record.lock:
            record.wanted, record.error, record.attempted = False, "", None
            await asyncio.gather(*(self._retire(record, v, keep_entry=not forget, reason=reason) for v in list(record.versions)))
            record.refresh_latest()
            if record.private_dir is not None:
                self._private_files.discard(record.private_dir)
                record.private_dir = None
            if forget:
                del self._models[name]
            log.info("model '%s': %s", name, reason)

    async def _retire(self, record: ModelRecord, version: int, keep_entry: bool, reason: str = "unloaded") -> None:
        """Stop routing to ``version``, drain it and free it."""
        entry = record.versions[version]
        serving, entry.serving = entry.serving, None
        entry.state = ModelState.UNLOADING
        record.refresh_latest()
        if serving is not None:
            queued, executing = serving.scheduler.pending_count, serving.scheduler.executing_count
            if queued or executing:
                log.info("model '%s' version %d: draining %d queued and %d executing request(s)", record.name, version, queued, executing)
            await serving.close(self._settings.exit_timeout_secs)
        if keep_entry:
            entry.state, entry.reason = ModelState.UNAVAILABLE, reason
        else:
            del record.versions[version]

    def _retire_in_background(self, serving: ServingVersion) -> None:
        """A replaced version drains while its successor already serves."""
        task = asyncio.create_task(serving.close(self._settings.exit_timeout_secs))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    # ---- lookups (request path) ----------------------------------------------------------

    def get(self, name: str, version: str) -> ServingVersion:
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
        number = parse_version(version)
        entry = record.versions.get(number)
        if entry is None:
            raise ServerError.not_found(f"Request for unknown model: '{name}' version {number} is not found")
        if entry.state is not ModelState.READY or entry.serving is None:
            raise ServerError.unavailable(f"Request for unknown model: '{name}' version {number} is not at ready state")
        return entry.serving

    def ready_versions(self, name: str) -> list[ServingVersion]:
        record = self._models.get(name)
        return record.ready_versions() if record else []

    def all_serving(self) -> list[ServingVersion]:
        return [s for record in self._models.values() for s in record.ready_versions()]

    def index(self, ready_only: bool) -> list[ModelIndexEntry]:
        entries: list[ModelIndexEntry] = []
        for name in sorted(self._models.keys() | self._unloaded_repository_models()):
            record = self._models.get(name)
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

    def _unloaded_repository_models(self) -> set[str]:
        """In explicit mode the index also lists repository models nobody has loaded."""
        if self._settings.model_control_mode is not ModelControlMode.EXPLICIT:
            return set()
        try:
            return set(scan_repositories(list(self._settings.model_repositories), self._settings.model_name))
        except Exception:  # an index must answer even while the repository is in flux
            return set()

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
        await asyncio.gather(*(s.close(drain_timeout_secs) for s in serving), *self._retiring)
        self._load_pool.shutdown(wait=False, cancel_futures=True)
        self._private_files.close()


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
        raise ServerError(failed[0][1].error_code, f"load failed for model '{record.name}': {detail}\n")


def _file_config(source: ModelSource) -> mc.ModelConfig:
    return read_config_file(source.config_path) if source.config_path else mc.ModelConfig()


def _needs_load(entry: VersionRecord | None, fingerprint: ModelFingerprint | None, version: int) -> bool:
    if entry is None or entry.serving is None or fingerprint is None:
        return True
    return entry.loaded_from != (fingerprint.model_files, fingerprint.versions[version])


def parse_version(version: str) -> int:
    """A request's version string as a number; raises INVALID_ARG like Triton for anything else."""
    if not (version.isascii() and version.isdigit()) or int(version) < 1:
        raise ServerError.invalid_arg(
            f"failed to get model version from specified version string '{version}' (details: a version must be a positive decimal integer)"
        )
    return int(version)


def _planned_cpu_instances(source: ModelSource) -> int:
    """A rough count for the thread budget: instances per version times versions to load."""
    try:
        config = _file_config(source)
        versions = len(version_policy.select_versions(config.version_policy, source.versions))
    except ServerError:
        return 0
    cpu_kinds = (mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_AUTO)
    per_version = sum(max(g.count, 1) for g in config.instance_group if g.kind in cpu_kinds) or 1
    return per_version * versions


def describe_model(record: ModelRecord) -> str:
    """The one log line per model: versions and states, tensors, instances."""
    if record.error:
        return f"model '{record.name}': UNAVAILABLE: {record.error}"
    states = ", ".join(f"{v} {e.state.value}" + (f" ({e.reason})" if e.reason else "") for v, e in sorted(record.versions.items()))
    line = f"model '{record.name}': versions [{states}]"
    serving = record.latest_ready
    if serving is not None:
        spec = serving.spec
        tensors = lambda ts: ", ".join(f"{t.name} {t.datatype} {format_dims(spec.wire_shape(t))}" for t in ts.values())  # noqa: E731
        devices = ", ".join(instance.device for instance in serving.instances)
        line += (
            f"; inputs: {tensors(spec.inputs)}; outputs: {tensors(spec.outputs)}; "
            f"instances: {len(serving.instances)} ({devices}); max_batch_size {spec.max_batch_size}"
        )
    return line
