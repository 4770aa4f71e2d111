"""`lifebox serve`: the grpc.aio server, its HTTP side listener, health and shutdown."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import asyncpg
import grpc
from grpc_health.v1 import health, health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection

from lifebox_grpc import metrics
from lifebox_grpc.auth.permissions import METHOD_RULES, Rule
from lifebox_grpc.auth.reset_sender import sender_from_settings
from lifebox_grpc.auth.sessions import AuthFlows
from lifebox_grpc.auth.tokens import KeyringError, keyring_from_settings
from lifebox_grpc.config import Settings
from lifebox_grpc.errors import ResourceExhausted
from lifebox_grpc.http import start_http_listeners
from lifebox_grpc.interceptors import build_interceptors
from lifebox_grpc.interceptors.limits import HEAVY_METHODS, CallLimits
from lifebox_grpc.runtime.endpoints import resolve_endpoints
from lifebox_grpc.services.registry import Dependencies, register_services
from lifebox_grpc.store.pool import create_pool
from lifebox_grpc.store.role_checks import checked_role

log = logging.getLogger(__name__)

HEALTH_PROBE_SECONDS = 2.0
# How often a server stream re-authorizes its caller when the principal cache is off.
STREAM_RECHECK_SECONDS = 5.0


@dataclass
class RunningServer:
    """A started server and what it bound, for the caller to stop."""

    server: grpc.aio.Server
    health: health.aio.HealthServicer
    grpc_port: int
    http_port: int
    pool: asyncpg.Pool
    _http_runner: object
    _probe: asyncio.Task[None]
    auth: AuthFlows | None = None
    limits: CallLimits | None = None

    async def stop(self, grace: float) -> None:
        await self.health.enter_graceful_shutdown()
        await self.server.stop(grace)
        if self.auth is not None:
            await self.auth.close()
        self._probe.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._probe
        await self._http_runner.cleanup()  # type: ignore[attr-defined]
        await self.pool.close()


def _server_options(settings: Settings) -> list[tuple[str, int]]:
    size = settings.grpc_max_message_bytes
    return [
        ("grpc.max_send_message_length", size),
        ("grpc.max_receive_message_length", size),
        ("grpc.so_reuseport", 1),
        ("grpc.keepalive_time_ms", 60_000),
        ("grpc.http2.max_pings_without_data", 0),
    ]


LOOPBACK_HOSTS = ("127.0.0.1", "::1", "localhost")


class PlaintextRefused(RuntimeError):
    """Plaintext gRPC was asked for on an address other than loopback."""


def _bind(server: grpc.aio.Server, settings: Settings) -> int:
    """Bind TLS when a certificate is configured; plaintext only on loopback."""
    address = f"{settings.grpc_host}:{settings.grpc_port}"
    if not settings.tls_cert_file and settings.grpc_host not in LOOPBACK_HOSTS:
        raise PlaintextRefused(
            f"plaintext gRPC on {settings.grpc_host} refused: set LIFEBOX_TLS_CERT_FILE and "
            "LIFEBOX_TLS_KEY_FILE, or listen on loopback"
        )
    if settings.tls_cert_file and settings.tls_key_file:
        credentials = grpc.ssl_server_credentials(
            [(settings.tls_key_file.read_bytes(), settings.tls_cert_file.read_bytes())]
        )
        return int(server.add_secure_port(address, credentials))
    return int(server.add_insecure_port(address))


class DatabaseProbe:
    """Reports SERVING only while the database answers; `ok` is the last answer."""

    def __init__(self, pool: asyncpg.Pool, servicer: health.aio.HealthServicer) -> None:
        self.pool = pool
        self.servicer = servicer
        self.ok = False
        self.services: list[str] = [""]

    async def check(self) -> bool:
        try:
            async with self.pool.acquire(timeout=HEALTH_PROBE_SECONDS) as conn:
                await conn.fetchval("SELECT 1", timeout=HEALTH_PROBE_SECONDS)
        except (
            OSError,
            asyncpg.PostgresError,
            asyncpg.InterfaceError,
            TimeoutError,
            ResourceExhausted,
        ):
            return False
        return True

    async def run(self) -> None:
        last: bool | None = None
        while True:
            self.ok = await self.check()
            if self.ok != last:
                status = (
                    health_pb2.HealthCheckResponse.SERVING
                    if self.ok
                    else health_pb2.HealthCheckResponse.NOT_SERVING
                )
                for name in self.services:
                    await self.servicer.set(name, status)
                metrics.DB_UP.set(1 if self.ok else 0)
                log.info("database %s", "reachable" if self.ok else "unreachable")
                last = self.ok
            await asyncio.sleep(HEALTH_PROBE_SECONDS if self.ok else 0.5)


async def start_server(
    settings: Settings,
    *,
    extra_handlers: Sequence[grpc.GenericRpcHandler] = (),
    extra_rules: Mapping[str, Rule] | None = None,
    extra_heavy_methods: frozenset[str] = frozenset(),
) -> RunningServer:
    """Build and start everything `serve` runs; return once it listens.

    ``extra_handlers`` and their ``extra_rules`` (and ``extra_heavy_methods``, counted as
    expensive calls) let tests mount probe methods behind the same interceptors as the real
    services.
    """
    keyring = keyring_from_settings(settings)
    endpoints = resolve_endpoints(settings)
    pool = await create_pool(
        endpoints.app_dsn,
        settings,
        "lifebox-serve",
        session_state=False,
        acquire_timeout=settings.db_pool_acquire_timeout_seconds,
    )
    await checked_role(pool, "serve")
    flows = AuthFlows(pool, settings, keyring, sender_from_settings(settings))
    limits = CallLimits.from_settings(settings)
    server = grpc.aio.server(
        options=_server_options(settings),
        interceptors=build_interceptors(
            keyring=keyring,
            rules={**METHOD_RULES, **(extra_rules or {})},
            load_principal=flows.load_principal,
            max_deadline_seconds=settings.grpc_max_deadline_seconds,
            limits=limits,
            stream_recheck_seconds=settings.principal_cache_seconds or STREAM_RECHECK_SECONDS,
            heavy_methods=HEAVY_METHODS | extra_heavy_methods,
        ),
    )
    servicer = health.aio.HealthServicer()
    health_pb2_grpc.add_HealthServicer_to_server(servicer, server)
    # --- streams (issue 21) ---
    from lifebox_grpc.streams import limits as stream_limits

    stream_limits.configure(settings.stream_buffer_items)
    # --- end streams ---
    service_names = register_services(server, Dependencies(pool, settings, flows))
    if extra_handlers:
        server.add_generic_rpc_handlers(tuple(extra_handlers))
    await servicer.set("", health_pb2.HealthCheckResponse.NOT_SERVING)
    reflection.enable_server_reflection(
        [
            *service_names,
            health_pb2.DESCRIPTOR.services_by_name["Health"].full_name,
            reflection.SERVICE_NAME,
        ],
        server,
    )
    grpc_port = _bind(server, settings)
    await server.start()
    db_probe = DatabaseProbe(pool, servicer)
    db_probe.services += service_names
    probe = asyncio.create_task(db_probe.run())

    async def healthy() -> bool:
        return db_probe.ok

    # --- billing (issue 16): health and metrics, plus the Fawry webhook ---
    runner, http_port = await start_http_listeners(healthy, settings, pool)
    # --- end billing (issue 16) ---
    log.info(
        "serving",
        extra={
            "grpc": f"{settings.grpc_host}:{grpc_port}",
            "http": f"{settings.http_host}:{http_port}",
        },
    )
    return RunningServer(server, servicer, grpc_port, http_port, pool, runner, probe, flows, limits)


async def _serve(settings: Settings) -> None:
    running = await start_server(settings)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    log.info("shutting down", extra={"grace_s": settings.grpc_grace_seconds})
    await running.stop(settings.grpc_grace_seconds)


def run_server(settings: Settings) -> int:
    problems = settings.production_problems("serve")
    try:
        keyring_from_settings(settings)
    except KeyringError as exc:
        problems.append(str(exc))
    if problems:
        for problem in problems:
            print(f"refusing to start: {problem}", file=sys.stderr)
        return 2
    asyncio.run(_serve(settings))
    return 0
