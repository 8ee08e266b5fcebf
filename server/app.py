"""Composition root: build the objects, start them in order, run until a signal, shut down.

Startup: load models → start gRPC, HTTP and metrics → readiness may turn true.
Shutdown (SIGTERM/SIGINT): readiness false and new requests refused at once → in-flight requests
finish (bounded by --exit-timeout-secs) → servers stop → models unload → exit.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time

from server.frontends.grpc.access import AccessInterceptor
from server.frontends.grpc.server import GrpcFrontend
from server.frontends.http.access import access_middleware
from server.frontends.http.health import health_port_app
from server.frontends.http.server import ConnectionLimits, HttpSite, build_http_app, build_metrics_app
from server.lifecycle.manager import ModelManager
from server.observability.metrics import (
    render_cache_metrics,
    render_inference_metrics,
    render_latency_histograms,
    render_shared_memory_metrics,
)
from server.observability.system_metrics import SystemMetrics
from server.observability.trace_setup import build_tracer
from server.scheduling.response_cache import CacheSettings, ResponseCache
from server.security.audit import AuditCounts
from server.security.guard import Protocol
from server.security.layer import SecurityLayer, SecurityStartupError
from server.service import InferenceService
from server.service.inflight import InflightBudget, default_budget_bytes, machine_memory_bytes
from server.service.sample_capture import SampleCapture
from server.service.shared_memory import SharedMemoryLimits, SharedMemoryRegistry
from server.settings import ModelControlMode, Settings

log = logging.getLogger(__name__)


# gRPC calls accepted and waiting for the event loop, and concurrent calls per connection.
GRPC_MAX_PENDING_CALLS = 20_000
GRPC_MAX_STREAMS_PER_CONNECTION = 1024


def grpc_options(settings: Settings) -> list[tuple[str, int]]:
    """The gRPC server's limits (README "Limits") and, when set, connection ageing: gRPC keeps
    connections for ever, and ageing them out lets clients spread over new replicas."""
    options = [
        ("grpc.max_receive_message_length", settings.grpc_max_receive_bytes),
        ("grpc.max_allowed_incoming_connections", settings.grpc_max_connections),
        ("grpc.server_handshake_timeout_ms", int(settings.grpc_handshake_timeout_secs * 1000)),
        # Calls gRPC has accepted but the server has not picked up yet: past 1,000 gRPC cancels the
        # oldest (a burst saw 10 % CANCELLED before ortserve could refuse them with UNAVAILABLE);
        # past the hard limit it refuses new ones with RESOURCE_EXHAUSTED at once.
        ("grpc.server.max_pending_requests", GRPC_MAX_PENDING_CALLS),
        ("grpc.server.max_pending_requests_hard_limit", GRPC_MAX_PENDING_CALLS),
        ("grpc.max_concurrent_streams", GRPC_MAX_STREAMS_PER_CONNECTION),
    ]
    if settings.grpc_max_connection_idle_secs:
        options.append(("grpc.max_connection_idle_ms", int(settings.grpc_max_connection_idle_secs * 1000)))
    if settings.grpc_max_connection_age_ms:
        options.append(("grpc.max_connection_age_ms", settings.grpc_max_connection_age_ms))
        options.append(("grpc.max_connection_age_grace_ms", settings.grpc_max_connection_age_grace_ms))
    return options


# How long a stopping server keeps answering UNAVAILABLE before closing gRPC connections.
LAME_DUCK_SECS = 0.5


class StartupError(Exception):
    """The server cannot start; the message is shown to the user."""


class App:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.system_metrics = SystemMetrics(cpu=settings.allow_cpu_metrics, gpu=settings.allow_gpu_metrics)
        # One cache for every model that enables it, as Triton's local cache is.
        self.response_cache = (
            ResponseCache(CacheSettings(settings.cache_size_bytes, settings.cache_ttl_secs)) if settings.cache_size_bytes else None
        )
        self.manager = ModelManager(settings, self.response_cache)
        budget = InflightBudget(settings.max_inflight_bytes or default_budget_bytes())
        shm_bytes = settings.max_shm_bytes or machine_memory_bytes()
        shm_limits = SharedMemoryLimits(settings.allow_client_shm, settings.max_shm_regions, shm_bytes)
        self.shared_memory = SharedMemoryRegistry(shm_limits)
        self.capture = _sample_capture(settings)
        self.tracer = build_tracer(settings.trace, settings.server_id)
        self.service = InferenceService(
            self.manager,
            settings.strict_readiness,
            settings.server_id,
            settings.model_control_mode,
            budget,
            self.shared_memory,
            self.capture,
            self.tracer,
        )
        self.security: SecurityLayer | None = None  # built at start: it reads certificate and auth files
        self._stop = asyncio.Event()
        self._grpc: GrpcFrontend | None = None
        self._sites: list[HttpSite] = []
        self._background: list[asyncio.Task[None]] = []

    def render_metrics(self) -> str:
        serving = self.manager.all_serving()
        lines = render_inference_metrics(serving) + self.system_metrics.render() + render_latency_histograms(serving)
        lines += render_cache_metrics(self.response_cache) + render_shared_memory_metrics(self.shared_memory, self.shared_memory.enabled)
        lines += self.security.render_metrics(self.other_audits()) if self.security else []
        return "\n".join(lines) + "\n"

    def other_audits(self) -> list[AuditCounts]:
        """Audit counters kept outside this process (none here; the frontends' under --workers)."""
        return []

    async def start(self) -> None:
        """Listen at once (live, not ready), load models, then readiness may turn true.

        Raises StartupError when --exit-on-error is set and a model failed.
        """
        s = self.settings
        started = time.monotonic()
        await self._start_frontends()
        await self.manager.load_initial()
        failed = [e for e in await self.manager.index(ready_only=False) if e.state.value not in ("READY",) and e.reason != "not loaded"]
        if failed and s.exit_on_error:
            raise StartupError("; ".join(f"model '{e.name}' version {e.version or '-'}: {e.reason}" for e in failed))
        if s.model_control_mode is ModelControlMode.POLL:
            self._background.append(asyncio.create_task(self.manager.poll_forever(s.repository_poll_secs)))
        self.service.mark_started()
        log.info("ortserve ready to serve after %.2fs (model control mode: %s)", time.monotonic() - started, s.model_control_mode.value)

    async def _start_frontends(self) -> None:
        s = self.settings
        try:
            security = self.security = SecurityLayer(s.security)
        except SecurityStartupError as exc:
            raise StartupError(str(exc)) from None
        security.log_posture(s.model_control_mode is ModelControlMode.EXPLICIT)
        self._background += security.background_tasks()
        self._grpc, self._sites = request_frontends(s, self.service, security)
        if s.allow_metrics:
            metrics_app = build_metrics_app(self.render_metrics, _http_guarded(security, Protocol.METRICS))
            self._sites.append(HttpSite(metrics_app, s.host, s.metrics_port, ConnectionLimits(), security.ssl_context("metrics")))
            self._background.append(asyncio.create_task(self.system_metrics.run(s.metrics_interval_ms / 1000)))
        if s.security.health_port:  # plaintext and unauthenticated, only when asked (docs/security.md)
            self._sites.append(HttpSite(health_port_app(self.service), s.host, s.security.health_port, ConnectionLimits()))
        if self._grpc:
            await self._grpc.start()
        for site in self._sites:
            try:
                await site.start()
            except OSError as exc:  # aiohttp names the address, e.g. "... address already in use"
                raise StartupError(f"cannot listen: {exc}") from None
        log.info(
            "listening: gRPC %s, HTTP %s, metrics %s",
            f"{s.host}:{s.grpc_port}" if s.allow_grpc else "off",
            f"{s.host}:{s.http_port}" if s.allow_http else "off",
            f"{s.host}:{s.metrics_port}" if s.allow_metrics else "off",
        )

    def request_stop(self) -> None:
        if not self._stop.is_set():
            log.info("shutdown requested: refusing new requests, draining in-flight ones")
            self.service.begin_shutdown()
            self._stop.set()

    async def wait_for_stop(self) -> None:
        await self._stop.wait()

    async def run_until_stopped(self) -> None:
        await self._stop.wait()
        await self.shutdown()

    async def shutdown(self) -> None:
        """Bounded by --exit-timeout-secs from the moment the stop was requested."""
        deadline = time.monotonic() + self.settings.exit_timeout_secs
        self.service.begin_shutdown()
        if self._grpc:
            # Health-checking clients (grpc round_robin with healthCheckConfig) move away now.
            await self._grpc.announce_not_serving()
        # Not asyncio.wait_for: on Python 3.11 a zero timeout expires before an idle server is seen.
        idle = asyncio.ensure_future(self.service.wait_idle())
        done, _ = await asyncio.wait({idle}, timeout=self.settings.exit_timeout_secs)
        if not done:
            idle.cancel()
            log.warning("exit timeout reached with requests still in flight")
        for task in self._background:
            task.cancel()
        if self._grpc:
            # A lame-duck moment before the transport closes: calls still arriving from clients
            # that have not seen NOT_SERVING yet get UNAVAILABLE (which they retry elsewhere)
            # instead of being cut off as CANCELLED.
            await asyncio.sleep(min(LAME_DUCK_SECS, max(0.0, deadline - time.monotonic())))
            await self._grpc.stop(grace_secs=min(max(0.0, deadline - time.monotonic()), 1.0))
        for site in self._sites:
            await site.stop()
        await self.manager.close(drain_timeout_secs=max(0.0, deadline - time.monotonic()))
        self.shared_memory.close()
        if self.capture is not None:
            await asyncio.get_running_loop().run_in_executor(None, self.capture.close)
        await self._close_tracer(max(0.0, deadline - time.monotonic()))
        log.info("ortserve stopped")

    async def _close_tracer(self, timeout_secs: float) -> None:
        """Write the traces still held (Triton's file is closed now) within what is left of the exit timeout."""
        self.tracer.retire_all()
        closing = asyncio.ensure_future(asyncio.to_thread(self.tracer.close))
        done, _ = await asyncio.wait({closing}, timeout=timeout_secs)
        if not done:
            log.warning("trace output not fully written before the exit timeout")


def _sample_capture(settings: Settings) -> SampleCapture | None:
    if settings.sample_capture_dir is None:
        return None
    return SampleCapture(settings.sample_capture_dir, settings.sample_capture_count, settings.sample_capture_bytes)


async def serve(settings: Settings) -> None:
    app = App(settings)
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, app.request_stop)
    # A stop requested while models still load (SIGTERM during start-up) abandons the loads.
    starting = asyncio.ensure_future(app.start())
    stopped = asyncio.ensure_future(app.wait_for_stop())
    try:
        await asyncio.wait({starting, stopped}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            starting.cancel()
            log.info("shutdown requested during start-up: abandoning model loads")
        else:
            starting.result()  # StartupError and the like
    except BaseException:
        stopped.cancel()
        await app.shutdown()
        raise
    await app.run_until_stopped()


def request_frontends(
    settings: Settings, service: InferenceService, security: SecurityLayer, reuse_port: bool = False
) -> tuple[GrpcFrontend | None, list[HttpSite]]:
    """The gRPC and HTTP frontends of ``settings``, with their TLS and access control, not started
    yet; ``reuse_port`` when several processes share the ports (--workers). Raises StartupError."""
    s = settings
    grpc_frontend: GrpcFrontend | None = None
    sites: list[HttpSite] = []
    if s.allow_grpc:
        guard = security.guard_for(Protocol.GRPC)
        credentials, interceptors = security.grpc_credentials(), [AccessInterceptor(guard)] if guard else []
        options = [*grpc_options(s), ("grpc.so_reuseport", 1)] if reuse_port else grpc_options(s)
        try:
            grpc_frontend = GrpcFrontend(service, s.host, s.grpc_port, options, credentials, interceptors)
        except RuntimeError as exc:  # grpcio: "Failed to bind to address ..." (e.g. the port is in use)
            raise StartupError(f"cannot listen for gRPC: {exc}") from None
    if s.allow_http:
        http_limits = ConnectionLimits(s.http_max_connections, s.http_idle_timeout_secs, s.http_body_timeout_secs)
        app = build_http_app(service, s.http_max_input_bytes, s.http_body_timeout_secs, _http_guarded(security, Protocol.HTTP))
        sites.append(HttpSite(app, s.host, s.http_port, http_limits, security.ssl_context("HTTP"), reuse_port=reuse_port))
    return grpc_frontend, sites


def _http_guarded(security: SecurityLayer, protocol: Protocol) -> list[object]:
    """The access middleware of an HTTP port, when its protocol is guarded."""
    guard = security.guard_for(protocol)
    return [access_middleware(guard, protocol)] if guard else []
