"""`lifebox db status`, `lifebox migrate --dry-run` and `lifebox db reset`."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import urlsplit

import asyncpg
import pytest

from lifebox_grpc.store.migrations import load_migrations
from tests.helpers.db_ops import backup_role, lifebox, superuser_dsn
from tests.helpers.scratch_db import scratch_database
from tests.helpers.services import Database
from tests.helpers.tenants import populate_tenant

pytestmark = pytest.mark.timeout(300)


async def test_status_reports_storage_sizes_sessions_and_time_series(
    storage_database: Database,
) -> None:
    owner = await asyncpg.connect(storage_database.owner_dsn)
    try:
        await populate_tenant(owner)  # a reading: a chunk on TimescaleDB
    finally:
        await owner.close()
    async with backup_role(storage_database) as backup_dsn:
        env = {
            "LIFEBOX_BACKUP_DATABASE_URL": backup_dsn,
            # A primary given as the replica: reachable, and says it is no standby.
            "LIFEBOX_REPLICA_DATABASE_URL": storage_database.app_dsn,
        }
        result = lifebox("db", "status", "--json", env=env)
        assert result.returncode == 0, result.stderr
        status = json.loads(result.stdout)
        text = lifebox("db", "status", env=env)
    assert text.returncode == 0, text.stderr
    assert status["connection"]["user"] == "lifebox_backup"
    assert status["connection"]["server_version"].startswith("15")
    assert status["storage"]["path"] == (
        "timescaledb" if storage_database.storage == "timescaledb" else "pg_partman"
    )
    sizes = [t["bytes"] for t in status["tables"]]
    assert sizes == sorted(sizes, reverse=True)
    assert "telemetry_events" in {t["name"] for t in status["tables"]}
    series = {t.get("hypertable") or t.get("parent_table"): t for t in status["time_series"]}
    events = series["public.telemetry_events"]
    assert (events.get("chunks") if "chunks" in events else events["partitions"]) >= 1
    roles = {r["role"] for r in status["connections"]["by_role"]}
    assert "lifebox_backup" in roles
    assert status["replica"] == {"reachable": True, "standby": False, "lag_seconds": None}
    assert status["pending_migrations"] == []
    assert "migrations   up to date" in text.stdout
    assert "telemetry_events" in text.stdout
    password = urlsplit(backup_dsn).password
    assert password
    assert password not in result.stdout
    assert password not in text.stdout


async def test_migrate_dry_run_lists_what_would_run_and_changes_nothing(
    database: Database, tmp_path: Path
) -> None:
    async with scratch_database(database) as owner_dsn:
        env = {"LIFEBOX_HOME": str(tmp_path), "LIFEBOX_OWNER_DATABASE_URL": owner_dsn}
        result = lifebox("migrate", "--dry-run", env=env)
        assert result.returncode == 0, result.stderr
        names = [m.name for m in load_migrations()]
        assert result.stdout.splitlines()[: len(names)] == [f"would apply {n}" for n in names]
        conn = await asyncpg.connect(owner_dsn)
        try:
            assert await conn.fetchval("SELECT to_regclass('schema_migrations')") is None
            await conn.close()
            done = lifebox("migrate", env=env)
            assert done.returncode == 0, done.stderr
            again = lifebox("migrate", "--dry-run", env=env)
            assert again.stdout.strip() == "database is up to date"
        finally:
            await conn.close()


async def test_reset_is_refused_in_prod_and_on_a_foreign_database_unless_told(
    database: Database, tmp_path: Path
) -> None:
    async with scratch_database(database, migrate=True, seed=True) as owner_dsn:
        name = urlsplit(owner_dsn).path.lstrip("/")
        env = {
            "LIFEBOX_HOME": str(tmp_path),
            "LIFEBOX_OWNER_DATABASE_URL": owner_dsn,
            "LIFEBOX_SUPERUSER_DATABASE_URL": superuser_dsn(database, name),
        }
        conn = await asyncpg.connect(owner_dsn)
        try:
            await conn.execute("CREATE TABLE reset_marker (x int)")
        finally:
            await conn.close()
        prod = lifebox("db", "reset", "--yes-really", env={**env, "LIFEBOX_MODE": "prod"})
        assert prod.returncode == 2
        assert "prod" in prod.stderr
        foreign = lifebox("db", "reset", env=env)
        assert foreign.returncode == 2
        assert "--yes-really" in foreign.stderr
        done = lifebox("db", "reset", "--yes-really", env=env)
        assert done.returncode == 0, done.stderr
        first = load_migrations()[0].name
        assert first in done.stderr  # progress names each migration as it runs
        conn = await asyncpg.connect(owner_dsn)
        try:
            assert await conn.fetchval("SELECT to_regclass('reset_marker')") is None
            applied = await conn.fetchval("SELECT count(*) FROM schema_migrations")
            assert applied == len(load_migrations())
            assert await conn.fetchval("SELECT count(*) FROM roles") >= 5
            grants = await conn.fetchval(
                "SELECT has_database_privilege('lifebox_app', current_database(), 'CONNECT')"
            )
            assert grants is True
        finally:
            await conn.close()
