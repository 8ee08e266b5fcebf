"""InferenceService: the one transport-free API that the gRPC and HTTP frontends call.

Runs on the event loop. Every method either returns plain values from server/types.py (or the
completed ModelConfig message) or raises ServerError; frontends only convert.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass
from time import monotonic_ns

import numpy as np
from google.protobuf import json_format

from server import __version__
from server.classification import top_classes
from server.errors import FailureReason, ServerError
from server.inflight import InflightBudget, default_budget_bytes
from server.observability.statistics import RequestTiming
from server.proto import model_config_pb2 as mc
from server.repository.manager import ModelManager, parse_version
from server.repository.model_version import ServingVersion
from server.request_inputs import check_request_strings, decode_inputs, requested_output_names, validate_inputs
from server.request_parameters import scheduling_parameters
from server.sample_capture import SampleCapture
from server.scheduling.job import InferenceJob
from server.settings import ModelControlMode
from server.types import (
    InferOutput,
    InferRequest,
    InferResponse,
    ModelIndexEntry,
    ModelMetadata,
    ServerMetadata,
    TensorMetadata,
)

log = logging.getLogger(__name__)


@dataclass(slots=True)
class PendingInference:
    """A submitted request: where it went and the job whose future will carry its outputs."""

    serving: ServingVersion
    request: InferRequest
    job: InferenceJob
    output_names: tuple[str, ...]


# The Triton protocol extensions ortserve implements (ServerMetadata.extensions).
EXTENSIONS = ("classification", "model_configuration", "model_repository", "statistics", "parameters", "binary_tensor_data")


class InferenceService:
    def __init__(
        self,
        manager: ModelManager,
        strict_readiness: bool,
        server_id: str = "ortserve",
        control_mode: ModelControlMode = ModelControlMode.NONE,
        budget: InflightBudget | None = None,
        capture: SampleCapture | None = None,
    ) -> None:
        self._manager = manager
        self._capture = capture
        self._budget = budget or InflightBudget(default_budget_bytes())
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
        return ServerMetadata(name=self._server_id, version=__version__, extensions=EXTENSIONS)

    def model_metadata(self, name: str, version: str) -> ModelMetadata:
        serving = self._manager.get(name, version)
        versions = (serving.version_str,) if version else tuple(s.version_str for s in self._manager.ready_versions(name))
        spec = serving.spec
        return ModelMetadata(
            name=name,
            versions=versions,
            platform=serving.config.platform or serving.config.backend,
            inputs=tuple(TensorMetadata(t.name, t.datatype, spec.wire_shape(t)) for t in spec.inputs.values()),
            outputs=tuple(TensorMetadata(t.name, t.datatype, spec.wire_shape(t)) for t in spec.outputs.values()),
        )

    def model_config(self, name: str, version: str) -> mc.ModelConfig:
        return self._manager.get(name, version).config

    def statistics(self, name: str, version: str) -> list[ServingVersion]:
        """The READY versions whose statistics are asked for ("" name = every model; a version
        without a name is ignored, as in Triton).

        Raises INVALID_ARG with Triton's words when the model or version is not available.
        """
        if not name:
            return self._manager.all_serving()
        number = parse_version(version) if version else None
        ready = self._manager.ready_versions(name)
        if not ready:
            raise ServerError.invalid_arg(f"requested model '{name}' is not available")
        if number is None:
            return ready
        chosen = [serving for serving in ready if serving.version == number]
        if not chosen:
            raise ServerError.invalid_arg(f"requested model version is not available for model '{name}'")
        return chosen

    def repository_index(self, ready_only: bool) -> list[ModelIndexEntry]:
        return self._manager.index(ready_only)

    async def load_model(self, name: str, config_json: str | None, files: dict[str, bytes]) -> None:
        """RepositoryModelLoad: load or reload ``name`` (explicit mode only).

        ``config_json`` overrides config.pbtxt; ``files`` maps ``file:<version>/<path>`` keys to
        model bytes, written to a private directory. Raises ServerError.
        """
        self._require_explicit_mode()
        # Triton refuses these while polling the repository; its words, then the reason.
        refused = f"failed to load '{name}', failed to poll from model repository: "
        if files and config_json is None:
            raise ServerError.invalid_arg(refused + "Load parameter 'config' must be specified for model file override")
        config = None
        if config_json is not None:
            config = mc.ModelConfig()
            try:
                json_format.Parse(config_json, config)
            except json_format.ParseError as exc:
                raise ServerError.invalid_arg(refused + f"Invalid config override: {exc}") from None
        if self._exiting:
            raise ServerError.unavailable("Server exiting")
        load = asyncio.ensure_future(self._manager.load(name, config, files))
        exiting = asyncio.ensure_future(self._exit_requested.wait())
        await asyncio.wait({load, exiting}, return_when=asyncio.FIRST_COMPLETED)
        exiting.cancel()
        if not load.done():  # shutdown began: the load is abandoned, never reported as done
            load.cancel()
            raise ServerError.unavailable(f"Server exiting: the load of model '{name}' was abandoned")
        load.result()

    async def unload_model(self, name: str, unload_dependents: bool) -> None:
        """RepositoryModelUnload: drain and unload every version of ``name``. Raises ServerError.

        ``unload_dependents`` is accepted; ONNX models have no dependents (no ensembles here).
        """
        self._require_explicit_mode()
        await self._manager.unload(name)

    def _require_explicit_mode(self) -> None:
        # Triton answers with this text in modes poll and none alike; the mode follows it.
        refused = "explicit model load / unload is not allowed if polling is enabled"
        if self._control_mode is ModelControlMode.POLL:
            raise ServerError.unavailable(refused)
        if self._control_mode is not ModelControlMode.EXPLICIT:
            raise ServerError.unavailable(f"{refused} (model control mode is 'none': start the server with --model-control-mode=explicit)")

    # ---- inference -----------------------------------------------------------------------

    async def infer(self, request: InferRequest) -> InferResponse:
        """Validate, queue, await and answer one request.

        Raises ServerError; if the caller is cancelled, the queued job is skipped, never run.
        """
        pending = self.submit(request)
        # complete() records and raises whatever outcome the job had, cancellation included.
        with contextlib.suppress(ServerError, asyncio.CancelledError):
            await pending.job.future
        return self.complete(pending)

    def submit(self, request: InferRequest) -> PendingInference:
        """Validate ``request`` and queue it; never blocks. ``complete`` must follow exactly once,
        after ``pending.job.future`` is done (callers may cancel that future to withdraw).

        Raises ServerError at once for an unknown model, a bad request or a full queue.
        """
        received_ns = monotonic_ns()
        if self._exiting:
            raise ServerError.unavailable("Server exiting")
        check_request_strings(request)
        serving = self._manager.get(request.model_name, request.model_version)
        try:
            job = self._admit(serving, request, received_ns)
        except ServerError as error:
            serving.stats.record_failure(error.reason, received_ns, monotonic_ns())
            raise
        self._enter()
        return PendingInference(serving, request, job, job.output_names)

    def _admit(self, serving: ServingVersion, request: InferRequest, received_ns: int) -> InferenceJob:
        """Check, then reserve, then decode: a request that is refused (bad, too large a batch,
        full queue, over the in-flight budget) costs no tensor decoding."""
        params = scheduling_parameters(request.parameters)
        output_names = requested_output_names(serving.spec, request)
        plan = validate_inputs(serving.spec, request)
        serving.scheduler.check_capacity(params.priority)
        self._budget.reserve(request.size_bytes)
        try:
            job = InferenceJob(
                feeds=decode_inputs(serving.spec, request, plan),
                rows=plan.batch_size,
                output_names=output_names,
                future=asyncio.get_running_loop().create_future(),
                timing=RequestTiming(received_ns=received_ns, enqueued_ns=monotonic_ns()),
                shape_key=plan.shape_key,
                priority=params.priority,
                timeout_us=params.timeout_us,
                deadline_ns=int(request.deadline * 1e9) if request.deadline is not None else 0,
                source_shapes=plan.source_shapes,
            )
            serving.scheduler.submit(job)
            if self._capture is not None:  # --sample-capture-dir: keep this request's inputs (bounded, never blocks)
                self._capture.offer(serving.name, serving.config, job.feeds)
        except BaseException:
            self._budget.release(request.size_bytes)
            raise
        return job

    def complete(self, pending: PendingInference) -> InferResponse:
        """The response of a submitted request whose job future is done; records its statistics.

        Raises the job's ServerError, or CancelledError if the caller withdrew it.
        """
        job, stats = pending.job, pending.serving.stats
        try:
            if job.future.cancelled():
                stats.record_failure(FailureReason.CANCELED, job.timing.received_ns, monotonic_ns())
                raise asyncio.CancelledError()
            error = job.future.exception()
            if error is not None:
                reason = error.reason if isinstance(error, ServerError) else FailureReason.OTHER
                stats.record_failure(reason, job.timing.received_ns, monotonic_ns())
                raise error
            response = _response(pending.serving, pending.request, pending.output_names, job.future.result(), job.rows)
            stats.record_success(job.timing, job.rows, monotonic_ns())
            return response
        finally:
            self._budget.release(pending.request.size_bytes)
            self._leave()

    def _enter(self) -> None:
        self._in_flight += 1
        self._idle.clear()

    def _leave(self) -> None:
        self._in_flight -= 1
        if self._in_flight == 0:
            self._idle.set()


def _response(
    serving: ServingVersion,
    request: InferRequest,
    output_names: tuple[str, ...],
    outputs: dict[str, np.ndarray],
    batch_size: int,
) -> InferResponse:
    spec = serving.spec
    class_counts = {output.name: output.class_count for output in request.outputs if output.class_count}
    items: list[InferOutput] = []
    for name in output_names:
        tensor = spec.outputs[name]
        array = outputs[name]
        if tensor.reshape is not None:
            array = array.reshape(((batch_size,) if spec.batching else ()) + tensor.dims)
        if name in class_counts:
            classes = top_classes(array, class_counts[name], spec.batching, spec.labels.get(name, ()))
            items.append(InferOutput(name, "BYTES", classes.shape, classes))
        else:
            items.append(InferOutput(name, tensor.datatype, array.shape, array))
    return InferResponse(serving.name, serving.version_str, request.id, items)
