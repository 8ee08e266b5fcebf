"""The model manager: what is loaded, in which state, and the lookups every request makes.

Scanning and version selection are pure (layout.py, version_policy.py); loading is the
runtime's job (runtime/loader.py, on load threads); this class decides and records state.
All methods run on the event loop.
"""

from __future__ import annotations

import asyncio
import logging
import time
from concurrent.futures import ThreadPoolExecutor

from server.errors import ServerError
from server.observability.histograms import LatencyHistograms
from server.proto import model_config_pb2 as mc
from server.repository import version_policy
from server.repository.config_file import ignored_fields, read_config_file
from server.repository.layout import ModelSource, scan_repositories
from server.repository.model_version import ModelRecord, ServingVersion, VersionRecord
from server.repository.signature import format_dims
from server.runtime.loader import LoadOptions, load_version
from server.runtime.threads import available_cores, default_intra_op_threads
from server.settings import Settings
from server.types import ModelIndexEntry, ModelState

log = logging.getLogger(__name__)


class ModelManager:
    def __init__(self, settings: Settings, histograms: LatencyHistograms | None = None) -> None:
        self._settings = settings
        self._histograms = histograms
        self._models: dict[str, ModelRecord] = {}
        self._load_pool = ThreadPoolExecutor(settings.model_load_thread_count, thread_name_prefix="model-load")
        self._load_options = LoadOptions(settings.default_max_batch_size, 1)

    # ---- loading -------------------------------------------------------------------------

    async def load_initial(self) -> None:
        """Scan every repository and load each model; failures are recorded, not raised.

        Raises DuplicateModelError if two repositories hold the same model name.
        """
        sources = scan_repositories(list(self._settings.model_repositories), self._settings.model_name)
        planned = sum(_planned_cpu_instances(source) for source in sources.values())
        threads = default_intra_op_threads(planned, available_cores())
        self._load_options = LoadOptions(self._settings.default_max_batch_size, threads)
        log.info("%d CPU instance(s) planned on %d core(s): %d intra-op thread(s) each by default", planned, available_cores(), threads)
        await asyncio.gather(*(self.load_model(source) for source in sources.values()))

    async def load_model(self, source: ModelSource) -> None:
        record = ModelRecord(name=source.name)
        self._models[source.name] = record
        try:
            file_config = read_config_file(source.config_path) if source.config_path else mc.ModelConfig()
            versions = version_policy.select_versions(file_config.version_policy, source.versions)
        except ServerError as error:
            record.error = error.message
            log.error("model '%s' failed: %s", source.name, error.message)
            return
        if not versions:
            record.error = (
                f"at least one version must be available under the version policy of model '{source.name}' "
                f"({version_policy.describe(file_config.version_policy)}; version directories: {list(source.versions)})"
            )
            log.error("model '%s' failed: %s", source.name, record.error)
            return
        if source.model_filename and not file_config.default_model_filename:
            file_config.default_model_filename = source.model_filename
        if unused := ignored_fields(file_config):
            log.info("model '%s': config fields parsed but not acted on: %s", source.name, ", ".join(unused))
        for version in versions:
            record.versions[version] = VersionRecord(version)
        await asyncio.gather(*(self._load_version(record, source, file_config, v) for v in versions))
        record.refresh_latest()
        log.info("%s", describe_model(record))

    async def _load_version(self, record: ModelRecord, source: ModelSource, file_config: mc.ModelConfig, version: int) -> None:
        entry = record.versions[version]
        loop = asyncio.get_running_loop()
        started = time.monotonic()
        try:
            loaded = await loop.run_in_executor(
                self._load_pool, load_version, file_config, source.name, version, source.versions[version], self._load_options
            )
        except ServerError as error:
            entry.state, entry.reason = ModelState.UNAVAILABLE, error.message
        except Exception as exc:  # a bug or an unexpected ORT failure must not stop other models
            log.exception("model '%s' version %d failed to load", source.name, version)
            entry.state, entry.reason = ModelState.UNAVAILABLE, f"internal error while loading: {exc}"
        else:
            histograms = self._histograms.for_version(source.name, str(version)) if self._histograms else None
            entry.serving = ServingVersion(source.name, version, loaded.config, loaded.instances, histograms, time.monotonic() - started)
            entry.state, entry.reason = ModelState.READY, ""

    # ---- lookups (request path) ----------------------------------------------------------

    def get(self, name: str, version: str) -> ServingVersion:
        """The version a request addresses; "" means the highest READY version.

        Raises ServerError with Triton's codes and wording (NOT_FOUND, UNAVAILABLE, INVALID_ARG).
        """
        record = self._models.get(name)
        if record is None:
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
        for name in sorted(self._models):
            record = self._models[name]
            if record.error and not ready_only:
                entries.append(ModelIndexEntry(name, "", ModelState.UNAVAILABLE, record.error))
            for version in sorted(record.versions):
                entry = record.versions[version]
                if not ready_only or entry.state is ModelState.READY:
                    entries.append(ModelIndexEntry(name, str(version), entry.state, entry.reason))
        return entries

    def all_ready(self) -> bool:
        """True when every model that should be loaded is READY (strict readiness)."""
        return all(
            not record.error and all(e.state is ModelState.READY for e in record.versions.values()) for record in self._models.values()
        )

    # ---- shutdown ------------------------------------------------------------------------

    async def close(self, drain_timeout_secs: float | None) -> None:
        """Drain and unload every version (bounded by the timeout), then stop the load threads."""
        serving = self.all_serving()
        for record in self._models.values():
            for entry in record.versions.values():
                if entry.state is ModelState.READY:
                    entry.state = ModelState.UNLOADING
            record.refresh_latest()
        await asyncio.gather(*(s.close(drain_timeout_secs) for s in serving))
        if self._histograms is not None:
            for s in serving:
                self._histograms.forget(s.name, s.version_str)
        self._load_pool.shutdown(wait=False, cancel_futures=True)


def parse_version(version: str) -> int:
    """A request's version string as a number; raises INVALID_ARG like Triton for anything else."""
    try:
        number = int(version)
    except ValueError:
        number = -1
    if number < 1 or not version.isdigit():
        raise ServerError.invalid_arg(
            f"failed to get model version from specified version string '{version}' (details: a version must be a positive decimal integer)"
        )
    return number


def _planned_cpu_instances(source: ModelSource) -> int:
    """A rough count for the thread budget: instances per version times versions to load."""
    try:
        config = read_config_file(source.config_path) if source.config_path else mc.ModelConfig()
        versions = len(version_policy.select_versions(config.version_policy, source.versions))
    except ServerError:
        return 0
    cpu_kinds = (mc.ModelInstanceGroup.KIND_CPU, mc.ModelInstanceGroup.KIND_AUTO)
    per_version = sum(max(g.count, 1) for g in config.instance_group if g.kind in cpu_kinds) or 1
    return per_version * versions


def describe_model(record: ModelRecord) -> str:
    """The one startup log line per model: versions and states, tensors, instances."""
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
