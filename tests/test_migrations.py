"""The migration runner over the real migrations: once, in order, never edited, never racing."""

from __future__ import annotations

import asyncio

import asyncpg
import pytest

from lifebox_grpc.store import migrations
from lifebox_grpc.store.migrations import Migration, MigrationError
from tests.helpers.scratch_db import scratch_database
from tests.helpers.services import Database


def test_every_migration_opens_with_a_comment_on_its_intent() -> None:
    found = migrations.load_migrations()
    assert found, "no migrations found"
    for migration in found:
        number = migration.name.split("_", 1)[0]
        assert migration.sql.startswith(f"-- {number} "), migration.name


async def test_migrating_an_empty_database_applies_all_and_a_rerun_is_a_no_op(
    database: Database,
) -> None:
    async with scratch_database(database) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            applied = await migrations.migrate(conn)
            assert applied == [m.name for m in migrations.load_migrations()]
            assert await migrations.migrate(conn) == []
            assert all(row.applied for row in await migrations.status(conn))
        finally:
            await conn.close()


async def test_an_edited_applied_migration_is_refused(database: Database) -> None:
    async with scratch_database(database, migrate=True) as dsn:
        conn = await asyncpg.connect(dsn)
        try:
            edited = [
                Migration(m.name, m.sql + "\n-- edited\n") if i == 0 else m
                for i, m in enumerate(migrations.load_migrations())
            ]
            with pytest.raises(MigrationError, match="edited after it was applied"):
                await migrations.migrate(conn, edited)
            with pytest.raises(MigrationError):
                await migrations.status(conn, edited)
        finally:
            await conn.close()


async def test_two_concurrent_migrate_runs_apply_each_file_once(database: Database) -> None:
    async with scratch_database(database) as dsn:
        first, second = await asyncpg.connect(dsn), await asyncpg.connect(dsn)
        try:
            results = await asyncio.gather(migrations.migrate(first), migrations.migrate(second))
            names = [m.name for m in migrations.load_migrations()]
            assert sorted(results, key=len) == [[], names]
            count = await first.fetchval("SELECT count(*) FROM schema_migrations")
            assert count == len(names)
        finally:
            await first.close()
            await second.close()
