"""`lifebox maintain`: one runner at a time, partitions kept ahead."""

from __future__ import annotations

import asyncpg

from lifebox_grpc.config import Settings
from lifebox_grpc.store.maintenance import LEASE_KEY, maintain_once
from tests.helpers.services import Database


async def test_maintenance_runs_when_it_holds_the_lease_and_waits_otherwise(
    database: Database,
) -> None:
    settings = Settings(telemetry_retention_days=90, partition_premake_days=7)
    holder = await asyncpg.connect(database.owner_dsn)
    runner = await asyncpg.connect(database.owner_dsn)
    try:
        assert await holder.fetchval("SELECT pg_try_advisory_lock($1)", LEASE_KEY)
        assert await maintain_once(runner, settings) is None
        await holder.execute("SELECT pg_advisory_unlock($1)", LEASE_KEY)
        report = await maintain_once(runner, settings)
        assert report is not None
        if database.storage == "timescaledb":
            assert report.startswith("timescaledb: retention 90 days"), report
            return
        ahead = await runner.fetchval(
            "SELECT count(*) FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid "
            "WHERE i.inhparent = 'telemetry_events'::regclass "
            "AND c.relname >= 'telemetry_events_p' || to_char(now() + interval '6 days', "
            "'YYYY_MM_DD')"
        )
        assert ahead >= 1, "no partition made a week ahead"
    finally:
        await holder.close()
        await runner.close()
