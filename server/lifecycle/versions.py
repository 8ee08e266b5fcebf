"""Loading one version next to what serves it, and retiring one: the manager's two state changes.

Both run on the event loop; the blocking part of a load runs on a load thread. A replaced
version drains in the background (bounded by the version drain timeout, not the shutdown's)
while its successor already serves.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping

from server.errors import ServerError
from server.lifecycle.load_threads import DaemonThreadPool
from server.lifecycle.servable import AnyKind, Servable
from server.lifecycle.state import ModelRecord, VersionRecord
from server.observability.histograms import VersionHistograms
from server.proto import model_config_pb2 as mc
from server.repository.layout import ModelSource
from server.types import ModelState

log = logging.getLogger(__name__)


class VersionLoader:
    def __init__(self, pool: DaemonThreadPool, histograms: bool, drain_timeout_secs: float) -> None:
        self._pool = pool
        self._histograms = histograms
        self._drain_timeout_secs = drain_timeout_secs
        self._retiring: set[asyncio.Task[None]] = set()

    async def load(
        self,
        record: ModelRecord,
        kind: AnyKind,
        source: ModelSource,
        config: mc.ModelConfig,
        version: int,
        digests: Mapping[int, tuple[str, str]] | None,
        network_config: bool,
    ) -> bool:
        """Load ``version`` next to whatever serves it now; True once the new load serves.

        A failure is recorded on the version (its reason in Triton's words), never raised.
        """
        entry = record.versions.setdefault(version, VersionRecord(version))
        entry.error_code = None
        if entry.serving is None:
            entry.state, entry.reason = ModelState.LOADING, ""
        started = time.monotonic()
        directory = source.versions[version]
        try:
            loop = asyncio.get_running_loop()
            loaded = await loop.run_in_executor(
                self._pool, kind.load, config, source.name, version, directory, source.directory, network_config
            )
        except Exception as exc:  # a bug or an unexpected ORT failure must not stop other models
            self._failed(record, entry, exc)
            return False
        histograms = VersionHistograms() if self._histograms else None
        new = kind.serve(loaded, source.name, version, histograms, time.monotonic() - started)
        old, entry.serving = entry.serving, new
        entry.state, entry.reason, entry.error_code = ModelState.READY, "", None
        entry.loaded_from = digests.get(version) if digests else None
        record.refresh_latest()
        if old is not None:
            self._retire_in_background(old)
        return True

    def _failed(self, record: ModelRecord, entry: VersionRecord, exc: Exception) -> None:
        error = exc if isinstance(exc, ServerError) else ServerError.internal(f"internal error while loading: {exc}")
        if not isinstance(exc, ServerError):
            log.error("model '%s' version %d failed to load", record.name, entry.version, exc_info=exc)
        entry.error_code = error.code
        if entry.serving is not None:
            entry.reason = f"reload failed, the previous load keeps serving: {error.status_text()}"
        else:
            entry.state, entry.reason = ModelState.UNAVAILABLE, error.status_text()
        log.error("model '%s' version %d: %s", record.name, entry.version, entry.reason)

    async def retire(self, record: ModelRecord, version: int, keep_entry: bool, reason: str = "unloaded") -> None:
        """Stop routing to ``version``, drain it and free it."""
        entry = record.versions[version]
        serving, entry.serving = entry.serving, None
        entry.state = ModelState.UNLOADING
        record.refresh_latest()
        if serving is not None:
            queued, executing = serving.scheduler.pending_count, serving.scheduler.executing_count
            if queued or executing:
                log.info("model '%s' version %d: draining %d queued and %d executing request(s)", record.name, version, queued, executing)
            await serving.close(self._drain_timeout_secs)
        if keep_entry:
            entry.state, entry.reason = ModelState.UNAVAILABLE, reason
        else:
            del record.versions[version]

    def _retire_in_background(self, serving: Servable) -> None:
        """A replaced version drains while its successor already serves."""
        task = asyncio.create_task(serving.close(self._drain_timeout_secs))
        self._retiring.add(task)
        task.add_done_callback(self._retiring.discard)

    async def retiring(self, timeout_secs: float | None) -> None:
        """Wait (at most ``timeout_secs``) for the versions still draining in the background."""
        if self._retiring:
            await asyncio.wait(set(self._retiring), timeout=timeout_secs)
