"""Upkeep of the time-series tables: partitions made ahead and dropped past retention.

On pg_partman (native daily partitions) maintenance must run at least daily, or readings
beyond the premade range fall into the default partition; `serve` calls
:func:`run_maintenance` every ``maintenance_interval_seconds`` (pg_partman takes its own
advisory lock, so replicas running it at once are harmless). On TimescaleDB the extension's
own jobs do the work and maintenance only keeps the retention policy equal to the setting.
Both paths prune ``ingest_rejects`` past retention, and both make every child (partition or
chunk) private to the owner again: rows are tenant-scoped only through the parent (migration
0036 explains why a GRANT could widen them).

Runs as the owner role.
"""

from __future__ import annotations

import datetime

import asyncpg

from lifebox_grpc.store.pool import tenant_transaction

TIME_SERIES_TABLES = ("telemetry_events", "device_locations", "device_data_points")
TIMESCALEDB = "timescaledb"
PARTMAN = "partman"


class StorageError(RuntimeError):
    """The time-series tables are in neither of the two shapes the migrations make."""


async def storage_kind(conn: asyncpg.Connection) -> str:
    """'timescaledb' or 'partman': how telemetry_events is actually stored."""
    relkind = await conn.fetchval(
        "SELECT relkind::text FROM pg_class WHERE oid = to_regclass('public.telemetry_events')"
    )
    if relkind == "p":
        return PARTMAN
    if relkind == "r" and await _has_extension(conn, "timescaledb"):
        return TIMESCALEDB
    raise StorageError(f"telemetry_events is neither partitioned nor a hypertable ({relkind!r})")


async def run_maintenance(
    conn: asyncpg.Connection,
    retention_days: int | None = None,
    premake_days: int | None = None,
) -> str:
    """Make partitions ahead, drop those past retention; return a one-line report.

    ``retention_days`` / ``premake_days`` (the settings) replace what the migration wrote,
    when given.
    """
    kind = await storage_kind(conn)
    if kind == PARTMAN:
        report = await _maintain_partman(conn, retention_days, premake_days)
    else:
        report = await _maintain_timescaledb(conn, retention_days)
    pruned = await _prune_rejects(conn, retention_days or 90)
    closed = await make_children_private(conn)
    return f"{report}; {pruned} ingest reject(s) pruned; {closed} child table(s) made private"


async def make_children_private(conn: asyncpg.Connection) -> int:
    """Revoke every privilege a role other than the owner holds on a partition or chunk
    of the time-series tables; return how many children had any."""
    return int(await conn.fetchval("SELECT lifebox_private_time_series_children()"))


async def _has_extension(conn: asyncpg.Connection, name: str) -> bool:
    return bool(await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = $1", name))


async def _partman_schema(conn: asyncpg.Connection) -> str:
    schema = await conn.fetchval(
        "SELECT extnamespace::regnamespace::text FROM pg_extension WHERE extname = 'pg_partman'"
    )
    if schema is None:
        raise StorageError("telemetry_events is partitioned but pg_partman is not installed")
    return str(schema)


async def _maintain_partman(
    conn: asyncpg.Connection, retention_days: int | None, premake_days: int | None
) -> str:
    schema = await _partman_schema(conn)
    parents = [f"public.{table}" for table in TIME_SERIES_TABLES]
    if retention_days is not None:
        await conn.execute(
            f"UPDATE {schema}.part_config SET retention = $1 "
            "WHERE parent_table = ANY($2::text[]) AND retention IS DISTINCT FROM $1",
            f"{retention_days} days",
            parents,
        )
    if premake_days is not None:
        await conn.execute(
            f"UPDATE {schema}.part_config SET premake = $1 "
            "WHERE parent_table = ANY($2::text[]) AND premake <> $1",
            premake_days,
            parents,
        )
    before = await _partition_count(conn)
    for parent in parents:
        # p_jobmon: pg_jobmon is not part of our stack; without it partman logs nothing extra.
        await conn.execute(
            f"SELECT {schema}.run_maintenance(p_parent_table => $1, p_jobmon => false)", parent
        )
    after = await _partition_count(conn)
    newest = await newest_partition_bound(conn, "telemetry_events")
    in_default = await default_partition_rows(conn)
    ahead = newest.date().isoformat() if newest else "none"
    warning = f" (WARNING: {in_default} row(s) in default partitions)" if in_default else ""
    return (
        f"partman: {len(parents)} tables, {after} partitions ({after - before:+d}), "
        f"telemetry partitions up to {ahead}{warning}"
    )


async def _partition_count(conn: asyncpg.Connection) -> int:
    count = await conn.fetchval(
        "SELECT count(*) FROM pg_inherits WHERE inhparent = ANY($1::regclass[])",
        [f"public.{table}" for table in TIME_SERIES_TABLES],
    )
    return int(count)


async def newest_partition_bound(conn: asyncpg.Connection, table: str) -> datetime.datetime | None:
    """Upper bound of the newest (non-default) partition of a partitioned table."""
    bounds = await conn.fetch(
        "SELECT pg_get_expr(c.relpartbound, c.oid) AS bound FROM pg_inherits i "
        "JOIN pg_class c ON c.oid = i.inhrelid WHERE i.inhparent = $1::regclass",
        f"public.{table}",
    )
    newest: datetime.datetime | None = None
    for row in bounds:
        bound: str = row["bound"]
        if "TO (" not in bound:
            continue  # DEFAULT
        upper = bound.split("TO ('", 1)[1].split("')", 1)[0]
        value: datetime.datetime = await conn.fetchval("SELECT $1::text::timestamptz", upper)
        newest = value if newest is None or value > newest else newest
    return newest


async def default_partition_rows(conn: asyncpg.Connection) -> int:
    """Rows sitting in the default partitions: readings outside every made partition.

    They block making the partition for their range later, so they are worth an alert.
    """
    total = 0
    for table in TIME_SERIES_TABLES:
        exists = await conn.fetchval("SELECT to_regclass($1)", f"public.{table}_default")
        if exists:
            async with tenant_transaction(conn, None, staff=True):
                total += int(await conn.fetchval(f"SELECT count(*) FROM public.{table}_default"))
    return total


async def _maintain_timescaledb(conn: asyncpg.Connection, retention_days: int | None) -> str:
    if retention_days is None:
        return "timescaledb: policies run by the extension's scheduler"
    wanted = datetime.timedelta(days=retention_days)
    changed = 0
    for table in TIME_SERIES_TABLES:
        current = await conn.fetchval(
            "SELECT (config ->> 'drop_after')::interval FROM timescaledb_information.jobs "
            "WHERE proc_name = 'policy_retention' AND hypertable_schema = 'public' "
            "AND hypertable_name = $1",
            table,
        )
        if current == wanted:
            continue
        async with conn.transaction():
            await conn.execute(
                "SELECT remove_retention_policy($1::regclass, if_exists => true)",
                f"public.{table}",
            )
            await conn.execute(
                "SELECT add_retention_policy($1::regclass, $2::interval)", f"public.{table}", wanted
            )
        changed += 1
    return f"timescaledb: retention {retention_days} days ({changed} policy(ies) updated)"


async def _prune_rejects(conn: asyncpg.Connection, retention_days: int) -> int:
    async with tenant_transaction(conn, None, staff=True):
        result = await conn.execute(
            "DELETE FROM ingest_rejects WHERE received_at < now() - make_interval(days => $1)",
            retention_days,
        )
    return int(result.split()[-1])
