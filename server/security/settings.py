"""Security settings: TLS per port, access control, the health port and model keys.

Built by server/security/flags.py from the command line; part of ``Settings.security``. The
defaults are today's behaviour: plaintext, no authentication, no health port.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from server.security.groups import ApiGroup
from server.security.restricted import Restriction


@dataclass(frozen=True, slots=True)
class TlsFiles:
    """One port's TLS settings: the server certificate (chain) and key, and with ``mutual``, the
    CA that client certificates must be signed by."""

    cert: Path
    key: Path
    root: Path | None = None
    mutual: bool = False

    def paths(self) -> tuple[Path, ...]:
        return (self.cert, self.key) if self.root is None else (self.cert, self.key, self.root)


@dataclass(frozen=True, slots=True)
class ModelKeySource:
    """Where the key of encrypted model files comes from when their config names none."""

    file: Path | None = None
    env: str | None = None


@dataclass(frozen=True, slots=True)
class SecuritySettings:
    grpc_tls: TlsFiles | None = None
    http_tls: TlsFiles | None = None
    metrics_tls: TlsFiles | None = None
    auth_config: Path | None = None
    grpc_restrictions: dict[ApiGroup, Restriction] = field(default_factory=dict)
    http_restrictions: dict[ApiGroup, Restriction] = field(default_factory=dict)
    disable_repository_api: bool = False
    # A plaintext port serving only GET /v2/health/live and /v2/health/ready, without
    # authentication (for Kubernetes probes when the HTTP port needs TLS or credentials); 0 = none.
    health_port: int = 0
    model_key: ModelKeySource = field(default_factory=ModelKeySource)

    @property
    def access_control(self) -> bool:
        """Whether any call can be refused (otherwise no interceptor or middleware is installed)."""
        return bool(self.auth_config or self.grpc_restrictions or self.http_restrictions or self.disable_repository_api)
