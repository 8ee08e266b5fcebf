"""Build and start the grpc.aio server: inference service, health and reflection."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import grpc
from google.protobuf import descriptor_pb2, descriptor_pool
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha import reflection, reflection_pb2

from server.frontends.grpc.convert import MAX_MESSAGE_BYTES
from server.frontends.grpc.handlers import add_inference_service, add_service
from server.frontends.grpc.health import INFERENCE_SERVICE_NAME, ReadinessHealthServicer
from server.frontends.grpc.servicer import InferenceServicer
from server.proto import grpc_service_pb2, model_config_pb2
from server.service import InferenceService


class GrpcFrontend:
    def __init__(
        self,
        service: InferenceService,
        host: str,
        port: int,
        extra_options: list[tuple[str, int]] | None = None,
        credentials: grpc.ServerCredentials | None = None,
        interceptors: Sequence[grpc.aio.ServerInterceptor] = (),
    ) -> None:
        """``credentials``: TLS (security/tls.py), else plaintext; ``interceptors``: access control."""
        # ``extra_options`` win over these defaults (e.g. a smaller receive limit); gRPC itself
        # would read the first of two same-named options, so they are merged here.
        options = dict([("grpc.max_send_message_length", MAX_MESSAGE_BYTES), ("grpc.max_receive_message_length", MAX_MESSAGE_BYTES)])
        options.update(extra_options or [])
        self._server = grpc.aio.server(options=list(options.items()), interceptors=list(interceptors) or None)
        self._health = ReadinessHealthServicer(service)
        add_inference_service(InferenceServicer(service), self._server)
        add_service(self._server, self._health, health_pb2.DESCRIPTOR.services_by_name["Health"], health_pb2)
        reflection.enable_server_reflection(
            [INFERENCE_SERVICE_NAME, health_pb2.DESCRIPTOR.services_by_name["Health"].full_name, reflection.SERVICE_NAME],
            self._server,
            pool=_reflection_pool(),
        )
        address = f"{host}:{port}"
        self.port = self._server.add_secure_port(address, credentials) if credentials else self._server.add_insecure_port(address)
        self._health_task: asyncio.Task[None] | None = None

    async def start(self) -> None:
        await self._server.start()
        self._health_task = asyncio.create_task(self._health.follow_readiness())

    async def announce_not_serving(self) -> None:
        """Tell health watchers at once (not on the next readiness poll) that we are going away."""
        await self._health.enter_graceful_shutdown()

    async def stop(self, grace_secs: float) -> None:
        """Stop accepting calls; calls still running get ``grace_secs`` to finish."""
        if self._health_task:
            self._health_task.cancel()
        await self._health.enter_graceful_shutdown()
        await self._server.stop(grace_secs)


def _reflection_pool() -> descriptor_pool.DescriptorPool:
    """Our protos live in a private pool (tritonclient owns the default one's inference.* names);
    reflection needs them plus health's, so it gets a pool of its own."""
    pool = descriptor_pool.DescriptorPool()
    for file in (model_config_pb2.DESCRIPTOR, grpc_service_pb2.DESCRIPTOR, health_pb2.DESCRIPTOR, reflection_pb2.DESCRIPTOR):
        proto = descriptor_pb2.FileDescriptorProto()
        file.CopyToProto(proto)
        pool.Add(proto)
    return pool
