"""Principals, their grants, and how a request's credentials find one.

A principal is a name with grants: API groups, each optionally narrowed to model-name globs
(``fnmatch`` syntax, case-sensitive: ``fraud-*``). It proves itself with a bearer token, kept only
as its SHA-256 digest, or with a client certificate (mTLS), matched by subject CN or SAN.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from fnmatch import fnmatchcase

from server.security.groups import ApiGroup, Scope

EVERY_MODEL = "*"


@dataclass(frozen=True, slots=True)
class Principal:
    name: str
    # group → model globs; a group that is absent is not granted.
    grants: Mapping[ApiGroup, tuple[str, ...]] = field(default_factory=dict)

    def allows(self, group: ApiGroup, scope: Scope, model: str | None) -> bool:
        """Whether this principal may call an endpoint of ``group`` about ``model``.

        ``model`` None: the request could not be read (it is refused later for that), so only
        the group is checked. A request about every model needs the group for every model.
        """
        globs = self.grants.get(group)
        if globs is None:
            return False
        if scope is Scope.NONE or model is None:
            return True
        every_model = EVERY_MODEL in globs
        if scope is Scope.ALL or (scope is Scope.MODEL_OR_ALL and not model):
            return every_model
        return every_model or any(fnmatchcase(model, glob) for glob in globs)


def token_digest(token: str) -> bytes:
    return hashlib.sha256(token.encode("utf-8", "surrogateescape")).digest()


@dataclass(frozen=True, slots=True)
class CredentialIndex:
    """Finds the principal of a token or of certificate identities."""

    tokens: tuple[tuple[bytes, Principal], ...] = ()
    identities: Mapping[str, Principal] = field(default_factory=dict)

    def for_token(self, token: str) -> Principal | None:
        """Compares the token's digest with every stored digest, in constant time each and
        without stopping at a match, so the time taken says nothing about which one matched."""
        digest = token_digest(token)
        found = None
        for stored, principal in self.tokens:
            if hmac.compare_digest(stored, digest):
                found = principal
        return found

    def for_identities(self, identities: Iterable[str]) -> Principal | None:
        for identity in identities:
            principal = self.identities.get(identity)
            if principal is not None:
                return principal
        return None
