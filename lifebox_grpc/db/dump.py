"""`lifebox db backup` and `lifebox db restore`: pg_dump/pg_restore in custom format.

A dump holds credential hashes and payment tokens: it is written 0600 (to a ``.partial``
file renamed when pg_dump succeeded, so a failed run never leaves a file that looks whole).
Backups run as the read-only ``lifebox_backup`` role (BYPASSRLS: row-level security is
forced on tenant tables, and a dump must see every tenant); restores as a superuser, because
they create the database and its extensions. Passwords reach the programs through libpq's
environment, never their command line.

The seed's three kinds: full; schema (a full dump without our tables' rows, so that
pg_partman's and TimescaleDB's own state, which `--schema-only` would drop, comes along);
data (our tables' rows only), restored into the database its schema dump made.

Custom format is one file that pg_restore can load in parallel (``--jobs``); pg_dump itself
is single-process in that format (parallel dumps need the directory format). TimescaleDB's
catalogue must not be loaded by parallel sessions: with the extension present the restore
runs ``timescaledb_pre_restore()``, one job, then ``timescaledb_post_restore()``.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
import subprocess
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from pathlib import Path

import asyncpg

from lifebox_grpc.db.failures import INSTALL_CLIENT, MissingBinaryError
from lifebox_grpc.db.progress import Progress
from lifebox_grpc.db.targets import Conninfo
from lifebox_grpc.runtime.postgres import OWNER_ROLE, PG_BIN


class Kind(StrEnum):
    """The seed's three backup kinds."""

    FULL = "full"
    SCHEMA = "schema"
    DATA = "data"


class RestoreRefusedError(RuntimeError):
    """The target database holds data and the restore was not told to replace it."""


# The extensions keep their own state in tables (pg_partman's part_config, TimescaleDB's
# catalogue of hypertables and chunks) that `pg_dump --schema-only` leaves out: restored,
# such a schema has tables that are no longer partitioned by pg_partman or no longer
# hypertables. So a schema dump is a full dump without the rows of our own tables (the
# extensions' state and schema_migrations kept), and a data dump is the rest: our rows only.
_LEDGER = "public.schema_migrations"
_DATA_FLAGS = [
    "--data-only",
    "--exclude-schema=partman",
    "--exclude-schema=_timescaledb_catalog",
    "--exclude-schema=_timescaledb_config",
    f"--exclude-table-data={_LEDGER}",
]
_OUR_TABLES_WITH_ROWS = """
SELECT format('%I.%I', n.nspname, c.relname) FROM pg_class c
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p') AND format('%I.%I', n.nspname, c.relname) <> $1
  AND (n.nspname = 'public' OR n.nspname = '_timescaledb_internal')
ORDER BY 1
"""
_DUMPING = re.compile(r'dumping contents of table "([^"]+)"')
_RESTORING = re.compile(r"(processing data for table|creating [A-Z ]+) \"?([^\"]+)\"?")
# Our tables, with partitions and chunks (not the extensions' own).
_USER_TABLES = """
SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE c.relkind IN ('r', 'p')
  AND n.nspname NOT IN ('pg_catalog', 'information_schema')
  AND n.nspname NOT LIKE 'pg\\_toast%'
  AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass
                  AND d.objid = c.oid AND d.deptype = 'e')
"""


def program(name: str) -> str:
    """The path of a PostgreSQL client program, or a :class:`MissingBinaryError`."""
    bin_dir = PG_BIN
    # PostgreSQL 15's own first: Debian's /usr/bin wrapper picks the newest client installed,
    # whose archives an older pg_restore cannot read.
    found = str(bin_dir / name) if (bin_dir / name).exists() else shutil.which(name)
    if found is None:
        raise MissingBinaryError(name, INSTALL_CLIENT)
    return found


def default_file(kind: Kind) -> Path:
    stamp = datetime.now(UTC).strftime("%Y%m%d-%H%M%S")
    suffix = "" if kind is Kind.FULL else f"-{kind.value}"
    return Path(f"lifebox-{stamp}{suffix}.dump")


def _env(target: Conninfo) -> dict[str, str]:
    return {**os.environ, **target.env()}


async def _count_tables(target: Conninfo, *, dumped: bool = False) -> int:
    """Our tables; with ``dumped``, also the extensions' configuration tables, whose rows
    pg_dump copies too (what the progress counts)."""
    conn = await asyncpg.connect(target.dsn)
    try:
        extra = "SELECT coalesce(sum(cardinality(extconfig)), 0) FROM pg_extension"
        return int(await conn.fetchval(_USER_TABLES)) + (
            int(await conn.fetchval(extra)) if dumped else 0
        )
    finally:
        await conn.close()


async def _kind_flags(target: Conninfo, kind: Kind) -> list[str]:
    if kind is Kind.FULL:
        return []
    if kind is Kind.DATA:
        return list(_DATA_FLAGS)
    conn = await asyncpg.connect(target.dsn)
    try:
        tables = [r[0] for r in await conn.fetch(_OUR_TABLES_WITH_ROWS, _LEDGER)]
    finally:
        await conn.close()
    return [f"--exclude-table-data={table}" for table in tables]


@dataclass(frozen=True)
class BackupResult:
    path: Path
    size: int
    tables: int


def backup(target: Conninfo, path: Path, kind: Kind) -> BackupResult:
    """Dump ``target`` to ``path`` (0600), showing each table as it is dumped."""
    pg_dump = program("pg_dump")
    # A schema dump copies only the extensions' state: no count worth showing.
    total = asyncio.run(_count_tables(target, dumped=True)) if kind is not Kind.SCHEMA else 0
    flags = asyncio.run(_kind_flags(target, kind))
    partial = path.with_name(path.name + ".partial")
    fd = os.open(partial, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    os.fchmod(fd, 0o600)
    progress = Progress(f"backup {path.name}", total)
    try:
        proc = subprocess.Popen(
            [pg_dump, "--format=custom", "--verbose", "--no-password", *flags],
            stdout=fd,
            stderr=subprocess.PIPE,
            env=_env(target),
            text=True,
        )
        errors = _follow(proc, progress, _DUMPING)
    finally:
        os.close(fd)
    if proc.returncode != 0:
        partial.unlink(missing_ok=True)
        raise subprocess.CalledProcessError(proc.returncode, "pg_dump", stderr="\n".join(errors))
    partial.replace(path)
    size = path.stat().st_size
    progress.finish(f"wrote {path} ({size / 1e6:.1f} MB, mode 0600)")
    return BackupResult(path, size, progress.done)


def _follow(proc: subprocess.Popen[str], progress: Progress, step: re.Pattern[str]) -> list[str]:
    """Show each step the verbose program reports; return its error lines."""
    errors = []
    assert proc.stderr is not None
    for line in proc.stderr:
        match = step.search(line)
        if match:
            progress.step(match.group(match.lastindex or 0))
        elif "error" in line.lower() or "warning" in line.lower():
            errors.append(line.rstrip())
    proc.wait()
    return errors


def _archive_kind(listing: str) -> Kind:
    """Which kind a dump is, from its table of contents: rows of our own tables (not the
    extensions' state, not the migrations' ledger) and definitions of tables."""
    entries = [line for line in listing.splitlines() if line and not line.startswith(";")]
    ours = re.compile(r" TABLE DATA (public|_timescaledb_internal) (?!schema_migrations )")
    data = any(ours.search(line) for line in entries)
    schema = any(" TABLE " in line and " TABLE DATA " not in line for line in entries)
    return Kind.FULL if data and schema else Kind.DATA if data else Kind.SCHEMA


async def _has_rows(conn: asyncpg.Connection) -> str | None:
    """A table of ours that holds a row, or None."""
    tables = await conn.fetch(
        "SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables "
        "WHERE schemaname = 'public' AND tablename <> 'schema_migrations' ORDER BY 1"
    )
    for row in tables:
        if await conn.fetchval(f"SELECT EXISTS (SELECT 1 FROM {row['t']})"):
            return str(row["t"])
    return None


async def _recreate(admin: Conninfo, database: str) -> None:
    conn = await asyncpg.connect(admin.with_database("postgres").dsn)
    try:
        await conn.execute(f'DROP DATABASE IF EXISTS "{database}" WITH (FORCE)')
        await conn.execute(f'CREATE DATABASE "{database}" OWNER {OWNER_ROLE}')
    finally:
        await conn.close()


async def _database_exists(admin: Conninfo, database: str) -> bool:
    conn = await asyncpg.connect(admin.with_database("postgres").dsn)
    try:
        return bool(await conn.fetchval("SELECT 1 FROM pg_database WHERE datname = $1", database))
    finally:
        await conn.close()


def _database_acl(pg_restore: str, path: Path, listing: str, database: str) -> list[str]:
    """The dump's GRANT/REVOKE statements on its database (pg_restore emits them only with
    --create, which cannot be used: TimescaleDB must be prepared in the target first)."""
    lines = [line for line in listing.splitlines() if " DATABASE " in line]
    if not lines:
        return []
    use_list = path.with_name(path.name + ".acl-list")
    use_list.write_text("\n".join(lines) + "\n")
    try:
        script = subprocess.run(
            [pg_restore, "--create", "--schema-only", f"--use-list={use_list}", "-f", "-", path],
            capture_output=True,
            text=True,
            check=True,
        ).stdout
    finally:
        use_list.unlink(missing_ok=True)
    statements = []
    for line in script.splitlines():
        if re.match(r"^(GRANT|REVOKE) .* ON DATABASE ", line):
            statements.append(re.sub(r"ON DATABASE \S+ ", f'ON DATABASE "{database}" ', line))
    return statements


def restore(admin: Conninfo, path: Path, *, force: bool, jobs: int) -> Kind:
    """Restore ``path`` into ``admin.database``: a new or empty database, or, with
    ``force``, one whose contents are replaced. A data-only dump goes into a migrated
    database whose tables are empty (``force`` empties them first)."""
    pg_restore = program("pg_restore")
    if not path.is_file():
        raise FileNotFoundError(f"no dump at {path}")
    listing = subprocess.run(
        [pg_restore, "--list", str(path)], capture_output=True, text=True, check=True
    ).stdout
    kind = _archive_kind(listing)
    timescaledb = asyncio.run(_prepare(admin, kind, listing, force=force))
    total = sum(1 for line in listing.splitlines() if line and not line.startswith(";"))
    progress = Progress(f"restore {path.name}", total)
    flags = ["--disable-triggers"] if kind is Kind.DATA else []
    proc = subprocess.Popen(
        [
            pg_restore,
            "--verbose",
            "--no-password",
            "--exit-on-error",
            f"--jobs={1 if timescaledb else max(1, jobs)}",
            f"--dbname={admin.database}",
            *flags,
            str(path),
        ],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        env=_env(admin),
        text=True,
    )
    errors = _follow(proc, progress, _RESTORING)
    acl = _database_acl(pg_restore, path, listing, admin.database) if kind is not Kind.DATA else []
    asyncio.run(_finish(admin, timescaledb, acl))
    if proc.returncode != 0:
        raise subprocess.CalledProcessError(proc.returncode, "pg_restore", stderr="\n".join(errors))
    progress.finish(f"restored {path} ({kind.value}) into {admin.database}")
    return kind


async def _prepare(admin: Conninfo, kind: Kind, listing: str, *, force: bool) -> bool:
    """Make the target ready; True when TimescaleDB is in it (and now in restore mode)."""
    database = admin.database
    if kind is Kind.DATA:
        await _prepare_data_only(admin, force=force)
    else:
        if await _database_exists(admin, database):
            tables = await _count_tables(admin)
            if tables and not force:
                raise RestoreRefusedError(
                    f"database {database} is not empty ({tables} tables): restore replaces "
                    "nothing unless told (--force drops and recreates it)"
                )
        await _recreate(admin, database)
    conn = await asyncpg.connect(admin.dsn)
    try:
        timescaledb = bool(
            re.search(r" EXTENSION - timescaledb\b", listing)
            or await conn.fetchval("SELECT 1 FROM pg_extension WHERE extname = 'timescaledb'")
        )
        if timescaledb:
            await conn.execute("CREATE EXTENSION IF NOT EXISTS timescaledb")
            await conn.execute("SELECT timescaledb_pre_restore()")
        return timescaledb
    finally:
        await conn.close()


async def _finish(admin: Conninfo, timescaledb: bool, acl: list[str]) -> None:
    conn = await asyncpg.connect(admin.dsn)
    try:
        if timescaledb:
            await conn.execute("SELECT timescaledb_post_restore()")
        for statement in acl:
            await conn.execute(statement)
        await conn.execute("ANALYZE")
    finally:
        await conn.close()


async def _prepare_data_only(admin: Conninfo, *, force: bool) -> None:
    conn = await asyncpg.connect(admin.dsn)
    try:
        if not await _count_tables(admin):
            raise RestoreRefusedError(
                f"database {admin.database} has no schema: restore the --schema-only dump "
                "made with this data-only one first (or restore a full dump)"
            )
        table = await _has_rows(conn)
        if table and not force:
            raise RestoreRefusedError(
                f"database {admin.database} holds rows (in {table}): a data-only restore "
                "fills empty tables only unless told (--force empties every table first)"
            )
        if table:
            tables = await conn.fetch(
                "SELECT format('%I.%I', schemaname, tablename) AS t FROM pg_tables "
                "WHERE schemaname = 'public' AND tablename <> 'schema_migrations'"
            )
            names = ", ".join(str(row["t"]) for row in tables)
            await conn.execute(f"TRUNCATE {names} CASCADE")
    finally:
        await conn.close()
