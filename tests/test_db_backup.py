"""`lifebox db backup` / `restore`: a populated database round-trips on both storage paths
(row counts and a checksum of every table equal), dumps are 0600, restores refuse a database
that holds data unless told, and the backup role can read but not write."""

from __future__ import annotations

import stat
import uuid
from pathlib import Path

import asyncpg
import pytest

from tests.helpers.db_ops import backup_role, lifebox, superuser_dsn, table_fingerprints
from tests.helpers.services import Database
from tests.helpers.tenants import populate_tenant

pytestmark = pytest.mark.timeout(600)


async def _drop(database: Database, name: str) -> None:
    admin = await asyncpg.connect(database.superuser_dsn)
    try:
        await admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
    finally:
        await admin.close()


async def test_backup_and_restore_round_trip_every_table(
    storage_database: Database, tmp_path: Path
) -> None:
    owner = await asyncpg.connect(storage_database.owner_dsn)
    try:
        await populate_tenant(owner)
        await populate_tenant(owner)
    finally:
        await owner.close()
    target = f"restored_{uuid.uuid4().hex[:10]}"
    async with backup_role(storage_database) as backup_dsn:
        try:
            dump = tmp_path / "full.dump"
            made = lifebox(
                "db", "backup", str(dump), env={"LIFEBOX_BACKUP_DATABASE_URL": backup_dsn}
            )
            assert made.returncode == 0, made.stderr
            assert stat.S_IMODE(dump.stat().st_mode) == 0o600
            assert "backup full.dump [" in made.stderr  # progress, table by table
            assert "public.telemetry_events" in made.stderr
            restored = lifebox(
                "db",
                "restore",
                str(dump),
                env={"LIFEBOX_SUPERUSER_DATABASE_URL": superuser_dsn(storage_database, target)},
            )
            assert restored.returncode == 0, restored.stderr
            before = await table_fingerprints(storage_database.superuser_lifebox_dsn)
            after = await table_fingerprints(superuser_dsn(storage_database, target))
            assert set(before) == set(after)
            assert {t for t, (n, _) in before.items() if n} >= {
                "public.telemetry_events",
                "public.devices",
                "public.users",
            }
            assert before == after
            # The restored database is usable as the application role sees it.
            copy = await asyncpg.connect(superuser_dsn(storage_database, target))
            try:
                grants = await copy.fetchval(
                    "SELECT has_database_privilege('lifebox_app', current_database(), 'CONNECT')"
                )
                assert grants is True
            finally:
                await copy.close()
        finally:
            await _drop(storage_database, target)


async def test_restore_refuses_a_database_that_holds_data(
    database: Database, tmp_path: Path
) -> None:
    async with backup_role(database) as backup_dsn:
        dump = tmp_path / "schema.dump"
        made = lifebox(
            "db",
            "backup",
            str(dump),
            "--schema-only",
            env={"LIFEBOX_BACKUP_DATABASE_URL": backup_dsn},
        )
        assert made.returncode == 0, made.stderr
    refused = lifebox(
        "db",
        "restore",
        str(dump),
        env={"LIFEBOX_SUPERUSER_DATABASE_URL": database.superuser_lifebox_dsn},
    )
    assert refused.returncode == 2
    assert "is not empty" in refused.stderr
    assert "--force" in refused.stderr
    assert "Traceback" not in refused.stderr


async def test_schema_then_data_only_dumps_restore_to_the_same_rows(
    storage_database: Database, tmp_path: Path
) -> None:
    database = storage_database
    owner = await asyncpg.connect(database.owner_dsn)
    try:
        await populate_tenant(owner)
    finally:
        await owner.close()
    target = f"restored_{uuid.uuid4().hex[:10]}"
    target_env = {"LIFEBOX_SUPERUSER_DATABASE_URL": superuser_dsn(database, target)}
    async with backup_role(database) as backup_dsn:
        env = {"LIFEBOX_BACKUP_DATABASE_URL": backup_dsn}
        try:
            for kind in ("schema", "data"):
                made = lifebox("db", "backup", str(tmp_path / kind), f"--{kind}-only", env=env)
                assert made.returncode == 0, made.stderr
            for kind in ("schema", "data"):
                done = lifebox("db", "restore", str(tmp_path / kind), env=target_env)
                assert done.returncode == 0, done.stderr
            before = await table_fingerprints(database.superuser_lifebox_dsn)
            after = await table_fingerprints(superuser_dsn(database, target))
            if database.storage == "partman":  # pg_partman's own state came along
                assert before["partman.part_config"][0] >= 1
            else:
                assert before["timescaledb hypertables"][0] >= 1
            assert before == after
            again = lifebox("db", "restore", str(tmp_path / "data"), env=target_env)
            assert again.returncode == 2
            assert "holds rows" in again.stderr
        finally:
            await _drop(database, target)


async def test_backup_role_reads_every_tenant_but_writes_nothing(database: Database) -> None:
    owner = await asyncpg.connect(database.owner_dsn)
    try:
        await populate_tenant(owner)
    finally:
        await owner.close()
    async with backup_role(database) as backup_dsn:
        conn = await asyncpg.connect(backup_dsn)
        try:
            assert await conn.fetchval("SELECT count(DISTINCT client_id) FROM devices") >= 1
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("DELETE FROM devices")
            with pytest.raises(asyncpg.InsufficientPrivilegeError):
                await conn.execute("CREATE TABLE backup_may_not (x int)")
        finally:
            await conn.close()
