"""grpc.health.v1.Health: SERVING exactly when the server is ready (as Triton does)."""

from __future__ import annotations

import asyncio

import grpc
from grpc_health.v1 import health_pb2
from grpc_health.v1._async import HealthServicer

from server.frontends.grpc.handlers import MalformedRequest
from server.service import InferenceService

INFERENCE_SERVICE_NAME = "inference.GRPCInferenceService"
_KNOWN_SERVICES = ("", INFERENCE_SERVICE_NAME)


class ReadinessHealthServicer(HealthServicer):  # type: ignore[misc]  # grpc_health ships no types: its base class is Any
    """Check answers from live readiness; Watch streams are fed by ``follow_readiness``."""

    def __init__(self, service: InferenceService) -> None:
        super().__init__()
        self._service = service

    def _status(self) -> health_pb2.HealthCheckResponse.ServingStatus:
        ready = self._service.is_ready()
        return health_pb2.HealthCheckResponse.SERVING if ready else health_pb2.HealthCheckResponse.NOT_SERVING

    async def Check(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> health_pb2.HealthCheckResponse:
        await _refuse_malformed(request, context)
        if request.service not in _KNOWN_SERVICES:
            await context.abort(grpc.StatusCode.NOT_FOUND, f"unknown service '{request.service}'")
        return health_pb2.HealthCheckResponse(status=self._status())

    async def Watch(self, request: health_pb2.HealthCheckRequest, context: grpc.aio.ServicerContext) -> None:
        await _refuse_malformed(request, context)
        await super().Watch(request, context)

    async def follow_readiness(self, interval_secs: float = 0.5) -> None:
        """Keep Watch subscribers current; runs until cancelled."""
        last = None
        while True:
            status = self._status()
            if status != last:
                for name in _KNOWN_SERVICES:
                    await self._set(name, status)
                last = status
            await asyncio.sleep(interval_secs)


async def _refuse_malformed(request: object, context: grpc.aio.ServicerContext) -> None:
    if isinstance(request, MalformedRequest):
        await context.abort(grpc.StatusCode.INVALID_ARGUMENT, request.describe())
