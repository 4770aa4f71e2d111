"""`lifebox maintain`: partition maintenance on a schedule, one runner at a time.

Runs as the owner role (it creates and drops partitions), so it is its own process rather
than part of `serve`, which holds only the application role. Any number of replicas may run
it: a session advisory lock is the lease, and whoever doesn't hold it just waits its turn.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

import asyncpg

from lifebox_grpc.config import Settings
from lifebox_grpc.store.partitions import run_maintenance

log = logging.getLogger(__name__)

LEASE_KEY = 0x11FEB0C6  # differs from the migration lock: migrations never wait on this


async def maintain_once(conn: asyncpg.Connection, settings: Settings) -> str | None:
    """One maintenance pass if we hold the lease; None when another runner has it."""
    if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEASE_KEY):
        return None
    try:
        report = await run_maintenance(
            conn, settings.telemetry_retention_days, settings.partition_premake_days
        )
        # --- billing (issue 16): renewals, overdue, suspensions, storage samples ---
        from datetime import UTC, datetime

        from lifebox_grpc.billing.enforcement import billing_pass

        billing = await billing_pass(
            conn,
            now=datetime.now(UTC),
            grace_days=settings.billing_grace_days,
            due_days=settings.billing_postpaid_due_days,
        )
        report = f"{report}; {billing}"
        # --- end billing (issue 16) ---
        return report
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", LEASE_KEY)


async def maintain_forever(dsn: str, settings: Settings, stop: asyncio.Event) -> None:
    """Run a pass every `maintenance_interval_seconds` until `stop`; survive outages."""
    while not stop.is_set():
        try:
            conn = await asyncpg.connect(dsn)
            try:
                report = await maintain_once(conn, settings)
            finally:
                await conn.close()
            if report is None:
                log.info("maintenance: another runner holds the lease")
            else:
                log.info("maintenance: %s", report)
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            log.warning("maintenance failed; will retry", extra={"error": type(exc).__name__})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), settings.maintenance_interval_seconds)


async def run_maintain_command(settings: Settings, *, once: bool) -> int:
    import signal

    from lifebox_grpc.runtime.endpoints import resolve_endpoints

    dsn = resolve_endpoints(settings).owner_dsn
    if once:
        conn = await asyncpg.connect(dsn)
        try:
            report = await maintain_once(conn, settings)
        finally:
            await conn.close()
        print(report or "another runner holds the maintenance lease; nothing done")
        return 0
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await maintain_forever(dsn, settings, stop)
    return 0
