"""gRPC method handlers built from a service descriptor with request deserializers that never
raise (for GRPCInferenceService and grpc.health.v1.Health).

grpc's own handlers (the generated code) let a protobuf DecodeError escape, which the client sees
as UNKNOWN and the log as a traceback per request. Here a message that does not parse becomes a
``MalformedRequest`` value; the servicer answers it with INVALID_ARGUMENT and the log gets one
throttled line.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import grpc

from server.observability.logging import ThrottledLog
from server.proto import grpc_service_pb2 as pb

log = logging.getLogger(__name__)
_malformed_log = ThrottledLog(log)


@dataclass(frozen=True, slots=True)
class MalformedRequest:
    """A request message that could not be parsed: what it should have been and why it is not."""

    message_type: str
    reason: str

    def describe(self) -> str:
        return f"failed to parse the {self.message_type} message: {self.reason}"


def safe_deserializer(message_class: Any) -> Callable[[bytes], Any]:
    name = message_class.DESCRIPTOR.name

    def deserialize(data: bytes) -> Any:
        try:
            return message_class.FromString(data)
        except Exception as exc:  # DecodeError, and anything else a hostile payload provokes
            _malformed_log.warning("refused a malformed %s message of %d bytes: %s", name, len(data), exc)
            return MalformedRequest(name, str(exc) or type(exc).__name__)

    return deserialize


_FACTORIES = {
    (False, False): grpc.unary_unary_rpc_method_handler,
    (False, True): grpc.unary_stream_rpc_method_handler,
    (True, False): grpc.stream_unary_rpc_method_handler,
    (True, True): grpc.stream_stream_rpc_method_handler,
}


def method_handlers(servicer: object, service: Any, messages: Any) -> dict[str, grpc.RpcMethodHandler]:
    """Every method of ``service`` (a ServiceDescriptor whose message classes live in the module
    ``messages``), bound to ``servicer``'s method of the same name."""
    handlers = {}
    for method in service.methods:
        factory = _FACTORIES[(method.client_streaming, method.server_streaming)]
        handlers[method.name] = factory(
            getattr(servicer, method.name),
            request_deserializer=safe_deserializer(getattr(messages, method.input_type.name)),
            response_serializer=getattr(messages, method.output_type.name).SerializeToString,
        )
    return handlers


def add_service(server: grpc.aio.Server, servicer: object, service: Any, messages: Any) -> None:
    handlers = method_handlers(servicer, service, messages)
    server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(service.full_name, handlers),))
    # Registered methods skip grpc's per-call lookup by name (what current generated code does).
    server.add_registered_method_handlers(service.full_name, handlers)


def add_inference_service(servicer: object, server: grpc.aio.Server) -> None:
    add_service(server, servicer, pb.DESCRIPTOR.services_by_name["GRPCInferenceService"], pb)
