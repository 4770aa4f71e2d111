"""`lifebox broker-sync`: keeps the broker's password and ACL files equal to the database.

One copy works at a time: the lease is a session advisory lock held on the connection that
also LISTENs and reads, so a copy whose connection (or process) dies loses the lease with
it, and a waiting copy takes it within ``broker_sync_lease_retry_seconds``. The holder
reconciles at once (a broker or LifeBox restart is reconciled: no device lost, no revoked
one let in), then after each NOTIFY lifebox_broker (migration 0050) once the notices have
been quiet for ``broker_sync_debounce_ms``, and every ``broker_sync_interval_seconds`` in
any case. A pass rewrites a file only when its content differs, then SIGHUPs the broker
(pid from its pid file), which re-authenticates every live client: a revoked credential, a
disabled device or a suspended client loses its session within a second or so.

The service accounts' hashes come from a static file (deploy/mosquitto/make-passwd.sh), so
this process never holds a service account's password; its database role may only SELECT the
columns it renders.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
import signal
import time
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import unquote, urlsplit

import asyncpg

from lifebox_grpc import metrics
from lifebox_grpc.broker import tls
from lifebox_grpc.broker.accounts import ServiceAccountsError, read_service_entries
from lifebox_grpc.broker.certificates import kick, reconcile_certificates
from lifebox_grpc.broker.files import BROKER_ADMIN
from lifebox_grpc.broker.reconcile import ReconcileResult, reconcile_files, reload_broker
from lifebox_grpc.config import Mode, Settings
from lifebox_grpc.runtime import mosquitto

log = logging.getLogger(__name__)

CHANNEL = "lifebox_broker_sync"
PID_POLL_SECONDS = 1.0  # how soon a restarted broker (a new pid) is re-checked

# A role that could write what it renders could also let itself in: refuse it.
_WRITES = """
SELECT array(
    SELECT t FROM unnest(ARRAY['device_credentials', 'devices', 'clients']) t
    WHERE has_table_privilege(t, 'INSERT') OR has_table_privilege(t, 'UPDATE')
       OR has_table_privilege(t, 'DELETE')
       OR has_any_column_privilege(t, 'INSERT') OR has_any_column_privilege(t, 'UPDATE')
)
"""


@dataclass(frozen=True)
class SyncTarget:
    """Where the broker's files are and how to tell it they changed."""

    password_path: Path
    acl_path: Path
    pid_path: Path | None
    service_passwords_path: Path
    service_acl_path: Path | None
    owner: str | None
    # The mutual-TLS listener's files, and what signs its revocation list (None: no device
    # CA, no certificate devices); the account that takes over revoked certificates'
    # sessions (mqtt://lifebox-broker-admin:...@host:port; None: they are left without
    # rights but connected).
    certificate_acl_path: Path | None = None
    crl_path: Path | None = None
    authority: tls.Authority | None = None
    kick_url: str | None = None

    def broker_pid(self) -> int | None:
        """The broker's pid from its pid file, read now (the broker may have restarted)."""
        if self.pid_path is None:
            return None
        try:
            return int(self.pid_path.read_text().strip())
        except (OSError, ValueError):
            return None

    def extra_acl(self) -> str:
        if self.service_acl_path is None or not self.service_acl_path.exists():
            return ""
        return self.service_acl_path.read_text()


def resolve_target(settings: Settings) -> SyncTarget:
    """The configured paths; anything unset is the embedded broker's under home/mqtt."""
    base = settings.home.resolve() / "mqtt"
    extra = settings.broker_service_acl_file or base / mosquitto.EXTRA_ACL_FILE
    return SyncTarget(
        password_path=settings.broker_password_file or base / mosquitto.PASSWORD_FILE,
        acl_path=settings.broker_acl_file or base / mosquitto.ACL_FILE,
        pid_path=settings.broker_pid_file or base / mosquitto.PID_FILE,
        service_passwords_path=(settings.broker_service_passwords_file or base / "service.passwd"),
        service_acl_path=extra,
        owner=settings.broker_file_owner,
        certificate_acl_path=settings.broker_certificate_acl_file
        or base / mosquitto.CERTIFICATE_ACL_FILE,
        crl_path=settings.broker_crl_file or base / mosquitto.CRL_FILE,
        authority=tls.configured_authority(
            settings.device_ca_cert_file, settings.device_ca_key_file, settings.home
        ),
        kick_url=_kick_url(settings, base),
    )


def _kick_url(settings: Settings, base: Path) -> str | None:
    if settings.broker_sync_mqtt_url is not None:
        return settings.broker_sync_mqtt_url.get_secret_value()
    port_file = base / "port"
    if settings.mode is not Mode.DEV or not port_file.exists():
        return None
    return mosquitto.embedded_mqtt_url(base, int(port_file.read_text()), BROKER_ADMIN)


class BrokerSyncError(RuntimeError):
    """broker-sync cannot run with this configuration (the message says what to fix)."""


async def check_broker_role(conn: asyncpg.Connection) -> None:
    """The role must be fit for the staff path (no superuser, BYPASSRLS, CREATEROLE or
    owned tenant tables) and must not write the tables it renders."""
    from lifebox_grpc.store.role_checks import check_role

    await check_role(conn, "broker-sync")
    writable: list[str] = await conn.fetchval(_WRITES)
    if writable:
        raise BrokerSyncError(
            f"LIFEBOX_BROKER_SYNC_DATABASE_URL's role may write {', '.join(writable)}: point it at "
            "lifebox_broker_sync, which may only read them"
        )


async def sync_once(conn: asyncpg.Connection, target: SyncTarget, trigger: str) -> ReconcileResult:
    """One pass onto ``target`` (counted under ``trigger``)."""
    result = await reconcile_files(
        conn,
        password_path=target.password_path,
        acl_path=target.acl_path,
        broker_pid=target.broker_pid(),
        service_entries=read_service_entries(target.service_passwords_path),
        extra_acl=target.extra_acl(),
        owner=target.owner,
    )
    metrics.BROKER_SYNC_PASSES.labels(trigger).inc()
    if result.changed:
        metrics.BROKER_SYNC_RELOADS.inc()
        log.info(
            "broker files rewritten",
            extra={"devices": result.devices, "signalled": result.signalled, "trigger": trigger},
        )
    authority, acl, crl = target.authority, target.certificate_acl_path, target.crl_path
    if authority is not None and acl is not None and crl is not None:
        await _sync_certificates(conn, target, authority, acl, crl, reloaded=result.signalled)
    metrics.BROKER_SYNC_DEVICES.set(result.devices)
    metrics.BROKER_SYNC_RESERVED.set(len(result.reserved_skipped))
    metrics.BROKER_SYNC_LAST_PASS.set(time.time())
    return result


async def _sync_certificates(
    conn: asyncpg.Connection,
    target: SyncTarget,
    authority: tls.Authority,
    acl_path: Path,
    crl_path: Path,
    *,
    reloaded: bool,
) -> None:
    """The mutual-TLS listener's ACL and revocation list; on a change the broker reloads
    (unless the password pass just did), then revoked certificates' sessions are taken over:
    mosquitto does not check a connected certificate again on SIGHUP."""
    result = await reconcile_certificates(
        conn,
        authority=authority,
        acl_path=acl_path,
        crl_path=crl_path,
        owner=target.owner,
    )
    if result.changed and not reloaded:
        reload_broker(target.broker_pid())
    if result.dropped and target.kick_url:
        url = urlsplit(target.kick_url)
        closed = await asyncio.to_thread(
            kick,
            url.hostname or "127.0.0.1",
            url.port or 1883,
            unquote(url.username or ""),
            unquote(url.password or ""),
            result.dropped,
        )
        log.info(
            "certificate sessions taken over",
            extra={"dropped": len(result.dropped), "closed": closed},
        )


async def _wait(event: asyncio.Event, timeout: float) -> bool:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(event.wait(), timeout)
        return True
    return False


async def _take_lease(conn: asyncpg.Connection, settings: Settings, stop: asyncio.Event) -> bool:
    waited = False
    while not stop.is_set():
        if await conn.fetchval("SELECT pg_try_advisory_lock($1)", settings.broker_sync_lease_key):
            return True
        if not waited:
            log.info("another broker-sync holds the lease; waiting to take over")
            waited = True
        await _wait(stop, settings.broker_sync_lease_retry_seconds)
    return False


async def _hold_lease(
    conn: asyncpg.Connection, settings: Settings, target: SyncTarget, stop: asyncio.Event
) -> None:
    """Reconcile under the lease until ``stop`` or until the connection fails."""
    notified = asyncio.Event()
    lost = asyncio.Event()
    await conn.add_listener(CHANNEL, lambda *_: notified.set())
    conn.add_termination_listener(lambda _c: lost.set())
    # LISTEN first, then the full pass: a change committed in between is not missed.
    await sync_once(conn, target, "start")
    debounce = settings.broker_sync_debounce_ms / 1000
    next_full = time.monotonic() + settings.broker_sync_interval_seconds
    wake = asyncio.Event()

    async def relay() -> None:  # one event for notice, loss and stop
        waiters = [asyncio.ensure_future(e.wait()) for e in (notified, lost, stop)]
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
        wake.set()

    broker_pid = target.broker_pid()
    while not stop.is_set():
        wake.clear()
        relay_task = asyncio.ensure_future(relay())
        try:
            await _wait(wake, max(0.0, min(next_full - time.monotonic(), PID_POLL_SECONDS)))
        finally:
            relay_task.cancel()
        if stop.is_set():
            return
        if lost.is_set() or conn.is_closed():
            raise ConnectionError("the lease connection closed")
        if target.broker_pid() != broker_pid:
            # The broker restarted (and may have started from files of its own): re-check.
            broker_pid = target.broker_pid()
            await sync_once(conn, target, "broker_restart")
        elif notified.is_set():
            # Quiet period: a burst of changes (a bulk revoke) is one pass.
            while True:
                notified.clear()
                if not await _wait(notified, debounce):
                    break
            await sync_once(conn, target, "notify")
        elif time.monotonic() >= next_full:
            await sync_once(conn, target, "periodic")
            next_full = time.monotonic() + settings.broker_sync_interval_seconds


async def run_broker_sync(
    dsn: str, settings: Settings, target: SyncTarget, stop: asyncio.Event
) -> None:
    """Take the lease, reconcile while holding it, and start over after any failure, until
    ``stop``. A configuration error (role, service accounts file) ends it."""
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(dsn)
            await check_broker_role(conn)
            if await _take_lease(conn, settings, stop):
                metrics.BROKER_SYNC_LEASE.set(1)
                log.info("broker-sync holds the lease", extra={"pid": os.getpid()})
                await _hold_lease(conn, settings, target, stop)
        except (OSError, ConnectionError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            metrics.BROKER_SYNC_ERRORS.labels(type(exc).__name__).inc()
            log.warning("broker-sync lost its database; retrying", extra={"error": str(exc)})
            await _wait(stop, settings.broker_sync_lease_retry_seconds)
        finally:
            metrics.BROKER_SYNC_LEASE.set(0)
            if conn is not None and not conn.is_closed():
                with contextlib.suppress(Exception):
                    await asyncio.wait_for(conn.close(), 5)


async def run_broker_sync_command(settings: Settings, *, once: bool) -> int:
    """`lifebox broker-sync`: check the configuration, expose metrics, run until signalled."""
    from prometheus_client import start_http_server

    from lifebox_grpc.runtime.endpoints import resolve_endpoints
    from lifebox_grpc.store.role_checks import RoleCheckError

    problems = settings.production_problems("broker-sync")
    for problem in problems:
        print(f"refusing to start: {problem}", flush=True)
    if problems:
        return 2
    dsn = resolve_endpoints(settings).broker_sync_dsn
    target = resolve_target(settings)
    try:
        read_service_entries(target.service_passwords_path)
    except (OSError, ServiceAccountsError) as exc:
        print(f"refusing to start: LIFEBOX_BROKER_SERVICE_PASSWORDS_FILE: {exc}", flush=True)
        return 2
    if once:
        conn = await asyncpg.connect(dsn)
        try:
            await check_broker_role(conn)
            key = settings.broker_sync_lease_key
            if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", key):
                print("another broker-sync holds the lease; nothing done")
                return 0
            result = await sync_once(conn, target, "start")
        except (RoleCheckError, BrokerSyncError) as exc:
            print(f"refusing to start: {exc}", flush=True)
            return 2
        finally:
            await conn.close()
        print(f"{result.devices} device entries; {'changed' if result.changed else 'unchanged'}")
        return 0
    server, _thread = start_http_server(settings.broker_sync_metrics_port, addr=settings.http_host)
    log.info("metrics listening", extra={"port": server.server_port, "pid": os.getpid()})
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        await run_broker_sync(dsn, settings, target, stop)
    except (RoleCheckError, BrokerSyncError, ServiceAccountsError) as exc:
        print(f"refusing to start: {exc}", flush=True)
        return 2
    finally:
        server.shutdown()
    return 0
