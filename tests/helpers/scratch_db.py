"""A throwaway database in the session cluster, prepared like the bootstrap prepares ours.

For tests that must start from an empty schema (migrations) or change database-wide state
(partition retention, first-admin seeding) without disturbing the shared ``lifebox`` one.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import asyncpg

from lifebox_grpc.runtime.postgres import OWNER_ROLE, SUPERUSER, dsn
from lifebox_grpc.store import migrations, seeds
from tests.helpers.services import Database


@asynccontextmanager
async def scratch_database(
    database: Database, *, migrate: bool = False, seed: bool = False
) -> AsyncIterator[str]:
    """Yield the owner DSN of a fresh database (extensions in place, optionally migrated)."""
    server = database.server
    name = f"scratch_{uuid.uuid4().hex[:12]}"
    admin = await asyncpg.connect(database.superuser_dsn)
    try:
        await admin.execute(f"CREATE DATABASE {name} OWNER {OWNER_ROLE}")
        conn = await asyncpg.connect(dsn(server.port, SUPERUSER, server.passwords.superuser, name))
        try:
            await conn.execute(
                f"""
                REVOKE ALL ON DATABASE {name} FROM PUBLIC;
                GRANT CONNECT ON DATABASE {name} TO lifebox_app, lifebox_ingest;
                REVOKE CREATE ON SCHEMA public FROM PUBLIC;
                ALTER SCHEMA public OWNER TO {OWNER_ROLE};
                CREATE EXTENSION pgcrypto;
                CREATE SCHEMA partman AUTHORIZATION {OWNER_ROLE};
                CREATE EXTENSION pg_partman SCHEMA partman;
                GRANT ALL ON ALL TABLES IN SCHEMA partman TO {OWNER_ROLE};
                GRANT EXECUTE ON ALL FUNCTIONS IN SCHEMA partman TO {OWNER_ROLE};
                GRANT EXECUTE ON ALL PROCEDURES IN SCHEMA partman TO {OWNER_ROLE};
                """
            )
            if server.timescaledb:
                await conn.execute("CREATE EXTENSION timescaledb")
        finally:
            await conn.close()
        owner_dsn = dsn(server.port, OWNER_ROLE, server.passwords.owner, name)
        if migrate:
            owner = await asyncpg.connect(owner_dsn)
            try:
                await migrations.migrate(owner)
                if seed:
                    await seeds.seed_reference(owner)
            finally:
                await owner.close()
        yield owner_dsn
    finally:
        await admin.execute(f"DROP DATABASE IF EXISTS {name} WITH (FORCE)")
        await admin.close()
