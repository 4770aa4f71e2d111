"""Running `lifebox db …` against a test cluster, and what proves two databases equal."""

from __future__ import annotations

import os
import secrets
import subprocess
import sys
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import asyncpg

from lifebox_grpc.runtime.postgres import BACKUP_ROLE, SUPERUSER, dsn, grant_backup_sql
from tests.helpers.services import Database


def lifebox(
    *args: str, env: dict[str, str], cwd: Path | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    """`lifebox` in a child with only the LIFEBOX_* settings given (none inherited)."""
    base = {k: v for k, v in os.environ.items() if not k.startswith("LIFEBOX_")}
    return subprocess.run(
        [sys.executable, "-m", "lifebox_grpc.cli", *args],
        capture_output=True,
        text=True,
        env={**base, **env},
        cwd=cwd,
        check=False,
        timeout=timeout,
    )


def superuser_dsn(database: Database, name: str) -> str:
    server = database.server
    return dsn(server.port, SUPERUSER, server.passwords.superuser, name, server.socket_dir)


@asynccontextmanager
async def backup_role(database: Database) -> AsyncIterator[str]:
    """The lifebox_backup role made as the bootstrap makes it; yields its DSN, then drops it
    (other tests count the cluster's lifebox_* roles)."""
    server = database.server
    password = secrets.token_urlsafe(16)
    admin = await asyncpg.connect(database.superuser_lifebox_dsn)
    try:
        literal = await admin.fetchval("SELECT quote_literal($1)", password)
        await admin.execute(
            f"CREATE ROLE {BACKUP_ROLE} LOGIN NOSUPERUSER BYPASSRLS NOCREATEDB NOCREATEROLE "
            f"PASSWORD {literal}"
        )
        await admin.execute(grant_backup_sql("lifebox"))
        yield dsn(server.port, BACKUP_ROLE, password, "lifebox", server.socket_dir)
    finally:
        await admin.execute(f"REVOKE ALL ON DATABASE lifebox FROM {BACKUP_ROLE}")
        await admin.execute(f"DROP ROLE IF EXISTS {BACKUP_ROLE}")
        await admin.close()


_TABLES = """
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND NOT c.relispartition
  AND (n.nspname = 'public' OR (n.nspname = 'partman' AND c.relname = 'part_config'))
ORDER BY 1
"""


async def table_fingerprints(superuser_dsn: str) -> dict[str, tuple[int, str]]:
    """Every table's row count and an md5 of its rows in a fixed order (as a superuser, so
    row-level security hides nothing)."""
    conn = await asyncpg.connect(superuser_dsn)
    try:
        out = {}
        for (table,) in await conn.fetch(_TABLES):
            row = await conn.fetchrow(
                f"SELECT count(*) AS n, md5(coalesce(string_agg(t::text, '|' ORDER BY t::text), "
                f"'')) AS sum FROM {table} t"
            )
            out[table] = (row["n"], row["sum"])
        if await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'"):
            # Still hypertables, with the same chunks (a restore that lost TimescaleDB's
            # catalogue leaves plain tables whose rows would still count the same).
            row = await conn.fetchrow(
                "SELECT count(*) AS n, md5(string_agg(format('%s:%s', hypertable_name, "
                "num_chunks), ',' ORDER BY hypertable_name)) AS sum "
                "FROM timescaledb_information.hypertables"
            )
            out["timescaledb hypertables"] = (row["n"], row["sum"])
        return out
    finally:
        await conn.close()
