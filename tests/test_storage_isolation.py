"""Rows are tenant-scoped only through their parent table: no runtime role reaches a child.

Row-level security sits on the parents. A pg_partman partition (the default one included) or
a TimescaleDB chunk read directly has no policy, so every runtime role must be refused there,
for the children that exist and those made later, also after an operator re-runs
``lifebox_apply_grants()`` (TimescaleDB copies a hypertable's grants down to its chunks).
Each test runs on both storage paths.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg
import pytest

from lifebox_grpc.store import partitions
from lifebox_grpc.store.pool import tenant_transaction
from tests.helpers import factories
from tests.helpers.services import Database
from tests.helpers.tenants import populate_tenant

# Children of every partitioned table and hypertable, at any depth, and the tables of ours in
# TimescaleDB's internal schema (compressed chunks live there, not under the parent; the
# extension's own job statistics there belong to it and hold no tenant rows).
_CHILDREN = """
WITH RECURSIVE parents AS (
    SELECT oid FROM pg_class
    WHERE relnamespace = 'public'::regnamespace AND relkind = 'p' AND NOT relispartition
    UNION
    SELECT DISTINCT inhparent FROM pg_inherits i JOIN pg_class c ON c.oid = i.inhrelid
    WHERE c.relnamespace = to_regnamespace('_timescaledb_internal')
), tree(relid) AS (
    SELECT inhrelid FROM pg_inherits WHERE inhparent IN (SELECT oid FROM parents)
    UNION
    SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid
)
SELECT relid::regclass::text AS name FROM tree
UNION
SELECT oid::regclass::text FROM pg_class
WHERE relnamespace = to_regnamespace('_timescaledb_internal') AND relkind IN ('r', 'p')
  AND relowner = 'lifebox_owner'::regrole
ORDER BY 1
"""

_GRANTED = """
SELECT c.oid::regclass::text, a.grantee::regrole::text FROM pg_class c,
LATERAL (SELECT grantee FROM aclexplode(c.relacl) UNION
         SELECT x.grantee FROM pg_attribute att, aclexplode(att.attacl) x
         WHERE att.attrelid = c.oid) a
WHERE c.oid = ANY($1::regclass[]) AND a.grantee <> c.relowner
"""

_WRITES = (
    "INSERT INTO {t} SELECT * FROM {t} WHERE false",
    "UPDATE {t} SET client_id = client_id WHERE false",
    "DELETE FROM {t} WHERE false",
    "TRUNCATE {t}",
)


@pytest.fixture
def database(storage_database: Database) -> Database:
    return storage_database


async def _children(owner: asyncpg.Connection) -> list[str]:
    return [row["name"] for row in await owner.fetch(_CHILDREN)]


async def _reading_days_ago(database: Database, client: uuid.UUID, days: int) -> None:
    """A reading written by the ingest role through the parent (a new chunk or partition)."""
    owner = await asyncpg.connect(database.owner_dsn)
    try:
        device, _serial = await factories.make_device(owner, client)
    finally:
        await owner.close()
    ingest = await asyncpg.connect(database.ingest_dsn)
    try:
        await ingest.copy_records_to_table(
            "telemetry_events",
            records=[(datetime.now(UTC) - timedelta(days=days), device, client, 20.0)],
            columns=["time", "device_id", "client_id", "temperature_c"],
        )
    finally:
        await ingest.close()


async def _assert_children_closed(database: Database, tenant: uuid.UUID) -> list[str]:
    owner = await asyncpg.connect(database.owner_dsn)
    try:
        children = await _children(owner)
        # Not even a column (system columns included) is granted to anyone but the owner.
        granted = await owner.fetch(_GRANTED, children)
    finally:
        await owner.close()
    assert children, "no partition or chunk to check"
    assert [tuple(r) for r in granted] == []
    leaks: list[str] = []
    for role, dsn in (("lifebox_app", database.app_dsn), ("lifebox_ingest", database.ingest_dsn)):
        conn = await asyncpg.connect(dsn)
        try:
            for child in children:
                try:
                    async with tenant_transaction(conn, tenant):
                        rows = await conn.fetch(f"SELECT client_id FROM {child}")
                    foreign = [r for r in rows if r["client_id"] != tenant]
                    if foreign:
                        leaks.append(f"{role} read {len(foreign)} foreign row(s) from {child}")
                except asyncpg.InsufficientPrivilegeError:
                    pass
                for write in _WRITES:
                    statement = write.format(t=child)
                    try:
                        async with conn.transaction():
                            await conn.execute(statement)
                            leaks.append(f"{role} may run {statement!r}")
                            raise _RollBack
                    except (asyncpg.InsufficientPrivilegeError, _RollBack):
                        pass
        finally:
            await conn.close()
    assert not leaks, "\n".join(leaks)
    return children


class _RollBack(Exception):
    """Undo a write that should have been refused (the test reports it)."""


async def test_no_runtime_role_reads_or_writes_a_partition_or_chunk_directly(
    database: Database, owner_conn: asyncpg.Connection
) -> None:
    mine = await populate_tenant(owner_conn)
    theirs = await populate_tenant(owner_conn)
    await _reading_days_ago(database, theirs, 3)
    # README tells operators to re-run it; TimescaleDB copies every GRANT to the chunks.
    await owner_conn.execute("SELECT lifebox_apply_grants()")
    before = await _assert_children_closed(database, mine)
    # Children made after the grants: ingest writes into a new day, as it does every day.
    await _reading_days_ago(database, theirs, 9)
    await _reading_days_ago(database, mine, 9)
    after = await _assert_children_closed(database, mine)
    if database.storage == "timescaledb":
        assert len(after) > len(before), "the late readings made no new chunk"


async def test_the_parents_still_serve_their_roles_after_the_children_are_closed(
    database: Database, owner_conn: asyncpg.Connection
) -> None:
    """Closing the children takes nothing from reads and writes through the parent."""
    tenant = await populate_tenant(owner_conn)
    await owner_conn.execute("SELECT lifebox_apply_grants()")
    await _reading_days_ago(database, tenant, 11)
    app = await asyncpg.connect(database.app_dsn)
    try:
        async with tenant_transaction(app, tenant):
            counts = {
                table: await app.fetchval(f"SELECT count(*) FROM {table}")
                for table in ("telemetry_events", "device_locations", "device_data_points")
            }
    finally:
        await app.close()
    assert counts == {"telemetry_events": 2, "device_locations": 1, "device_data_points": 1}
    # Maintenance and retention still run as the owner over the closed children.
    report = await partitions.run_maintenance(owner_conn, 90, 7)
    assert "child table(s) made private" in report
    if database.storage == "timescaledb":
        jobs = await owner_conn.fetch(
            "SELECT job_id FROM timescaledb_information.jobs WHERE proc_name = 'policy_retention'"
        )
        assert len(jobs) == 3
        for job in jobs:
            await owner_conn.execute(f"CALL run_job({int(job['job_id'])})")


async def test_a_tenant_aggregate_is_the_same_with_parallel_plans_forced_on_and_off(
    database: Database, owner_conn: asyncpg.Connection
) -> None:
    """Migration 0035's guard against timescaledb#10503 (parallel ChunkAppend with an InitPlan
    filter returning no rows), checked on the real extension."""
    if database.storage != "timescaledb":
        pytest.skip("the guard is TimescaleDB's (parallel ChunkAppend); partitions have none")
    tenant = await factories.make_client(owner_conn)
    device, _ = await factories.make_device(owner_conn, tenant)
    start = datetime.now(UTC) - timedelta(days=4)
    ingest = await asyncpg.connect(database.ingest_dsn)
    try:
        await ingest.copy_records_to_table(
            "telemetry_events",
            records=[
                (start + timedelta(minutes=i), device, tenant, float(i % 97)) for i in range(6000)
            ],
            columns=["time", "device_id", "client_id", "temperature_c"],
        )
    finally:
        await ingest.close()
    query = (
        "SELECT date_bin('1 hour', time, 'epoch') AS bucket, count(*), avg(temperature_c) "
        "FROM telemetry_events GROUP BY 1 ORDER BY 1"
    )
    app = await asyncpg.connect(database.app_dsn)
    try:
        results, plans = [], []
        for parallel in (
            "SET LOCAL max_parallel_workers_per_gather = 0",
            "SET LOCAL max_parallel_workers_per_gather = 2; SET LOCAL parallel_setup_cost = 0; "
            "SET LOCAL parallel_tuple_cost = 0; SET LOCAL min_parallel_table_scan_size = 0; "
            "SET LOCAL force_parallel_mode = on",
        ):
            async with tenant_transaction(app, tenant):
                await app.execute(parallel)
                results.append([tuple(r) for r in await app.fetch(query)])
                plans.append("\n".join(r[0] for r in await app.fetch("EXPLAIN " + query)))
    finally:
        await app.close()
    assert "Gather" not in plans[0], plans[0]
    assert "Gather" in plans[1], plans[1]
    assert sum(row[1] for row in results[0]) == 6000
    assert results[0] == results[1]
