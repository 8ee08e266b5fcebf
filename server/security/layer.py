"""What the composition root (app.py) gets from server/security/: TLS for each port, the access
hooks for the gRPC server and the aiohttp apps, the auth config watcher, the startup warning and
the security metrics. Built once at startup; raises SecurityStartupError for unusable files.
"""

from __future__ import annotations

import asyncio
import logging
import os
import ssl
from collections import Counter
from collections.abc import Sequence
from pathlib import Path

import grpc

from server.observability import families
from server.security.audit import AuditCounts, AuditLog
from server.security.auth_config import AuthConfigError, AuthPolicy, load_auth_config
from server.security.groups import ApiGroup
from server.security.guard import Guard, Protocol
from server.security.settings import SecuritySettings, TlsFiles
from server.security.tls import ReloadingCertificate, TlsError, grpc_server_credentials, http_ssl_context

log = logging.getLogger(__name__)

# How often the auth config file is checked for changes.
AUTH_CONFIG_POLL_SECS = 1.0


class SecurityStartupError(Exception):
    """A certificate or auth config file cannot be used; the message names it."""


def _file_signature(path: Path) -> tuple[int, int, int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return (st.st_mtime_ns, st.st_ctime_ns, st.st_size, st.st_ino)


class AuthConfigWatcher:
    """Reloads the auth config when its file changes; a file that does not load keeps the last
    good one in force (and says why in the log)."""

    def __init__(self, path: Path, guard: Guard) -> None:
        self._path, self._guard = path, guard
        self._signature = _file_signature(path)
        self.reloads: Counter[str] = Counter()

    def poll(self) -> bool:
        """True when a changed file was loaded."""
        signature = _file_signature(self._path)
        if signature == self._signature:
            return False
        self._signature = signature
        try:
            policy = load_auth_config(self._path)
        except AuthConfigError as exc:
            self.reloads["error"] += 1
            log.error("auth config not reloaded, the previous one stays in force: %s", exc)
            return False
        self._guard.policy = policy
        self.reloads["ok"] += 1
        log.info("auth config reloaded from '%s': %d principal(s)", self._path, len(policy.principals))
        return True

    async def run(self) -> None:
        while True:
            await asyncio.sleep(AUTH_CONFIG_POLL_SECS)
            self.poll()


class SecurityLayer:
    def __init__(self, settings: SecuritySettings) -> None:
        self.settings = settings
        self.audit = AuditLog()
        self._certificates = {port: self._certificate(files, port) for port, files in self._tls_ports().items()}
        policy = self._initial_policy()
        self.guard: Guard | None = None
        self._watcher: AuthConfigWatcher | None = None
        if settings.access_control:
            restrictions = {Protocol.GRPC: settings.grpc_restrictions, Protocol.HTTP: settings.http_restrictions}
            self.guard = Guard(restrictions, settings.disable_repository_api, self.audit, policy)
            if settings.auth_config is not None:
                self._watcher = AuthConfigWatcher(settings.auth_config, self.guard)

    def _tls_ports(self) -> dict[str, TlsFiles]:
        s = self.settings
        ports = {"gRPC": s.grpc_tls, "HTTP": s.http_tls, "metrics": s.metrics_tls}
        return {port: files for port, files in ports.items() if files is not None}

    @staticmethod
    def _certificate(files: TlsFiles, port: str) -> ReloadingCertificate:
        try:
            return ReloadingCertificate(files, port)
        except TlsError as exc:
            raise SecurityStartupError(str(exc)) from None

    def _initial_policy(self) -> AuthPolicy | None:
        if self.settings.auth_config is None:
            return None
        try:
            policy = load_auth_config(self.settings.auth_config)
        except AuthConfigError as exc:
            raise SecurityStartupError(str(exc)) from None
        public = ", ".join(sorted(g.value for g in policy.public)) or "none"
        log.info("auth config '%s': %d principal(s); public groups: %s", self.settings.auth_config, len(policy.principals), public)
        return policy

    # ---- for app.py ----------------------------------------------------------------------------

    def grpc_credentials(self) -> grpc.ServerCredentials | None:
        certificate = self._certificates.get("gRPC")
        return grpc_server_credentials(certificate) if certificate else None

    def guard_for(self, protocol: Protocol) -> Guard | None:
        """The guard the frontend of ``protocol`` consults (None: every call passes). Each frontend
        adapts its wire to it (frontends/*/access.py); app.py plugs them together."""
        # Only the auth config speaks for the metrics port (Triton's restrictions are per API).
        if protocol is Protocol.METRICS and self.settings.auth_config is None:
            return None
        return self.guard

    def ssl_context(self, port: str) -> ssl.SSLContext | None:
        certificate = self._certificates.get(port)
        return http_ssl_context(certificate) if certificate else None

    def background_tasks(self) -> list[asyncio.Task[None]]:
        return [asyncio.create_task(self._watcher.run())] if self._watcher else []

    def log_posture(self, explicit_mode: bool) -> None:
        """The one warning about an open model repository API, and what is encrypted."""
        s = self.settings
        protocols = (("gRPC", s.grpc_restrictions), ("HTTP", s.http_restrictions))
        open_on = [name for name, rules in protocols if ApiGroup.MODEL_REPOSITORY not in rules]
        if open_on and not s.auth_config and not s.disable_repository_api:
            what = "load and unload models (and upload model files)" if explicit_mode else "read the repository index"
            log.warning(
                "the model repository API is open over %s: anyone who can reach this server can %s. Set --auth-config, "
                "--disable-repository-api or a model-repository restriction (docs/security.md)",
                " and ".join(open_on),
                what,
            )
        plaintext = [p for p, files in (("gRPC", s.grpc_tls), ("HTTP", s.http_tls), ("metrics", s.metrics_tls)) if files is None]
        if len(plaintext) < 3:
            log.info("TLS on %s; plaintext: %s", ", ".join(self._certificates), ", ".join(plaintext) or "none")

    def render_metrics(self, other_audits: Sequence[AuditCounts] = ()) -> list[str]:
        """The security families; ``other_audits``: the frontend processes' counters (--workers)."""
        lines = self.audit.render_metrics(other_audits)
        reloads = self._watcher.reloads if self._watcher else Counter()
        lines += families.AUTH_CONFIG_RELOADS.render(
            (({"outcome": outcome}, reloads[outcome]) for outcome in ("ok", "error")) if self._watcher else ()
        )
        return lines
