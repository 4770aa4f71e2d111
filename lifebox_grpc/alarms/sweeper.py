"""The alarm sweeper: one ingest worker at a time (a session advisory lock is the lease)
finds devices whose committed readings are past their watermark (a worker was killed
between a batch's commit and its evaluation, or its evaluation kept failing) and has them
evaluated, and raises and clears no-data events (:mod:`.no_data`) and DEVICE_ALARM events
(:mod:`.device_alarm`). Any worker may run it;
whoever does not hold the lease skips the pass.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from datetime import UTC, datetime

import asyncpg

from lifebox_grpc.alarms import metrics
from lifebox_grpc.alarms.device_alarm import sweep_device_alarms
from lifebox_grpc.alarms.evaluator import AlarmEvaluator
from lifebox_grpc.alarms.no_data import sweep_no_data
from lifebox_grpc.alarms.readings import us_of
from lifebox_grpc.store import alarm_evaluation as store

log = logging.getLogger(__name__)

LEASE_KEY = 0x11FEA1A2  # differs from the maintenance and migration locks


async def sweep_once(pool: asyncpg.Pool, evaluator: AlarmEvaluator) -> int | None:
    """Note every device behind its watermark and sweep no-data and DEVICE_ALARM rules; how
    many devices
    were behind, or None without the lease."""
    async with pool.acquire() as conn:
        if not await conn.fetchval("SELECT pg_try_advisory_lock($1)", LEASE_KEY):
            return None
        try:
            behind = await store.devices_behind(conn)
            # The lease's connection stays held: no other sweeper runs this pass.
            await sweep_no_data(pool, datetime.now(UTC))
            await sweep_device_alarms(pool)
        finally:
            await conn.execute("SELECT pg_advisory_unlock($1)", LEASE_KEY)
    evaluator.note((device, client, us_of(first)) for device, client, first in behind)
    return len(behind)


async def sweep_forever(
    pool: asyncpg.Pool, evaluator: AlarmEvaluator, interval_s: float, stop: asyncio.Event
) -> None:
    """A pass at start (recovery after a crash), then every ``interval_s`` until ``stop``."""
    while not stop.is_set():
        try:
            found = await sweep_once(pool, evaluator)
            metrics.ALARM_SWEEPS.labels("skipped" if found is None else "swept").inc()
            if found:
                log.info("alarm sweeper: devices behind their watermark", extra={"devices": found})
        except (OSError, asyncpg.PostgresError, asyncpg.InterfaceError) as exc:
            metrics.ALARM_SWEEPS.labels("failed").inc()
            log.warning("alarm sweep failed; will retry", extra={"error": type(exc).__name__})
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), interval_s)
