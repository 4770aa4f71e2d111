"""`lifebox db status`: what an operator asks first about the database, read-only.

It connects as the read-only backup role (every table readable, nothing writable) and reports
the connection, the storage path (TimescaleDB hypertables or pg_partman partitions) with
their chunks or partitions, compression and retention, table sizes largest first, sessions
per role against the pool size, a standby's replay lag when one is configured, and the
migrations not yet applied.
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Any

import asyncpg

from lifebox_grpc.store import migrations

# A table's size with its partitions or chunks (both are inheritance children).
_TABLE_SIZES = """
SELECT c.oid::regclass::text AS name,
       (WITH RECURSIVE tree(relid) AS (
            SELECT c.oid
            UNION ALL
            SELECT i.inhrelid FROM pg_inherits i JOIN tree t ON i.inhparent = t.relid)
        SELECT sum(pg_total_relation_size(relid)) FROM tree) AS bytes
FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition
ORDER BY bytes DESC, name
"""
# TimescaleDB's own count also holds compressed chunks, which are not children.
_HYPERTABLE_SIZES = """
SELECT format('%I', hypertable_name) AS name,
       hypertable_size(format('%I.%I', hypertable_schema, hypertable_name)::regclass) AS bytes
FROM timescaledb_information.hypertables WHERE hypertable_schema = 'public'
"""
_CONNECTIONS = """
SELECT coalesce(usename, '(background)') AS role, count(*) AS sessions,
       count(*) FILTER (WHERE state = 'active') AS active
FROM pg_stat_activity WHERE datname = current_database()
GROUP BY 1 ORDER BY 2 DESC, 1
"""
_PARTMAN = """
SELECT p.parent_table, p.partition_interval, p.premake, p.retention,
       (SELECT count(*) FROM pg_inherits i WHERE i.inhparent = p.parent_table::regclass)
         AS partitions,
       (SELECT min(pg_get_expr(c.relpartbound, c.oid)) FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = p.parent_table::regclass
            AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT') AS oldest,
       (SELECT max(pg_get_expr(c.relpartbound, c.oid)) FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = p.parent_table::regclass
            AND pg_get_expr(c.relpartbound, c.oid) <> 'DEFAULT') AS newest,
       (SELECT pg_total_relation_size(c.oid) FROM pg_inherits i
          JOIN pg_class c ON c.oid = i.inhrelid
          WHERE i.inhparent = p.parent_table::regclass
            AND pg_get_expr(c.relpartbound, c.oid) = 'DEFAULT') AS default_bytes
FROM partman.part_config p ORDER BY 1
"""
_CHUNKS = """
SELECT format('%I.%I', h.hypertable_schema, h.hypertable_name) AS hypertable,
       h.compression_enabled,
       (SELECT count(*) FROM timescaledb_information.chunks c
          WHERE c.hypertable_schema = h.hypertable_schema
            AND c.hypertable_name = h.hypertable_name) AS chunks,
       (SELECT count(*) FILTER (WHERE c.is_compressed) FROM timescaledb_information.chunks c
          WHERE c.hypertable_schema = h.hypertable_schema
            AND c.hypertable_name = h.hypertable_name) AS compressed,
       (SELECT min(c.range_start)::text FROM timescaledb_information.chunks c
          WHERE c.hypertable_schema = h.hypertable_schema
            AND c.hypertable_name = h.hypertable_name) AS oldest,
       (SELECT max(c.range_end)::text FROM timescaledb_information.chunks c
          WHERE c.hypertable_schema = h.hypertable_schema
            AND c.hypertable_name = h.hypertable_name) AS newest,
       (SELECT string_agg(format('%s %s', j.proc_name, j.config), '; ' ORDER BY j.proc_name)
          FROM timescaledb_information.jobs j
          WHERE j.hypertable_schema = h.hypertable_schema
            AND j.hypertable_name = h.hypertable_name) AS policies
FROM timescaledb_information.hypertables h ORDER BY 1
"""


def _plain(value: Any) -> Any:
    if value is None or isinstance(value, bool | int | float | str):
        return value
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    return str(value)


def _records(rows: list[asyncpg.Record]) -> list[dict[str, Any]]:
    return [{key: _plain(value) for key, value in row.items()} for row in rows]


async def _table_sizes(conn: asyncpg.Connection, timescaledb: bool) -> list[dict[str, Any]]:
    tables = _records(await conn.fetch(_TABLE_SIZES))
    if timescaledb:
        sizes = {r["name"]: _plain(r["bytes"]) for r in await conn.fetch(_HYPERTABLE_SIZES)}
        for table in tables:
            table["bytes"] = sizes.get(table["name"], table["bytes"])
        tables.sort(key=lambda t: (-(t["bytes"] or 0), t["name"]))
    return tables


async def _replica_lag(replica_dsn: str | None) -> dict[str, Any] | None:
    if replica_dsn is None:
        return None
    try:
        conn = await asyncpg.connect(replica_dsn, timeout=5)
    except (OSError, asyncpg.PostgresError) as exc:
        return {"reachable": False, "error": str(exc)}
    try:
        row = await conn.fetchrow(
            "SELECT pg_is_in_recovery() AS standby, "
            "extract(epoch FROM now() - pg_last_xact_replay_timestamp()) AS lag_seconds"
        )
        lag = row["lag_seconds"]  # NULL on a primary, or before a standby replayed anything
        return {
            "reachable": True,
            "standby": row["standby"],
            "lag_seconds": None if lag is None else float(lag),
        }
    finally:
        await conn.close()


async def collect(dsn: str, *, pool_max: int, replica_dsn: str | None) -> dict[str, Any]:
    """Everything `db status` shows, as plain values (what ``--json`` prints)."""
    conn = await asyncpg.connect(dsn)
    try:
        extensions = {
            r["extname"]: r["extversion"]
            for r in await conn.fetch("SELECT extname, extversion FROM pg_extension")
        }
        timescaledb = "timescaledb" in extensions
        out: dict[str, Any] = {
            "connection": {
                "database": await conn.fetchval("SELECT current_database()"),
                "user": await conn.fetchval("SELECT current_user"),
                "server": await conn.fetchval(
                    "SELECT coalesce(inet_server_addr()::text, 'unix socket') || ':' || "
                    "current_setting('port')"
                ),
                "server_version": await conn.fetchval("SHOW server_version"),
                "in_recovery": await conn.fetchval("SELECT pg_is_in_recovery()"),
            },
            "storage": {
                "path": "timescaledb" if timescaledb else "pg_partman",
                "version": extensions.get("timescaledb" if timescaledb else "pg_partman"),
            },
            "database_bytes": await conn.fetchval("SELECT pg_database_size(current_database())"),
            "tables": await _table_sizes(conn, timescaledb),
            "connections": {
                "max_connections": int(await conn.fetchval("SHOW max_connections")),
                "pool_max_per_process": pool_max,
                "by_role": _records(await conn.fetch(_CONNECTIONS)),
            },
        }
        if timescaledb:
            out["time_series"] = _records(await conn.fetch(_CHUNKS))
        elif "pg_partman" in extensions:
            out["time_series"] = _records(await conn.fetch(_PARTMAN))
        else:
            out["time_series"] = []
        out["replica"] = await _replica_lag(replica_dsn)
        out["pending_migrations"] = [m.name for m in await migrations.pending(conn)]
        return out
    finally:
        await conn.close()


def _size(value: Any) -> str:
    number = float(value or 0)
    for unit in ("B", "kB", "MB", "GB", "TB"):
        if number < 1024 or unit == "TB":
            return f"{number:.0f} {unit}" if unit == "B" else f"{number:.1f} {unit}"
        number /= 1024
    return str(value)


def _bound(expression: str | None) -> str:
    """``FOR VALUES FROM ('a') TO ('b')`` as ``a .. b``."""
    found = re.search(r"FROM \('([^']+)'\) TO \('([^']+)'\)", expression or "")
    return f"{found.group(1)} .. {found.group(2)}" if found else str(expression)


def render(status: dict[str, Any], top: int = 15) -> str:
    """The status for people."""
    c, s = status["connection"], status["storage"]
    lines = [
        f"connection   {c['user']}@{c['server']}/{c['database']}",
        f"server       PostgreSQL {c['server_version']}"
        + ("  (standby)" if c["in_recovery"] else ""),
        f"storage      {s['path']} {s['version'] or ''}".rstrip(),
        f"size         {_size(status['database_bytes'])}",
        "",
        f"largest tables (of {len(status['tables'])}):",
    ]
    lines += [f"  {_size(t['bytes']):>10}  {t['name']}" for t in status["tables"][:top]]
    conns = status["connections"]
    lines += [
        "",
        f"connections  {sum(r['sessions'] for r in conns['by_role'])} of "
        f"{conns['max_connections']} (each process's pool: at most "
        f"{conns['pool_max_per_process']})",
    ]
    lines += [
        f"  {r['role']:24} {r['sessions']:4} sessions, {r['active']} active"
        for r in conns["by_role"]
    ]
    lines += ["", "time series:"]
    for t in status["time_series"]:
        if "chunks" in t:
            lines.append(
                f"  {t['hypertable']}: {t['chunks']} chunks ({t['compressed']} compressed), "
                f"{t['oldest']} .. {t['newest']}; compression "
                f"{'on' if t['compression_enabled'] else 'off'}; policies: "
                f"{t['policies'] or 'none'}"
            )
        else:
            lines.append(
                f"  {t['parent_table']}: {t['partitions']} partitions (with the default) every "
                f"{t['partition_interval']}, premake {t['premake']}, retention "
                f"{t['retention'] or 'none'}; oldest {_bound(t['oldest'])}; newest "
                f"{_bound(t['newest'])}; default partition {_size(t['default_bytes'])}"
            )
    replica = status["replica"]
    if replica is None:
        lines.append("\nreplica      none configured (LIFEBOX_REPLICA_DATABASE_URL)")
    elif not replica["reachable"]:
        lines.append(f"\nreplica      unreachable: {replica['error']}")
    else:
        lines.append(f"\nreplica      replay lag {replica['lag_seconds']} s")
    pending = status["pending_migrations"]
    lines.append(
        f"migrations   {len(pending)} pending: {', '.join(pending)} (run `lifebox migrate`)"
        if pending
        else "migrations   up to date"
    )
    return "\n".join(lines)
