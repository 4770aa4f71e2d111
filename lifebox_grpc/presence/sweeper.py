"""The presence sweeper: one per deployment, under a lease, inside the ingest workers.

Every ``lifebox ingest`` worker runs :func:`keep_presence`; the one holding a session
advisory lock (the lease, on a connection of its own) sweeps: online devices silent past
three expected intervals become stale. When a worker takes the lease (first start, a
restart, or the previous holder died and its session with it) it first reads the retained
statuses (:mod:`.retained`): while no LifeBox process was subscribed, the status a device
published is only on the broker, and shared subscriptions never deliver retained messages.

Why inside ingest: ingest already holds the narrow database role that moves presence
(BYPASSRLS, granted the presence tables) and an MQTT account that may read the status
topics; every deployment that has devices runs it, so presence needs no process of its own
to deploy or forget. The lease makes any number of workers safe, and a worker killed with
SIGKILL loses its session, so another takes over within one interval.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Awaitable, Callable

import asyncpg

from lifebox_grpc.presence.retained import RetainedReadError, apply_retained
from lifebox_grpc.store.presence import sweep_stale

log = logging.getLogger(__name__)

# The presence lease. Other advisory locks: migrations 0x11FEB0C5, maintain 0x11FEB0C6,
# broker-sync 0x11FEB0C7, the alarm sweeper 0x11FEA1A2.
LEASE_KEY = 0x11FE9E5E
SWEEP_BATCH = 1000  # devices marked per transaction
ERRORS = (OSError, asyncio.TimeoutError, asyncpg.PostgresError, asyncpg.InterfaceError)

Retained = Callable[[asyncpg.Connection], Awaitable[object]]


async def _wait(stop: asyncio.Event, seconds: float) -> None:
    with contextlib.suppress(TimeoutError):
        await asyncio.wait_for(stop.wait(), seconds)


async def keep_presence(
    dsn: str,
    stop: asyncio.Event,
    *,
    interval_s: float,
    retained: Retained | None,
) -> None:
    """Try for the lease every ``interval_s``; while held, run ``retained`` once, then sweep
    every ``interval_s`` until ``stop``. Survives database outages (the lease is retaken)."""
    while not stop.is_set():
        conn: asyncpg.Connection | None = None
        try:
            conn = await asyncpg.connect(
                dsn, server_settings={"application_name": "lifebox-presence"}
            )
            if await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEASE_KEY):
                log.info("presence lease taken")
                if retained is not None:
                    try:
                        await retained(conn)
                    except RetainedReadError as exc:
                        # Not fatal: statuses published from now on still arrive; those
                        # retained meanwhile are read at the next lease.
                        log.warning("retained statuses not read: %s", exc)
                while not stop.is_set():
                    marked = await sweep_stale(conn, SWEEP_BATCH)
                    if marked:
                        log.info("presence: devices marked stale", extra={"count": marked})
                    if marked < SWEEP_BATCH:  # else more are due: at once, batch by batch
                        await _wait(stop, interval_s)
        except ERRORS as exc:
            log.warning("presence sweeper: %s; retrying", type(exc).__name__)
        finally:
            if conn is not None:
                with contextlib.suppress(*ERRORS):
                    await conn.close(timeout=5)
        await _wait(stop, interval_s)


def retained_reader(mqtt_url: str, quiet_s: float) -> Retained:
    """:func:`apply_retained` against ``mqtt_url``, as ``keep_presence`` calls it."""

    async def read(conn: asyncpg.Connection) -> object:
        return await apply_retained(conn, mqtt_url, quiet_s=quiet_s)

    return read
