"""pg_partman storage: daily partitions made ahead, old ones dropped past retention."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from lifebox_grpc.store import partitions
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.scratch_db import scratch_database
from tests.helpers.services import Database


async def _partition_of(conn: asyncpg.Connection, device: object, at: datetime) -> str | None:
    async with tenant_transaction(conn, None, staff=True):
        name: str | None = await conn.fetchval(
            "SELECT tableoid::regclass::text FROM telemetry_events "
            "WHERE device_id = $1 AND time = $2",
            device,
            at,
        )
    return name


@pytest.mark.storage("partman")
async def test_the_embedded_cluster_stores_time_series_with_partman(
    owner_conn: asyncpg.Connection,
) -> None:
    assert await partitions.storage_kind(owner_conn) == "partman"


@pytest.mark.storage("partman")
async def test_partitions_cover_the_accepted_window_and_a_week_ahead(
    owner_conn: asyncpg.Connection,
) -> None:
    now = datetime.now(UTC)
    for table in partitions.TIME_SERIES_TABLES:
        newest = await partitions.newest_partition_bound(owner_conn, table)
        assert newest is not None
        assert newest >= now + timedelta(days=7)
    client = await factories.make_client(owner_conn)
    device, _ = await factories.make_device(owner_conn, client)
    for age in (timedelta(days=30), timedelta(0), -timedelta(minutes=5)):
        at = await factories.make_reading(owner_conn, client, device, now - age)
        partition = await _partition_of(owner_conn, device, at)
        assert partition is not None
        assert not partition.endswith("_default"), (age, partition)


@pytest.mark.storage("partman")
async def test_maintenance_drops_partitions_past_retention_and_premakes_ahead(
    database: Database,
) -> None:
    async with scratch_database(database, migrate=True, seed=True) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            now = datetime.now(UTC)
            client = await factories.make_client(conn)
            device, _ = await factories.make_device(conn, client)
            old = await factories.make_reading(conn, client, device, now - timedelta(days=20))
            recent = await factories.make_reading(conn, client, device, now - timedelta(days=1))
            before = await conn.fetchval(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'telemetry_events'::regclass"
            )

            report = await partitions.run_maintenance(conn, retention_days=10, premake_days=14)

            after = await conn.fetchval(
                "SELECT count(*) FROM pg_inherits WHERE inhparent = 'telemetry_events'::regclass"
            )
            assert "partman" in report
            assert after < before
            assert await _partition_of(conn, device, old) is None
            assert await _partition_of(conn, device, recent) is not None
            newest = await partitions.newest_partition_bound(conn, "telemetry_events")
            assert newest is not None
            assert newest >= now + timedelta(days=14)
            oldest_kept = await conn.fetchval(
                "SELECT min(split_part(split_part(pg_get_expr(c.relpartbound, c.oid), "
                "'FROM (''', 2), '''', 1)::timestamptz) FROM pg_inherits i "
                "JOIN pg_class c ON c.oid = i.inhrelid "
                "WHERE i.inhparent = 'telemetry_events'::regclass "
                "AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT'"
            )
            assert oldest_kept >= now - timedelta(days=11)
            retention = await conn.fetch(
                "SELECT retention FROM partman.part_config WHERE parent_table = ANY($1::text[])",
                [f"public.{t}" for t in partitions.TIME_SERIES_TABLES],
            )
            assert [r["retention"] for r in retention] == ["10 days"] * 3
            assert await partitions.default_partition_rows(conn) == 0
        finally:
            await conn.close()


async def test_maintenance_prunes_old_ingest_rejects(database: Database) -> None:
    async with scratch_database(database, migrate=True) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            async with tenant_transaction(conn, None, staff=True):
                await conn.execute(
                    "INSERT INTO ingest_rejects (serial, topic, code, reason, raw, received_at) "
                    "VALUES ('X', 't', 'bad_json', 'r', '', now() - interval '40 days'), "
                    "('X', 't', 'bad_json', 'r', '', now())"
                )
            report = await partitions.run_maintenance(conn, retention_days=30)
            assert "; 1 ingest reject(s) pruned;" in report
        finally:
            await conn.close()
