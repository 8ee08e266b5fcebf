"""One frontend process of ``ortserve --workers N`` (started by the engine, never by hand).

    python -m server.workers.frontend --index I --data-fd A --control-fd B --request-arena-fd C --response-arena-fd D --arena-bytes N

It reads its Settings from the engine's first message, serves gRPC and HTTP on the shared ports
(SO_REUSEPORT) with a ``RemoteService`` as its InferenceService, and exits when the engine asks
it to (after answering every request it accepted), on SIGTERM (the same), or at once when the
engine is gone (its requests fail with UNAVAILABLE; exit status 1). SIGINT is left to the
engine, which stops every frontend in order.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import signal
import socket
import sys
import time
from collections.abc import Sequence
from typing import cast

from server.app import LAME_DUCK_SECS, StartupError, request_frontends
from server.frontends.grpc.server import GrpcFrontend
from server.frontends.http.server import HttpSite
from server.remote.arena import Arena
from server.remote.frames import receive_blocking
from server.remote.proxy import RemoteService
from server.security.layer import SecurityLayer, SecurityStartupError
from server.service import InferenceService
from server.settings import Settings

# Named, not __name__: run with -m, this module is __main__.
log = logging.getLogger("server.workers.frontend")


class FrontendServers:
    """The gRPC and HTTP servers of one frontend process, on ports shared with the others."""

    def __init__(self, settings: Settings, service: RemoteService) -> None:
        self._settings, self._service = settings, service
        self._grpc: GrpcFrontend | None = None
        self._sites: list[HttpSite] = []
        self._background: list[asyncio.Task[None]] = []

    async def start(self) -> None:
        """Raises OSError / StartupError when a port cannot be bound or TLS / auth files are unusable.

        Each frontend holds its own SecurityLayer: the same certificate and auth files, each
        process reloading them when they change.
        """
        try:
            security = SecurityLayer(self._settings.security)
        except SecurityStartupError as exc:
            raise StartupError(str(exc)) from None
        self._background += security.background_tasks()
        self._background.append(asyncio.create_task(_report_audit(security, self._service)))
        self._grpc, self._sites = request_frontends(self._settings, cast(InferenceService, self._service), security, reuse_port=True)
        if self._grpc:
            await self._grpc.start()
        for site in self._sites:
            await site.start()

    async def drain_and_stop(self, deadline: float, engine_alive: bool) -> None:
        """Refuse new requests, answer the accepted ones (until ``deadline``), then close."""
        self._service.begin_shutdown()
        if self._grpc:
            await self._grpc.announce_not_serving()
        idle = asyncio.ensure_future(self._service.wait_idle())
        done, _ = await asyncio.wait({idle}, timeout=max(0.0, deadline - time.monotonic()))
        if not done:
            idle.cancel()
            log.warning("exit timeout reached with requests still in flight")
        if self._grpc:
            if engine_alive:  # clients that have not seen NOT_SERVING yet get UNAVAILABLE, not a cut
                await asyncio.sleep(min(LAME_DUCK_SECS, max(0.0, deadline - time.monotonic())))
            await self._grpc.stop(grace_secs=min(max(0.0, deadline - time.monotonic()), 1.0))
        for site in self._sites:
            await site.stop()
        for task in self._background:
            task.cancel()


# How often a frontend looks whether its audit counters changed and, if so, reports them.
AUDIT_REPORT_SECS = 0.5


async def _report_audit(security: SecurityLayer, service: RemoteService) -> None:
    """The engine renders /metrics; refusals are counted here, where the calls arrive."""
    reported = None
    while True:
        counts = security.audit.counts()
        if counts != reported:
            service.report_audit(counts)
            reported = counts
        await asyncio.sleep(AUDIT_REPORT_SECS)


async def serve_frontend(settings: Settings, service: RemoteService) -> int:
    """Run until told to stop; the exit status (1 when the engine went away)."""
    stopping = asyncio.Event()
    engine_lost = False

    def lose_engine() -> None:
        nonlocal engine_lost
        engine_lost = True
        stopping.set()

    service.on_stop, service.on_engine_lost = stopping.set, lose_engine
    await service.open()
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, stopping.set)
    servers = FrontendServers(settings, service)
    try:
        await servers.start()
    except (OSError, StartupError) as exc:  # aiohttp: OSError; grpcio's "Failed to bind" and TLS files: StartupError
        service.report_started(f"cannot listen: {exc}")
        await asyncio.sleep(0)  # let the report leave before the process does
        return 1
    service.report_started(None)
    await stopping.wait()
    if engine_lost:
        log.error("the inference engine process exited; this frontend stops")
    await servers.drain_and_stop(time.monotonic() + settings.exit_timeout_secs, engine_alive=not engine_lost)
    return 1 if engine_lost else 0


def _parse(argv: Sequence[str]) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m server.workers.frontend")
    for name in ("--index", "--data-fd", "--control-fd", "--request-arena-fd", "--response-arena-fd", "--arena-bytes"):
        parser.add_argument(name, type=int, required=True)
    return parser.parse_args(argv)


def main(argv: Sequence[str] | None = None) -> int:
    import uvloop

    from server.observability.logging import configure_logging

    args = _parse(sys.argv[1:] if argv is None else argv)
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the engine orders the stop (Ctrl-C reaches the whole group)
    control = socket.socket(fileno=args.control_fd)
    data = socket.socket(fileno=args.data_fd)
    _, settings = receive_blocking(control)
    configure_logging(settings.log_format, settings.log_verbose)
    request_arena, response_arena = Arena(args.request_arena_fd, args.arena_bytes), Arena(args.response_arena_fd, args.arena_bytes)

    async def run() -> int:
        return await serve_frontend(settings, RemoteService(data, control, request_arena, response_arena))

    return uvloop.run(run())


if __name__ == "__main__":
    sys.exit(main())
