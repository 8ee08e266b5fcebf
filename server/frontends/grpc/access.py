"""The gRPC side of access control: a grpc.aio interceptor that puts the Guard in front of every
method (security/guard.py decides; this file reads the call and answers a refusal).

Each method's handler is wrapped once and cached: per call the cost is a dict lookup plus the
decision. A method missing from security/groups.py is refused (fail closed). Streams are checked
when they open and again for every request's model; a refused request ends the stream with the
refusal's status.
"""

from __future__ import annotations

import inspect
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeAlias

import grpc

from server.frontends.grpc.handlers import MalformedRequest
from server.frontends.grpc.status import status_details
from server.security.groups import GRPC_ENDPOINTS, ApiGroup, Endpoint
from server.security.guard import CallInfo, Decision, Denial, Guard, Protocol, Refusal

Ctx: TypeAlias = grpc.aio.ServicerContext
_STATUS = {Refusal.UNAUTHENTICATED: grpc.StatusCode.UNAUTHENTICATED, Refusal.PERMISSION_DENIED: grpc.StatusCode.PERMISSION_DENIED}
# The certificate fields grpc's auth context names (CN, then every kind of SAN).
_IDENTITY_KEYS = ("x509_common_name", "x509_subject_alternative_name", "peer_dns", "peer_uri", "peer_email", "peer_ip")


def peer_identities(context: Ctx) -> tuple[str, ...]:
    """The verified client certificate's CN and SANs (empty without mTLS)."""
    auth = context.auth_context()
    names: list[str] = []
    for key in _IDENTITY_KEYS:
        names += [value.decode("utf-8", "replace") for value in auth.get(key, ())]
    return tuple(dict.fromkeys(names))


def _model(endpoint: Endpoint, request: Any) -> str | None:
    if isinstance(request, MalformedRequest):
        return None
    return getattr(request, endpoint.model_field) if endpoint.model_field else ""


class _Call:
    """What the Guard needs from one call, with the metadata read once and only when asked."""

    def __init__(self, endpoint: Endpoint, context: Ctx) -> None:
        self.endpoint, self.context = endpoint, context
        self._metadata: dict[str, Any] | None = None

    def header(self, name: str) -> str | None:
        if self._metadata is None:
            self._metadata = dict(self.context.invocation_metadata() or ())
        value = self._metadata.get(name)
        return value if isinstance(value, str) else None

    def info(self, model: str | None) -> CallInfo:
        return CallInfo(Protocol.GRPC, self.endpoint, model, self.header, lambda: peer_identities(self.context), self.context.peer())


async def _refuse(context: Ctx, denial: Denial) -> None:
    await context.abort(_STATUS[denial.kind], status_details(denial.message))


class AccessInterceptor(grpc.aio.ServerInterceptor):  # type: ignore[misc]  # grpc ships no types: its base class is Any
    def __init__(self, guard: Guard) -> None:
        self._guard = guard
        self._wrapped: dict[str, grpc.RpcMethodHandler] = {}

    async def intercept_service(
        self, continuation: Callable[[grpc.HandlerCallDetails], Awaitable[grpc.RpcMethodHandler]], details: grpc.HandlerCallDetails
    ) -> grpc.RpcMethodHandler:
        method = details.method
        wrapped = self._wrapped.get(method)
        if wrapped is None:
            handler = await continuation(details)
            if handler is None:  # no such method: gRPC answers UNIMPLEMENTED
                return handler
            endpoint = GRPC_ENDPOINTS.get(method) or Endpoint(method, ApiGroup.MODEL_REPOSITORY)
            wrapped = self._wrapped[method] = _guarded(handler, endpoint, self._guard, method in GRPC_ENDPOINTS)
        return wrapped


def _guarded(handler: grpc.RpcMethodHandler, endpoint: Endpoint, guard: Guard, mapped: bool) -> grpc.RpcMethodHandler:
    def check(call: _Call, model: str | None) -> Decision:
        if not mapped:  # fail closed: an endpoint without a group is nobody's
            return Decision("anonymous", Denial(Refusal.PERMISSION_DENIED, "unmapped", f"no API group for '{endpoint.name}'"))
        return guard.check(call.info(model))

    if handler.unary_unary is not None:
        inner = handler.unary_unary

        async def unary_unary(request: Any, context: Ctx) -> Any:
            call = _Call(endpoint, context)
            model = _model(endpoint, request)
            decision = check(call, model)
            if decision.denial is not None:
                await _refuse(context, decision.denial)
            if not endpoint.action:
                return await inner(request, context)
            return await _audited(guard, endpoint, decision, model or "", context, inner(request, context))

        return grpc.unary_unary_rpc_method_handler(unary_unary, handler.request_deserializer, handler.response_serializer)
    if handler.unary_stream is not None:
        return grpc.unary_stream_rpc_method_handler(
            _streaming(handler.unary_stream, endpoint, check, per_request=False), handler.request_deserializer, handler.response_serializer
        )
    if handler.stream_stream is not None:
        return grpc.stream_stream_rpc_method_handler(
            _streaming(handler.stream_stream, endpoint, check, per_request=True), handler.request_deserializer, handler.response_serializer
        )
    return grpc.stream_unary_rpc_method_handler(
        _streaming(handler.stream_unary, endpoint, check, per_request=True), handler.request_deserializer, handler.response_serializer
    )


async def _audited(guard: Guard, endpoint: Endpoint, decision: Decision, model: str, context: Ctx, result: Awaitable[Any]) -> Any:
    """A load or unload: its outcome goes to the audit log whether it succeeds or not."""
    outcome = "ok"
    try:
        return await result
    except grpc.aio.AbortError:
        outcome = f"error: {context.code().name if context.code() else 'UNKNOWN'}"
        raise
    except BaseException as exc:
        outcome = f"error: {type(exc).__name__}"
        raise
    finally:
        guard.audit.action(decision.principal, endpoint.action, model, outcome, context.peer(), Protocol.GRPC.value)


def _streaming(inner: Callable[..., Any], endpoint: Endpoint, check: Callable[[_Call, str | None], Decision], per_request: bool) -> Any:
    """A wrapper of the same kind as ``inner`` (grpc.aio tells coroutine handlers, which write with
    ``context.write``, from async-generator ones by the function itself)."""

    async def opened(request: Any, context: Ctx) -> Any:
        call = _Call(endpoint, context)
        decision = check(call, None if per_request else _model(endpoint, request))
        if decision.denial is not None:
            await _refuse(context, decision.denial)
        return _checked_each(request, call, check, context) if per_request else request

    if inspect.isasyncgenfunction(inner):

        async def generator(request: Any, context: Ctx) -> AsyncIterator[Any]:
            async for response in inner(await opened(request, context), context):
                yield response

        return generator

    async def coroutine(request: Any, context: Ctx) -> Any:
        return await inner(await opened(request, context), context)

    return coroutine


async def _checked_each(requests: AsyncIterator[Any], call: _Call, check: Callable[[_Call, str | None], Decision], context: Ctx) -> Any:
    async for request in requests:
        decision = check(call, _model(call.endpoint, request))
        if decision.denial is not None:
            await _refuse(context, decision.denial)
        yield request
