"""GRPCInferenceService: convert → call InferenceService → convert. Errors are mapped here once."""

from __future__ import annotations

import asyncio
import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from time import monotonic_ns
from typing import Any, TypeAlias, TypeVar

import grpc

from server.errors import ServerError
from server.frontends.grpc import convert, trace
from server.frontends.grpc.handlers import MalformedRequest
from server.frontends.grpc.outbox import Outbox
from server.frontends.grpc.status import GRPC_STATUS, status_details
from server.proto import grpc_service_pb2 as pb
from server.proto import grpc_service_pb2_grpc as pb_grpc
from server.service import InferenceHandle, InferenceService
from server.types import InferRequest

log = logging.getLogger(__name__)


Handler = TypeVar("Handler", bound=Callable[..., Awaitable[Any]])
Ctx: TypeAlias = grpc.aio.ServicerContext


def mapped_errors(handler: Handler) -> Handler:
    """Turn a ServerError into its gRPC status and any other exception into INTERNAL."""

    @functools.wraps(handler)
    async def wrapper(self: Any, request: Any, context: Ctx) -> Any:
        if isinstance(request, MalformedRequest):
            await context.abort(grpc.StatusCode.INVALID_ARGUMENT, status_details(request.describe()))
        try:
            return await handler(self, request, context)
        except ServerError as error:
            await context.abort(GRPC_STATUS[error.code], status_details(error.message))
        except (grpc.aio.AbortError, asyncio.CancelledError):
            raise
        except Exception as exc:  # a bug must cost one call, never the server
            log.exception("unexpected error in %s", handler.__name__)
            await context.abort(grpc.StatusCode.INTERNAL, status_details(f"internal error: {exc}"))

    return wrapper  # type: ignore[return-value]


# Requests of one stream read but not yet answered on the wire (README "Limits").
STREAM_MAX_IN_FLIGHT = 128


def _deadline(context: Ctx) -> float | None:
    remaining = context.time_remaining()
    return None if remaining is None else time.monotonic() + remaining


class InferenceServicer(pb_grpc.GRPCInferenceServiceServicer):
    def __init__(self, service: InferenceService) -> None:
        self._service = service

    @mapped_errors
    async def ServerLive(self, request: pb.ServerLiveRequest, context: Ctx) -> pb.ServerLiveResponse:
        return pb.ServerLiveResponse(live=self._service.is_live())

    @mapped_errors
    async def ServerReady(self, request: pb.ServerReadyRequest, context: Ctx) -> pb.ServerReadyResponse:
        return pb.ServerReadyResponse(ready=self._service.is_ready())

    @mapped_errors
    async def ModelReady(self, request: pb.ModelReadyRequest, context: Ctx) -> pb.ModelReadyResponse:
        return pb.ModelReadyResponse(ready=self._service.is_model_ready(request.name, request.version))

    @mapped_errors
    async def ServerMetadata(self, request: pb.ServerMetadataRequest, context: Ctx) -> pb.ServerMetadataResponse:
        return convert.server_metadata_to_pb(self._service.server_metadata())

    @mapped_errors
    async def ModelMetadata(self, request: pb.ModelMetadataRequest, context: Ctx) -> pb.ModelMetadataResponse:
        return convert.model_metadata_to_pb(self._service.model_metadata(request.name, request.version))

    @mapped_errors
    async def ModelConfig(self, request: pb.ModelConfigRequest, context: Ctx) -> pb.ModelConfigResponse:
        return pb.ModelConfigResponse(config=self._service.model_config(request.name, request.version))

    @mapped_errors
    async def ModelStatistics(self, request: pb.ModelStatisticsRequest, context: Ctx) -> pb.ModelStatisticsResponse:
        return convert.statistics_to_pb(self._service.statistics(request.name, request.version))

    @mapped_errors
    async def RepositoryIndex(self, request: pb.RepositoryIndexRequest, context: Ctx) -> pb.RepositoryIndexResponse:
        return convert.index_to_pb(await self._service.repository_index(request.ready))

    @mapped_errors
    async def ModelInfer(self, request: pb.ModelInferRequest, context: Ctx) -> pb.ModelInferResponse:
        arrived_ns = monotonic_ns() if self._service.tracing_active() else 0
        infer_request = convert.request_from_pb(request, _deadline(context))
        if arrived_ns:
            infer_request.trace_origin = trace.call_origin(context.invocation_metadata(), arrived_ns)
        response = await self._service.infer(infer_request)
        reply = convert.response_to_pb(response)
        if response.trace is not None:
            response.trace.finish()
        return reply

    async def ModelStreamInfer(
        self, request_iterator: AsyncIterator[pb.ModelInferRequest], context: Ctx
    ) -> AsyncIterator[pb.ModelStreamInferResponse]:
        """Pipelined: each request is submitted as it arrives and answered as soon as it completes,
        so one stream with many requests in flight is batched like many unary calls. No task per
        request: a completed job's callback queues its response for this writer."""
        responses: Outbox[pb.ModelStreamInferResponse | None] = Outbox()
        in_flight: set[InferenceHandle] = set()
        # Read-ahead bound: a request takes a slot when it is read and gives it back once its
        # response is written, so a client that stops reading responses stops being read.
        slots = asyncio.Semaphore(STREAM_MAX_IN_FLIGHT)
        reader = asyncio.create_task(self._read_stream(request_iterator, responses, in_flight, slots, context.invocation_metadata()))
        try:
            while (response := await responses.get()) is not None:
                yield response
                slots.release()
            await reader  # surfaces a read error as this call's status
        finally:
            reader.cancel()
            for handle in list(in_flight):  # the client is gone: withdraw what has not run yet
                handle.cancel()

    async def _read_stream(
        self,
        request_iterator: AsyncIterator[pb.ModelInferRequest],
        responses: Outbox[pb.ModelStreamInferResponse | None],
        in_flight: set[InferenceHandle],
        slots: asyncio.Semaphore,
        metadata: Sequence[tuple[str, str | bytes]] | None,
    ) -> None:
        drained = asyncio.Event()
        drained.set()

        def finished(handle: InferenceHandle) -> None:
            in_flight.discard(handle)
            responses.put(self._stream_response(handle))
            if not in_flight:
                drained.set()

        try:
            async for request in request_iterator:
                await slots.acquire()
                if isinstance(request, MalformedRequest):
                    responses.put(_stream_error(pb.ModelInferRequest(), request.describe()))
                    continue
                try:
                    infer_request = convert.request_from_pb(request, None)
                    if self._service.tracing_active():
                        infer_request.trace_origin = trace.call_origin(metadata)
                    handle = self._service.submit(infer_request)
                except ServerError as error:
                    responses.put(_stream_error(request, error.message))
                    continue
                except Exception as exc:  # one bad request must not end the stream
                    log.exception("unexpected error in a streamed request")
                    responses.put(_stream_error(request, f"internal error: {exc}"))
                    continue
                in_flight.add(handle)
                drained.clear()
                handle.add_done_callback(finished)
            await drained.wait()
        finally:
            responses.put(None)

    def _stream_response(self, handle: InferenceHandle) -> pb.ModelStreamInferResponse:
        request = handle.request
        try:
            response = self._service.complete(handle)
            reply = pb.ModelStreamInferResponse(infer_response=convert.response_to_pb(response))
            if response.trace is not None:
                response.trace.finish()
            return reply
        except ServerError as error:
            message = error.message
        except asyncio.CancelledError:
            message = "request cancelled"
        except Exception as exc:  # one bad request must not end the stream
            log.exception("unexpected error in a streamed request")
            message = f"internal error: {exc}"
        return _stream_error(request, message)

    # ---- model repository extension ----------------------------------------------------------

    @mapped_errors
    async def RepositoryModelLoad(self, request: pb.RepositoryModelLoadRequest, context: Ctx) -> pb.RepositoryModelLoadResponse:
        await self._service.load_model(request.model_name, convert.load_parameters_from_pb(request.parameters))
        return pb.RepositoryModelLoadResponse()

    @mapped_errors
    async def RepositoryModelUnload(self, request: pb.RepositoryModelUnloadRequest, context: Ctx) -> pb.RepositoryModelUnloadResponse:
        parameter = request.parameters.get("unload_dependents")
        unload_dependents = parameter is not None and parameter.WhichOneof("parameter_choice") == "bool_param" and parameter.bool_param
        await self._service.unload_model(request.model_name, unload_dependents)
        return pb.RepositoryModelUnloadResponse()

    # ---- trace extension ---------------------------------------------------------------------

    @mapped_errors
    async def TraceSetting(self, request: pb.TraceSettingRequest, context: Ctx) -> pb.TraceSettingResponse:
        settings = self._service.trace_settings(request.model_name, trace.settings_update_from_pb(request))
        return trace.settings_to_pb(settings)

    # ---- system shared memory (Triton's extension) ------------------------------------------

    @mapped_errors
    async def SystemSharedMemoryStatus(
        self, request: pb.SystemSharedMemoryStatusRequest, context: Ctx
    ) -> pb.SystemSharedMemoryStatusResponse:
        return convert.shared_memory_status_to_pb(self._service.system_shared_memory_status(request.name))

    @mapped_errors
    async def SystemSharedMemoryRegister(
        self, request: pb.SystemSharedMemoryRegisterRequest, context: Ctx
    ) -> pb.SystemSharedMemoryRegisterResponse:
        self._service.register_system_shared_memory(request.name, request.key, request.offset, request.byte_size)
        return pb.SystemSharedMemoryRegisterResponse()

    @mapped_errors
    async def SystemSharedMemoryUnregister(
        self, request: pb.SystemSharedMemoryUnregisterRequest, context: Ctx
    ) -> pb.SystemSharedMemoryUnregisterResponse:
        self._service.unregister_system_shared_memory(request.name)
        return pb.SystemSharedMemoryUnregisterResponse()

    # ---- CUDA shared memory: nothing can be registered, so status and unregister are trivial ---

    @mapped_errors
    async def CudaSharedMemoryStatus(self, request: pb.CudaSharedMemoryStatusRequest, context: Ctx) -> pb.CudaSharedMemoryStatusResponse:
        self._service.cuda_shared_memory_status(request.name)
        return pb.CudaSharedMemoryStatusResponse()

    @mapped_errors
    async def CudaSharedMemoryRegister(
        self, request: pb.CudaSharedMemoryRegisterRequest, context: Ctx
    ) -> pb.CudaSharedMemoryRegisterResponse:
        raise InferenceService.unsupported("cuda_shared_memory")

    @mapped_errors
    async def CudaSharedMemoryUnregister(
        self, request: pb.CudaSharedMemoryUnregisterRequest, context: Ctx
    ) -> pb.CudaSharedMemoryUnregisterResponse:
        self._service.unregister_cuda_shared_memory(request.name)
        return pb.CudaSharedMemoryUnregisterResponse()

    # ---- Triton extensions ortserve does not implement -------------------------------------

    @mapped_errors
    async def LogSettings(self, request: pb.LogSettingsRequest, context: Ctx) -> pb.LogSettingsResponse:
        raise InferenceService.unsupported("logging")


def _stream_error(request: pb.ModelInferRequest | InferRequest, message: str) -> pb.ModelStreamInferResponse:
    """A per-request error on a stream: the stream stays open and the response echoes the id."""
    return pb.ModelStreamInferResponse(
        error_message=message,
        infer_response=pb.ModelInferResponse(model_name=request.model_name, model_version=request.model_version, id=request.id),
    )
