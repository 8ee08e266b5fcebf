"""The engine's frontend processes: start them, notice when one dies, restart it, stop them all.

Each frontend gets two socketpairs (data, control) and two memfd arenas, inherited as file
descriptors: nothing listens on a path, and nothing is left in the filesystem when a process
dies. A frontend that dies while the server runs is restarted (after a pause that grows while
restarts keep failing quickly); its clients reconnect to the shared ports, where the other
frontends answer. At startup, a frontend that cannot listen stops the server.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import socket
import subprocess
import sys
import time
from dataclasses import dataclass

from server.observability import families
from server.remote.arena import Arena
from server.remote.frames import send_blocking
from server.remote.host import FrontendLink
from server.security.audit import AuditCounts
from server.service import InferenceService
from server.settings import Settings

log = logging.getLogger(__name__)

# Each direction's shared memory per frontend: virtual size (memfd pages exist once written).
ARENA_BYTES = 512 * 2**20
# How long a frontend may take to listen, and the longest pause between quick restarts.
START_TIMEOUT_SECS = 60.0
MAX_RESTART_PAUSE_SECS = 5.0
# A frontend that lived this long before dying is restarted at once.
STABLE_SECS = 10.0


class FrontendStartError(Exception):
    """A frontend process could not start listening; the message says why."""


@dataclass(slots=True)
class _Frontend:
    index: int
    process: subprocess.Popen[bytes]
    link: FrontendLink
    started_at: float


class Supervisor:
    def __init__(self, service: InferenceService, settings: Settings, count: int, arena_bytes: int = ARENA_BYTES) -> None:
        self._service, self._settings, self._count, self._arena_bytes = service, settings, count, arena_bytes
        self._frontends: dict[int, _Frontend] = {}
        self._watchers: set[asyncio.Task[None]] = set()
        self._stopping = False
        self.restarts = 0
        self._quick_restarts = 0
        # Requests handed over by frontends that have exited, by index (counters survive restarts).
        self._exited_submitted: dict[int, int] = {}
        # The audit counters of frontends that have exited (a restarted one starts from zero).
        self._exited_audits: list[AuditCounts] = []

    @property
    def pids(self) -> list[int]:
        return [frontend.process.pid for frontend in self._frontends.values()]

    def audit_counts(self) -> list[AuditCounts]:
        """Every frontend's audit counters, as last reported, those of exited ones included."""
        live = [frontend.link.audit for frontend in self._frontends.values() if frontend.link.audit is not None]
        return self._exited_audits + live

    def render_metrics(self) -> list[str]:
        """The frontend families of /metrics, read on the loop."""
        submitted = dict(self._exited_submitted)
        for index, frontend in self._frontends.items():
            submitted[index] = submitted.get(index, 0) + frontend.link.submitted
        connected = sum(not frontend.link.lost.is_set() for frontend in self._frontends.values())
        return (
            families.FRONTEND_REQUESTS.render(({"frontend": str(index)}, count) for index, count in sorted(submitted.items()))
            + families.FRONTEND_RESTARTS.render([({}, self.restarts)])
            + families.FRONTENDS_CONNECTED.render([({}, connected)])
        )

    async def start(self) -> None:
        """Start every frontend and wait until each listens. Raises FrontendStartError."""
        for index in range(self._count):
            await self._spawn(index)
        for frontend in list(self._frontends.values()):
            await self._until_listening(frontend)

    async def _spawn(self, index: int) -> _Frontend:
        data, data_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        control, control_child = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
        requests = Arena.create(f"ortserve-requests-{index}", self._arena_bytes)
        responses = Arena.create(f"ortserve-responses-{index}", self._arena_bytes)
        fds = (data_child.fileno(), control_child.fileno(), requests.fd, responses.fd)
        command = [sys.executable, "-m", "server.workers.frontend", "--index", str(index), "--arena-bytes", str(self._arena_bytes)]
        for flag, fd in zip(("--data-fd", "--control-fd", "--request-arena-fd", "--response-arena-fd"), fds):
            command += [flag, str(fd)]
        process = subprocess.Popen(command, pass_fds=fds)
        for child_end in (data_child, control_child):
            child_end.close()
        requests.close_fd()
        responses.close_fd()
        send_blocking(control, ("hello", self._settings))
        link = FrontendLink(self._service, f"frontend {index} (pid {process.pid})", requests, responses)
        await link.open(data, control)
        frontend = self._frontends[index] = _Frontend(index, process, link, time.monotonic())
        watcher = asyncio.ensure_future(self._watch(frontend))
        self._watchers.add(watcher)
        watcher.add_done_callback(self._watchers.discard)
        return frontend

    async def _until_listening(self, frontend: _Frontend) -> None:
        done, _ = await asyncio.wait({frontend.link.started}, timeout=START_TIMEOUT_SECS)
        failure = frontend.link.started.result() if done else f"not listening after {START_TIMEOUT_SECS:.0f}s"
        if failure is not None:
            raise FrontendStartError(f"{frontend.link.name}: {failure}")

    async def _watch(self, frontend: _Frontend) -> None:
        """Wait for the frontend's channel to close (it exited or died), reap it, restart it."""
        await frontend.link.lost.wait()
        code = await asyncio.get_running_loop().run_in_executor(None, frontend.process.wait)
        if self._frontends.get(frontend.index) is frontend:
            del self._frontends[frontend.index]
            self._exited_submitted[frontend.index] = self._exited_submitted.get(frontend.index, 0) + frontend.link.submitted
            if frontend.link.audit is not None:
                self._exited_audits.append(frontend.link.audit)
        if self._stopping or not frontend.link.started.done() or frontend.link.started.result() is not None:
            return
        lived = time.monotonic() - frontend.started_at
        log.error("%s exited with status %s after %.1fs; restarting it", frontend.link.name, code, lived)
        await self._restart(frontend.index, quick=lived < STABLE_SECS)

    async def _restart(self, index: int, quick: bool) -> None:
        self.restarts += 1
        self._quick_restarts = self._quick_restarts + 1 if quick else 0
        if self._quick_restarts > 1:
            await asyncio.sleep(min(MAX_RESTART_PAUSE_SECS, 0.1 * 2 ** (self._quick_restarts - 1)))
        if self._stopping:
            return
        try:
            await self._until_listening(await self._spawn(index))
        except FrontendStartError as exc:
            log.error("restarting frontend %d failed: %s", index, exc)

    async def stop(self, deadline: float) -> None:
        """Ask every frontend to drain and exit; kill what is left at ``deadline``."""
        self._stopping = True
        frontends = list(self._frontends.values())
        for frontend in frontends:
            frontend.link.stop()
        waits = [asyncio.get_running_loop().run_in_executor(None, f.process.wait) for f in frontends]
        if waits:
            _, pending = await asyncio.wait(waits, timeout=max(0.0, deadline - time.monotonic()))
            for frontend in frontends:
                if frontend.process.poll() is None:
                    log.warning("%s did not stop in time; killing it", frontend.link.name)
                    with contextlib.suppress(ProcessLookupError):
                        frontend.process.kill()
            if pending:
                await asyncio.wait(pending)
        for watcher in list(self._watchers):
            watcher.cancel()
