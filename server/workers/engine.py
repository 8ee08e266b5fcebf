"""The engine process of ``ortserve --workers N``: models, batchers, statistics, ``/metrics``.

It is ``App`` without its gRPC and HTTP servers (those run in the frontends), plus a
``Supervisor`` for the frontend processes. Startup: frontends listen (live, not ready) → models
load → readiness may turn true. SIGTERM/SIGINT: readiness false and new requests refused at once
→ every frontend answers what it accepted and exits (bounded by --exit-timeout-secs) → models
unload → exit.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
import signal
import time

from server.app import App, StartupError
from server.security.audit import AuditCounts
from server.settings import Settings
from server.workers.supervisor import FrontendStartError, Supervisor

log = logging.getLogger(__name__)


class EngineApp(App):
    """App whose /metrics also shows the frontend processes."""

    supervisor: Supervisor | None = None

    def other_audits(self) -> list[AuditCounts]:
        return self.supervisor.audit_counts() if self.supervisor is not None else []

    def render_metrics(self) -> str:
        extra = self.supervisor.render_metrics() if self.supervisor is not None else []
        return super().render_metrics() + ("\n".join(extra) + "\n" if extra else "")


def engine_settings(settings: Settings) -> Settings:
    """The engine serves no gRPC or HTTP itself; /metrics stays with it (one exposition)."""
    return dataclasses.replace(settings, allow_grpc=False, allow_http=False)


async def serve_workers(settings: Settings) -> None:
    """Raises StartupError when a frontend cannot listen or (--exit-on-error) a model fails."""
    app = EngineApp(engine_settings(settings))
    supervisor = app.supervisor = Supervisor(app.service, settings, settings.workers)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    stopped = asyncio.ensure_future(app.wait_for_stop())
    try:
        await _start(app, supervisor, settings, stopped)
        await stopped
    finally:
        stopped.cancel()
        deadline = time.monotonic() + settings.exit_timeout_secs
        app.service.begin_shutdown()
        await supervisor.stop(deadline)
        await app.shutdown()


async def _start(app: App, supervisor: Supervisor, settings: Settings, stopped: asyncio.Future[None]) -> None:
    try:
        await supervisor.start()
    except FrontendStartError as exc:
        raise StartupError(str(exc)) from None
    grpc = f"{settings.host}:{settings.grpc_port}" if settings.allow_grpc else "off"
    http = f"{settings.host}:{settings.http_port}" if settings.allow_http else "off"
    log.info("%d frontend processes listening (SO_REUSEPORT): gRPC %s, HTTP %s; pids %s", settings.workers, grpc, http, supervisor.pids)
    starting = asyncio.ensure_future(app.start())
    await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
    if not starting.done():
        starting.cancel()
        log.info("shutdown requested during start-up: abandoning model loads")
    else:
        starting.result()
