"""The migration runner: ordered SQL files, applied once each, under an advisory lock.

Each file in ``migrations/`` (``NNNN_name.sql``) runs in its own transaction as the owner
role. Its name and SHA-256 are recorded in ``schema_migrations``; a recorded file whose
content changed stops the run, because the database no longer matches what the file says.
"""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import asyncpg

# Any constant shared by every replica: two `migrate` runs serialise on it.
ADVISORY_LOCK_KEY = 0x11FEB0C5
MIGRATIONS_DIR = Path(
    os.environ.get("LIFEBOX_MIGRATIONS_DIR", Path(__file__).resolve().parents[2] / "migrations")
)

_CREATE_LEDGER = """
CREATE TABLE IF NOT EXISTS schema_migrations (
    name text PRIMARY KEY,
    checksum text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now()
)
"""


class MigrationError(RuntimeError):
    """The migrations can't be applied as they are."""


@dataclass(frozen=True)
class Migration:
    name: str
    sql: str

    @property
    def checksum(self) -> str:
        return hashlib.sha256(self.sql.encode()).hexdigest()


@dataclass(frozen=True)
class MigrationStatus:
    name: str
    applied: bool
    applied_at: str | None


def load_migrations(directory: Path = MIGRATIONS_DIR) -> list[Migration]:
    """The migration files in the order they apply."""
    files = sorted(directory.glob("[0-9][0-9][0-9][0-9]_*.sql"))
    return [Migration(path.stem, path.read_text()) for path in files]


async def _applied(conn: asyncpg.Connection) -> dict[str, asyncpg.Record]:
    await conn.execute(_CREATE_LEDGER)
    rows = await conn.fetch("SELECT name, checksum, applied_at FROM schema_migrations")
    return {row["name"]: row for row in rows}


def _check_edits(migrations: list[Migration], applied: dict[str, asyncpg.Record]) -> None:
    for migration in migrations:
        row = applied.get(migration.name)
        if row is not None and row["checksum"] != migration.checksum:
            raise MigrationError(
                f"migration {migration.name} was edited after it was applied "
                f"(recorded sha256 {row['checksum'][:12]}…, file {migration.checksum[:12]}…); "
                "write a new migration instead"
            )


async def migrate(
    conn: asyncpg.Connection,
    migrations: list[Migration] | None = None,
    progress: Callable[[str], None] | None = None,
) -> list[str]:
    """Apply every pending migration; return the names applied (empty when up to date)."""
    migrations = load_migrations() if migrations is None else migrations
    await conn.execute("SELECT pg_advisory_lock($1)", ADVISORY_LOCK_KEY)
    try:
        applied = await _applied(conn)
        _check_edits(migrations, applied)
        done = []
        pending = [m for m in migrations if m.name not in applied]
        for index, migration in enumerate(pending, 1):
            if progress:
                progress(f"[{index}/{len(pending)}] {migration.name}")
            async with conn.transaction():
                await conn.execute(migration.sql)
                await conn.execute(
                    "INSERT INTO schema_migrations (name, checksum) VALUES ($1, $2)",
                    migration.name,
                    migration.checksum,
                )
            done.append(migration.name)
        return done
    finally:
        await conn.execute("SELECT pg_advisory_unlock($1)", ADVISORY_LOCK_KEY)


async def status(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[MigrationStatus]:
    """Every known migration, applied or pending, in order."""
    migrations = load_migrations() if migrations is None else migrations
    applied = await _applied(conn)
    _check_edits(migrations, applied)
    return [
        MigrationStatus(
            m.name,
            m.name in applied,
            applied[m.name]["applied_at"].isoformat() if m.name in applied else None,
        )
        for m in migrations
    ]


async def pending(
    conn: asyncpg.Connection, migrations: list[Migration] | None = None
) -> list[Migration]:
    """The migrations :func:`migrate` would apply now, in order; nothing is changed (the
    ledger table is only read: a database that never ran a migration has all pending)."""
    migrations = load_migrations() if migrations is None else migrations
    exists = await conn.fetchval("SELECT to_regclass('schema_migrations') IS NOT NULL")
    rows = (
        await conn.fetch("SELECT name, checksum, applied_at FROM schema_migrations")
        if exists
        else []
    )
    applied = {row["name"]: row for row in rows}
    _check_edits(migrations, applied)
    return [m for m in migrations if m.name not in applied]
