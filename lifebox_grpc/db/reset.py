"""`lifebox db reset`: drop the database, make it again as it was made, migrate and seed.

Dev only. The new database gets what the old one had outside the migrations' reach (its
owner, its database-level grants, its extensions and their schemas: what the bootstrap or
the init script made), so the same reset works on the embedded cluster and on an external
one; the migrations and seeds then run as the owner, as `lifebox migrate` and `seed` do.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from dataclasses import dataclass

import asyncpg

from lifebox_grpc.db.progress import Progress
from lifebox_grpc.db.targets import Conninfo
from lifebox_grpc.store import migrations, seeds


class ResetRefusedError(RuntimeError):
    """The reset would destroy a database it must not touch without being told."""


@dataclass(frozen=True)
class _Shape:
    owner: str
    acl: list[tuple[str, str]]  # (grantee, privilege), PUBLIC as "PUBLIC"
    extensions: list[tuple[str, str]]  # (name, schema)


_ACL = """
SELECT CASE WHEN a.grantee = 0 THEN 'PUBLIC' ELSE quote_ident(pg_get_userbyid(a.grantee)) END,
       a.privilege_type
FROM pg_database d, aclexplode(d.datacl) a
WHERE d.datname = current_database() AND a.grantee <> d.datdba
"""


async def _shape(conn: asyncpg.Connection) -> _Shape:
    owner = await conn.fetchval(
        "SELECT pg_get_userbyid(datdba) FROM pg_database WHERE datname = current_database()"
    )
    acl = [(r[0], r[1]) for r in await conn.fetch(_ACL)]
    extensions = [
        (r["extname"], r["nspname"])
        for r in await conn.fetch(
            "SELECT e.extname, n.nspname FROM pg_extension e "
            "JOIN pg_namespace n ON n.oid = e.extnamespace WHERE e.extname <> 'plpgsql' "
            "ORDER BY e.oid"
        )
    ]
    return _Shape(str(owner), acl, extensions)


async def reset(
    admin: Conninfo,
    owner_dsn: str,
    *,
    demo_password_hash: str | None,
    then: Callable[[asyncpg.Connection], Awaitable[None]] | None = None,
) -> None:
    """Drop and recreate ``admin.database``, then migrate and seed it (and ``then``, as
    the owner: the dev platform admin)."""
    progress = Progress("reset", 5)
    database = admin.database
    conn = await asyncpg.connect(admin.dsn)
    try:
        shape = await _shape(conn)
    finally:
        await conn.close()
    progress.step(f"dropping {database}")
    maintenance = await asyncpg.connect(admin.with_database("postgres").dsn)
    try:
        await maintenance.execute(f'DROP DATABASE "{database}" WITH (FORCE)')
        await maintenance.execute(f'CREATE DATABASE "{database}" OWNER "{shape.owner}"')
    finally:
        await maintenance.close()
    progress.step(f"recreating {database} (owner {shape.owner})")
    conn = await asyncpg.connect(admin.dsn)
    try:
        await conn.execute(
            f'REVOKE ALL ON DATABASE "{database}" FROM PUBLIC;'
            f"REVOKE CREATE ON SCHEMA public FROM PUBLIC;"
            f'ALTER SCHEMA public OWNER TO "{shape.owner}";'
        )
        for grantee, privilege in shape.acl:
            await conn.execute(f'GRANT {privilege} ON DATABASE "{database}" TO {grantee}')
        for name, schema in shape.extensions:
            if schema != "public":
                await conn.execute(
                    f'CREATE SCHEMA IF NOT EXISTS "{schema}" AUTHORIZATION "{shape.owner}"'
                )
            await conn.execute(f'CREATE EXTENSION IF NOT EXISTS "{name}" SCHEMA "{schema}"')
            if name == "pg_partman":  # the migrations call it as the owner
                await conn.execute(
                    f'GRANT ALL ON SCHEMA "{schema}" TO "{shape.owner}";'
                    f'GRANT ALL ON ALL TABLES IN SCHEMA "{schema}" TO "{shape.owner}";'
                    f'GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA "{schema}" TO "{shape.owner}";'
                    f'GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA "{schema}" TO "{shape.owner}";'
                )
    finally:
        await conn.close()
    progress.step("migrating")
    owner = await asyncpg.connect(owner_dsn)
    try:
        applied = await migrations.migrate(owner, progress=lambda line: progress.show(line))
        progress.step(f"{len(applied)} migrations applied; seeding")
        await seeds.seed_reference(owner)
        if demo_password_hash is not None:
            await seeds.seed_demo(owner, demo_password_hash)
        if then is not None:
            await then(owner)
    finally:
        await owner.close()
    progress.finish(f"{database} reset, migrated and seeded")
