"""The auth config file (``--auth-config``): principals, their credentials and grants, in YAML or JSON.

::

    principals:
      - name: fraud-service
        tokens: ["sha256:9f86d0...0a08"]      # SHA-256 of each bearer token, never the token
        certificates: ["fraud.prod.svc"]      # client certificate CN or SAN (mTLS)
        grants:
          inference: ["fraud-*"]              # only models whose name matches
          metadata: ["fraud-*"]
          health: "*"                         # every model
      - name: admin
        tokens: ["sha256:..."]
        grants: {"*": "*"}                    # every group, every model
    public: [health]                          # groups anyone may call, credentials or not

A ``.json`` file is read as JSON, anything else as YAML. Every mistake is an AuthConfigError
naming the file and the entry; the file never holds a secret, so messages may quote it.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from server.security.groups import ApiGroup, parse_group
from server.security.principals import EVERY_MODEL, CredentialIndex, Principal

_DIGEST = re.compile(r"^(?:sha256:)?([0-9a-fA-F]{64})$")
_PRINCIPAL_KEYS = {"name", "tokens", "certificates", "grants"}
_TOP_KEYS = {"principals", "public"}
HASH_HINT = 'tokens are stored as their SHA-256 digest: printf %s "$TOKEN" | sha256sum'


class AuthConfigError(ValueError):
    """The auth config cannot be used; the message names the file and the entry."""


@dataclass(frozen=True, slots=True)
class AuthPolicy:
    """One loaded auth config: who is who, what each may call, and what anyone may call."""

    principals: tuple[Principal, ...] = ()
    credentials: CredentialIndex = field(default_factory=CredentialIndex)
    public: frozenset[ApiGroup] = frozenset()
    uses_certificates: bool = False


def load_auth_config(path: Path) -> AuthPolicy:
    """Raises AuthConfigError (also for a file that cannot be read or parsed)."""
    try:
        text = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise AuthConfigError(f"auth config '{path}': cannot read it: {exc}") from None
    try:
        document = json.loads(text) if path.suffix == ".json" else _yaml(text)
    except ValueError as exc:  # json.JSONDecodeError and yaml.YAMLError (wrapped below)
        raise AuthConfigError(f"auth config '{path}': not valid {'JSON' if path.suffix == '.json' else 'YAML'}: {exc}") from None
    try:
        return parse_auth_config(document)
    except AuthConfigError as exc:
        raise AuthConfigError(f"auth config '{path}': {exc}") from None


def _yaml(text: str) -> Any:
    import yaml  # imported here: only YAML auth configs need it

    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as exc:
        raise ValueError(str(exc)) from None


def parse_auth_config(document: Any) -> AuthPolicy:
    if document is None:
        document = {}
    if not isinstance(document, dict):
        raise AuthConfigError("the top level must be a mapping with 'principals' (and optionally 'public')")
    if unknown := set(document) - _TOP_KEYS:
        raise AuthConfigError(f"unknown top-level key(s) {sorted(unknown)} (allowed: {sorted(_TOP_KEYS)})")
    entries = document.get("principals") or []
    if not isinstance(entries, list):
        raise AuthConfigError("'principals' must be a list")
    principals: list[Principal] = []
    tokens: dict[bytes, Principal] = {}
    identities: dict[str, Principal] = {}
    for index, entry in enumerate(entries):
        where = f"principals[{index}]"
        principal, digests, names = _principal(entry, where)
        if any(p.name == principal.name for p in principals):
            raise AuthConfigError(f"{where}: principal name '{principal.name}' is used twice")
        for digest in digests:
            if digest in tokens:
                raise AuthConfigError(f"{where}: a token of '{principal.name}' is also a token of '{tokens[digest].name}'")
            tokens[digest] = principal
        for name in names:
            if name in identities:
                raise AuthConfigError(f"{where}: certificate identity '{name}' also belongs to '{identities[name].name}'")
            identities[name] = principal
        principals.append(principal)
    return AuthPolicy(
        principals=tuple(principals),
        credentials=CredentialIndex(tuple(tokens.items()), identities),
        public=frozenset(_groups(document.get("public") or [], "public")),
        uses_certificates=bool(identities),
    )


def _principal(entry: Any, where: str) -> tuple[Principal, list[bytes], list[str]]:
    if not isinstance(entry, dict):
        raise AuthConfigError(f"{where}: each principal must be a mapping with 'name' and 'grants'")
    if unknown := set(entry) - _PRINCIPAL_KEYS:
        raise AuthConfigError(f"{where}: unknown key(s) {sorted(unknown)} (allowed: {sorted(_PRINCIPAL_KEYS)})")
    name = entry.get("name")
    if not isinstance(name, str) or not name.strip():
        raise AuthConfigError(f"{where}: 'name' must be a non-empty string")
    where = f"{where} ('{name}')"
    digests = [_digest(token, f"{where}.tokens[{i}]") for i, token in enumerate(_string_list(entry.get("tokens"), f"{where}.tokens"))]
    names = _string_list(entry.get("certificates"), f"{where}.certificates")
    if not digests and not names:
        raise AuthConfigError(f"{where}: give 'tokens' or 'certificates', or the principal can never be recognised")
    return Principal(name, _grants(entry.get("grants"), f"{where}.grants")), digests, names


def _digest(value: str, where: str) -> bytes:
    match = _DIGEST.match(value.strip())
    if not match:
        raise AuthConfigError(f"{where}: expected 'sha256:<64 hex digits>' ({HASH_HINT})")
    return bytes.fromhex(match[1])


def _string_list(value: Any, where: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
        raise AuthConfigError(f"{where}: expected a list of non-empty strings")
    return value


def _groups(value: Any, where: str) -> list[ApiGroup]:
    names = _string_list(value, where)
    if EVERY_MODEL in names:
        return list(ApiGroup)
    try:
        return [parse_group(name) for name in names]
    except ValueError as exc:
        raise AuthConfigError(f"{where}: {exc}") from None


def _grants(value: Any, where: str) -> dict[ApiGroup, tuple[str, ...]]:
    """``{group: globs}`` (globs a list, "*" or null for every model), or a list of groups."""
    if value is None:
        return {}
    if isinstance(value, list):
        return {group: (EVERY_MODEL,) for group in _groups(value, where)}
    if not isinstance(value, dict):
        raise AuthConfigError(f"{where}: expected a mapping of API group to model names, or a list of API groups")
    grants: dict[ApiGroup, tuple[str, ...]] = {}
    # "*" first, so that a group named on its own narrows it whatever the order in the file.
    for name, models in sorted(value.items(), key=lambda item: item[0] != EVERY_MODEL):
        globs = tuple(_string_list(EVERY_MODEL if models is None else models, f"{where}.{name}"))
        if not globs:
            raise AuthConfigError(f"{where}.{name}: an empty list grants nothing; remove the group instead")
        for group in _groups([str(name)], where):
            grants[group] = globs
    return grants
