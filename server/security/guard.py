"""The access decision for one call, shared by the gRPC interceptor and the HTTP middleware.

In order: the repository API switched off → refused; a Triton header restriction on the group →
the header must match; an auth config → the caller must be a principal (bearer token first, else
the mTLS client certificate) with a grant for the group and model, unless the group is public.
Without an auth config and restrictions every call is allowed, as before.

Missing or wrong credentials are UNAUTHENTICATED (HTTP 401), a known principal without the grant
is PERMISSION_DENIED (HTTP 403). Every refusal is counted and audited; no secret is logged.
"""

from __future__ import annotations

import enum
import hmac
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from server.security.audit import AuditLog
from server.security.auth_config import AuthPolicy
from server.security.groups import ApiGroup, Endpoint
from server.security.restricted import Restriction

ANONYMOUS = "anonymous"


class Protocol(enum.Enum):
    __hash__ = object.__hash__  # see ApiGroup

    GRPC = "grpc"
    HTTP = "http"
    METRICS = "metrics"


class Refusal(enum.Enum):
    UNAUTHENTICATED = "unauthenticated"
    PERMISSION_DENIED = "permission_denied"


@dataclass(frozen=True, slots=True)
class Denial:
    kind: Refusal
    reason: str  # the metric's label: missing_credentials, invalid_token, ...
    message: str


@dataclass(frozen=True, slots=True)
class Decision:
    principal: str
    denial: Denial | None = None


@dataclass(frozen=True, slots=True)
class CallInfo:
    """What a frontend knows about one call, read lazily where reading costs."""

    protocol: Protocol
    endpoint: Endpoint
    model: str | None  # None: not known (a request that could not be parsed)
    header: Callable[[str], str | None]  # lower-case name → value
    identities: Callable[[], Sequence[str]]  # the verified client certificate's CN and SANs
    peer: str


def _unauthenticated(reason: str, message: str) -> Decision:
    return Decision(ANONYMOUS, Denial(Refusal.UNAUTHENTICATED, reason, message))


class Guard:
    def __init__(
        self,
        restrictions: Mapping[Protocol, Mapping[ApiGroup, Restriction]],
        disable_repository_api: bool,
        audit: AuditLog,
        policy: AuthPolicy | None = None,
    ) -> None:
        self._restrictions = restrictions
        self._disable_repository_api = disable_repository_api
        self.audit = audit
        self.policy = policy  # replaced whole when the auth config reloads

    def check(self, call: CallInfo) -> Decision:
        """The decision; a refusal is counted and audited here."""
        decision = self._decide(call)
        if decision.denial is not None:
            endpoint, reason = call.endpoint, decision.denial.reason
            action = endpoint.action or endpoint.name
            self.audit.refusal(decision.principal, action, call.model or "", endpoint.group.value, reason, call.peer, call.protocol.value)
        return decision

    def _decide(self, call: CallInfo) -> Decision:
        group = call.endpoint.group
        if group is ApiGroup.MODEL_REPOSITORY and self._disable_repository_api:
            message = "the model repository API is disabled on this server (--disable-repository-api)"
            return Decision(ANONYMOUS, Denial(Refusal.PERMISSION_DENIED, "repository_api_disabled", message))
        restriction = self._restrictions.get(call.protocol, {}).get(group)
        if restriction is not None and not _matches(call.header(restriction.header), restriction.value):
            what = "protocol" if call.protocol is Protocol.GRPC else "API"
            return _unauthenticated("restricted_header", f"This {what} is restricted, expecting header '{restriction.header}'")
        policy = self.policy
        if policy is None or group in policy.public:
            return Decision(ANONYMOUS)
        return _authorise(policy, call)


def _matches(presented: str | None, expected: str) -> bool:
    return presented is not None and hmac.compare_digest(presented.encode("utf-8", "surrogateescape"), expected.encode())


def _authorise(policy: AuthPolicy, call: CallInfo) -> Decision:
    authorization = call.header("authorization")
    if authorization is not None:
        scheme, _, token = authorization.strip().partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            return _unauthenticated("invalid_credentials", "the authorization header must be 'Bearer <token>'")
        principal = policy.credentials.for_token(token.strip())
        if principal is None:
            return _unauthenticated("invalid_token", "the bearer token is not valid")
    else:
        identities = call.identities() if policy.uses_certificates else ()
        principal = policy.credentials.for_identities(identities)
        if principal is None:
            if identities:
                return _unauthenticated("unknown_certificate", "the client certificate names no known principal")
            return _unauthenticated("missing_credentials", "credentials are required: send 'authorization: Bearer <token>'")
    endpoint = call.endpoint
    if not principal.allows(endpoint.group, endpoint.scope, call.model):
        about = f" on model '{call.model}'" if call.model else ""
        message = f"principal '{principal.name}' is not granted the '{endpoint.group.value}' API{about}"
        return Decision(principal.name, Denial(Refusal.PERMISSION_DENIED, "not_granted", message))
    return Decision(principal.name)
