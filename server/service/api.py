"""InferenceService: the one transport-free API that the gRPC and HTTP frontends call.

Runs on the event loop. Every method either returns plain values from server/types.py (or the
completed ModelConfig message) or raises ServerError; frontends only convert.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from time import monotonic_ns

from server import __version__
from server.client_strings import shown
from server.errors import ServerError
from server.lifecycle.manager import ModelManager
from server.model_config.version_policy import parse_version
from server.observability.statistics import RequestTiming
from server.observability.trace_settings import parse_update
from server.observability.tracing import Tracer
from server.proto import model_config_pb2 as mc
from server.service.awaiting import submit_and_wait
from server.service.inference import InferenceHandle, admit, end_trace, outcome
from server.service.inflight import InflightBudget, default_budget_bytes
from server.service.load_request import parse_load_request, split_load_parameters
from server.service.request_inputs import check_request_strings
from server.service.sample_capture import SampleCapture
from server.service.shared_memory import SharedMemoryRegistry
from server.service.shared_memory_io import attach_shared_memory
from server.service.statistics import version_statistics
from server.settings import ModelControlMode, TraceOptions
from server.types import (
    InferRequest,
    InferResponse,
    ModelIndexEntry,
    ModelMetadata,
    ModelStatistics,
    ServerMetadata,
    SharedMemoryRegion,
    TensorMetadata,
    TraceSettings,
)

log = logging.getLogger(__name__)

# The Triton protocol extensions ortserve implements (ServerMetadata.extensions).
EXTENSIONS = ("classification", "model_configuration", "model_repository", "statistics", "parameters", "binary_tensor_data", "trace")
# Advertised too when --allow-client-shm turns it on.
SYSTEM_SHARED_MEMORY = "system_shared_memory"
# What the extensions ortserve does not implement answer (UNSUPPORTED), over either protocol.
UNSUPPORTED_EXTENSIONS = {
    "cuda_shared_memory": (
        "CUDA shared memory is not supported by ortserve (it has not been built and tested on a GPU); "
        "use system shared memory or send tensors in the request"
    ),
    "logging": "the logging extension is not supported by ortserve",
}


class InferenceService:
    def __init__(
        self,
        manager: ModelManager,
        strict_readiness: bool,
        server_id: str = "ortserve",
        control_mode: ModelControlMode = ModelControlMode.NONE,
        budget: InflightBudget | None = None,
        shared_memory: SharedMemoryRegistry | None = None,
        capture: SampleCapture | None = None,
        tracer: Tracer | None = None,
    ) -> None:
        self._manager = manager
        self._capture = capture
        self._tracer = tracer or Tracer(TraceOptions(), sink=None)
        self._budget = budget or InflightBudget(default_budget_bytes())
        self._shared_memory = shared_memory or SharedMemoryRegistry()
        self._control_mode = control_mode
        self._strict_readiness = strict_readiness
        self._server_id = server_id
        self._started = False
        self._exiting = False
        self._exit_requested = asyncio.Event()
        self._in_flight = 0
        self._idle = asyncio.Event()
        self._idle.set()

    # ---- lifecycle -----------------------------------------------------------------------

    def mark_started(self) -> None:
        """Initial model loading is over; readiness may now become true."""
        self._started = True

    def begin_shutdown(self) -> None:
        """Readiness turns false at once, new requests are refused with UNAVAILABLE and loads in
        progress are abandoned (their callers get UNAVAILABLE)."""
        self._exiting = True
        self._exit_requested.set()

    async def wait_idle(self) -> None:
        """Return once no inference request is in flight."""
        await self._idle.wait()

    # ---- health and metadata -------------------------------------------------------------

    def is_live(self) -> bool:
        return True

    def is_ready(self) -> bool:
        if self._exiting or not self._started:
            return False
        return self._manager.all_ready() if self._strict_readiness else True

    def is_model_ready(self, name: str, version: str) -> bool:
        """Triton's ModelIsReady: False for an unknown model or a version that is not READY.

        Raises INVALID_ARG for a version string that is not a number, and UNAVAILABLE
        "Server not ready" once shutdown has begun.
        """
        if version:
            parse_version(version)
        if self._exiting:
            raise ServerError.unavailable("Server not ready")
        try:
            self._manager.get(name, version)
        except ServerError:
            return False
        return True

    def require_model_ready(self, name: str, version: str) -> None:
        """Like ``is_model_ready`` but raises the lookup error (NOT_FOUND, UNAVAILABLE) that says why
        a model is not ready; the HTTP frontend answers with it."""
        self._manager.get(name, version)
        if self._exiting:
            raise ServerError.unavailable("Server not ready")

    def server_metadata(self) -> ServerMetadata:
        extensions = (*EXTENSIONS, SYSTEM_SHARED_MEMORY) if self._shared_memory.enabled else EXTENSIONS
        return ServerMetadata(name=self._server_id, version=__version__, extensions=extensions)

    def model_metadata(self, name: str, version: str) -> ModelMetadata:
        servable = self._manager.get(name, version)
        versions = (servable.version_str,) if version else tuple(s.version_str for s in self._manager.ready_versions(name))
        spec = servable.spec
        return ModelMetadata(
            name=name,
            versions=versions,
            platform=servable.config.platform or servable.config.backend,
            inputs=tuple(TensorMetadata(t.name, t.datatype, spec.wire_shape(t)) for t in spec.inputs.values()),
            outputs=tuple(TensorMetadata(t.name, t.datatype, spec.wire_shape(t)) for t in spec.outputs.values()),
        )

    def model_config(self, name: str, version: str) -> mc.ModelConfig:
        return self._manager.get(name, version).config

    def statistics(self, name: str, version: str) -> list[ModelStatistics]:
        """Statistics of the READY versions asked for ("" name = every model; a version without a
        name is ignored, as in Triton).

        Raises INVALID_ARG with Triton's words when the model or version is not available.
        """
        if not name:
            return [version_statistics(servable) for servable in self._manager.all_serving()]
        number = parse_version(version) if version else None
        ready = self._manager.ready_versions(name)
        if not ready:
            raise ServerError.invalid_arg(f"requested model '{name}' is not available")
        chosen = [servable for servable in ready if number is None or servable.version == number]
        if not chosen:
            raise ServerError.invalid_arg(f"requested model version is not available for model '{name}'")
        return [version_statistics(servable) for servable in chosen]

    async def repository_index(self, ready_only: bool) -> list[ModelIndexEntry]:
        """RepositoryIndex: every model the repositories hold (explicit mode lists unloaded ones too)."""
        return await self._manager.index(ready_only)

    async def load_model(self, name: str, parameters: dict[str, str | bytes]) -> None:
        """RepositoryModelLoad: load or reload ``name`` (explicit mode only). ``parameters`` are
        Triton's load parameters as plain values (``config`` JSON, ``file:<version>/<path>`` bytes).

        Raises ServerError; a load still running when shutdown begins is abandoned (UNAVAILABLE).
        """
        split = split_load_parameters(parameters)
        self._require_explicit_mode()
        load_request = parse_load_request(name, split)
        if self._exiting:
            raise ServerError.unavailable("Server exiting")
        load = asyncio.ensure_future(self._manager.load(name, load_request.config, load_request.files))
        exiting = asyncio.ensure_future(self._exit_requested.wait())
        await asyncio.wait({load, exiting}, return_when=asyncio.FIRST_COMPLETED)
        exiting.cancel()
        if not load.done():  # shutdown began: the load is abandoned, never reported as done
            load.cancel()
            raise ServerError.unavailable(f"Server exiting: the load of model '{name}' was abandoned")
        load.result()

    async def unload_model(self, name: str, unload_dependents: bool) -> None:
        """RepositoryModelUnload: drain and unload every version of ``name``. Raises ServerError.

        The ensembles that use ``name`` are unloaded too with ``unload_dependents``; without it
        they stay known but UNAVAILABLE until ``name`` is loaded again (Triton's behaviour).
        """
        self._require_explicit_mode()
        await self._manager.unload(name, unload_dependents)

    def _require_explicit_mode(self) -> None:
        # Triton answers with this text in modes poll and none alike; the mode follows it.
        refused = "explicit model load / unload is not allowed if polling is enabled"
        if self._control_mode is ModelControlMode.POLL:
            raise ServerError.unavailable(refused)
        if self._control_mode is not ModelControlMode.EXPLICIT:
            raise ServerError.unavailable(f"{refused} (model control mode is 'none': start the server with --model-control-mode=explicit)")

    # ---- system shared memory (Triton's extension; the registry does the mapping) ------------

    def register_system_shared_memory(self, name: str, key: str, offset: int, byte_size: int) -> None:
        """SystemSharedMemoryRegister. Raises ServerError (see SharedMemoryRegistry.register)."""
        self._shared_memory.register(name, key, offset, byte_size)

    def system_shared_memory_status(self, name: str) -> list[SharedMemoryRegion]:
        """SystemSharedMemoryStatus: every region ("" name) or the one named (else NOT_FOUND)."""
        return self._shared_memory.status(name)

    def unregister_system_shared_memory(self, name: str) -> None:
        """SystemSharedMemoryUnregister: one region, or all for "". A request still using one
        finishes with it; the mapping goes after."""
        self._shared_memory.unregister(name)

    def cuda_shared_memory_status(self, name: str) -> list[SharedMemoryRegion]:
        """No CUDA region can be registered: none for "", NOT_FOUND (Triton's words) for a name."""
        if name:
            raise ServerError.not_found(f"Unable to find cuda shared memory region: {shown(name)}")
        return []

    def unregister_cuda_shared_memory(self, name: str) -> None:
        """Nothing to unregister (perf_analyzer --shared-memory system calls it with "" first)."""

    # ---- trace extension -------------------------------------------------------------------

    def tracing_active(self) -> bool:
        """Whether any trace setting may sample a request now; frontends note a request's origin
        (TraceOrigin) only then, so tracing off costs them this one check."""
        return self._tracer.active

    def trace_settings(self, model_name: str, update: Mapping[str, tuple[str, ...] | None] | None = None) -> TraceSettings:
        """TraceSetting: apply ``update`` (setting name → values; None or () clears it; None
        for no update) to the global setting ("" name) or a model's, and return the one in force.

        Raises INVALID_ARG "Request for unknown model : m" for a model without a READY version,
        UNSUPPORTED for ``trace_file`` (never set over the network), INVALID_ARG for bad values.
        """
        if model_name:
            try:
                self._manager.get(model_name, "")
            except ServerError:
                raise ServerError.invalid_arg(f"Request for unknown model : {model_name}") from None
        if update is not None:
            self._tracer.update(model_name, parse_update(update))
        return self._tracer.settings(model_name)

    @staticmethod
    def unsupported(extension: str) -> ServerError:
        """The error an extension ortserve does not implement answers with (UNSUPPORTED)."""
        return ServerError.unsupported(UNSUPPORTED_EXTENSIONS[extension])

    # ---- inference -----------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        """Validate, queue, await and answer one request.

        Raises ServerError; if the caller is cancelled, the queued job is skipped, never run.
        """
        return await submit_and_wait(self.submit, self.complete, request)

    def submit(self, request: InferRequest) -> InferenceHandle:
        """Validate ``request`` and queue it; never blocks. ``complete`` must follow exactly once,
        after the handle is done (callers may ``cancel`` it to withdraw the request).

        Raises ServerError at once for an unknown model, a bad request or a full queue.
        """
        received_ns = monotonic_ns()
        if self._exiting:
            raise ServerError.unavailable("Server exiting")
        check_request_strings(request)
        servable = self._manager.get(request.model_name, request.model_version)
        trace = None
        if self._tracer.active:
            trace = self._tracer.start(servable.name, servable.version, request.id, request.trace_origin, received_ns)
        try:
            shared_outputs = attach_shared_memory(self._shared_memory, request)
            handle = admit(servable, request, self._budget, received_ns, shared_outputs, self._capture, trace)
        except ServerError as error:
            servable.stats.record_failure(error.reason, received_ns, monotonic_ns())
            if trace is not None:
                end_trace(trace, RequestTiming(received_ns=received_ns), error.message)
            raise
        self._enter()
        return handle

    def complete(self, handle: InferenceHandle) -> InferResponse:
        """The response of a submitted request whose handle is done; records its statistics.

        Raises the request's ServerError, or CancelledError if it was withdrawn.
        """
        try:
            return outcome(handle)
        finally:
            self._budget.release(handle.request.size_bytes)
            self._leave()

    def _enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()
