"""`lifebox_apply_grants()` alone rebuilds what the migrations granted the runtime roles.

An operator whose runtime roles are created after the migrations ran (an external database)
runs the function once; an operator who runs it again must not widen anything.
"""

from __future__ import annotations

import asyncpg

RUNTIME_ROLES = ["lifebox_app", "lifebox_ingest"]

# Table- and column-level privileges of the runtime roles on our own tables (partitions are
# reached through their parent, whose grant is what counts).
_PRIVILEGES = """
SELECT 'table' AS level, t.grantee, t.table_name, '' AS column_name, t.privilege_type
FROM information_schema.role_table_grants t
JOIN pg_class c ON c.relname = t.table_name AND c.relnamespace = 'public'::regnamespace
WHERE t.grantee = ANY($1) AND t.table_schema = 'public' AND NOT c.relispartition
UNION ALL
SELECT 'column', p.grantee, p.table_name, p.column_name, p.privilege_type
FROM information_schema.column_privileges p
JOIN pg_class c ON c.relname = p.table_name AND c.relnamespace = 'public'::regnamespace
WHERE p.grantee = ANY($1) AND p.table_schema = 'public' AND NOT c.relispartition
  -- a table-level grant shows on every column too: keep only the column-only ones
  AND NOT EXISTS (
      SELECT 1 FROM information_schema.role_table_grants t
      WHERE t.grantee = p.grantee AND t.table_schema = 'public'
        AND t.table_name = p.table_name AND t.privilege_type = p.privilege_type)
ORDER BY 1, 2, 3, 4, 5
"""


async def _privileges(conn: asyncpg.Connection) -> list[tuple[str, ...]]:
    return [tuple(row) for row in await conn.fetch(_PRIVILEGES, RUNTIME_ROLES)]


async def test_the_function_rebuilds_every_grant_and_rerunning_widens_nothing(
    owner_conn: asyncpg.Connection,
) -> None:
    migrated = await _privileges(owner_conn)
    assert ("column", "lifebox_ingest", "control_commands", "status", "SELECT") in migrated
    assert ("table", "lifebox_app", "device_latest_locations", "", "SELECT") in migrated
    tx = owner_conn.transaction()
    await tx.start()
    try:
        await owner_conn.execute("SELECT lifebox_apply_grants()")
        assert await _privileges(owner_conn) == migrated  # re-run: nothing widened
        # As if the roles had been made after the migrations: nothing granted yet.
        await owner_conn.execute(
            "REVOKE ALL ON ALL TABLES IN SCHEMA public FROM lifebox_app, lifebox_ingest"
        )
        assert await _privileges(owner_conn) == []
        await owner_conn.execute("SELECT lifebox_apply_grants()")
        assert await _privileges(owner_conn) == migrated
    finally:
        await tx.rollback()
