"""`lifebox_apply_grants()` alone rebuilds what the migrations granted the runtime roles.

An operator whose runtime roles are created after the migrations ran (an external database)
runs the function once; an operator who runs it again must not widen anything.
"""

from __future__ import annotations

import asyncpg

RUNTIME_ROLES = ["lifebox_app", "lifebox_ingest"]

# Every privilege the runtime roles hold, from the ACLs themselves: tables and sequences of
# schema public (partitions are reached through their parent, whose grant is what counts),
# their columns, the schema, the database and our functions.
_PRIVILEGES = """
WITH grants AS (
    SELECT 'relation' AS kind, c.relname AS object, '' AS col, a.grantee, a.privilege_type
    FROM pg_class c, aclexplode(c.relacl) a
    WHERE c.relnamespace = 'public'::regnamespace AND NOT c.relispartition
    UNION ALL
    SELECT 'column', c.relname, att.attname, a.grantee, a.privilege_type
    FROM pg_class c JOIN pg_attribute att ON att.attrelid = c.oid,
         aclexplode(att.attacl) a
    WHERE c.relnamespace = 'public'::regnamespace AND NOT c.relispartition
    UNION ALL
    SELECT 'schema', n.nspname, '', a.grantee, a.privilege_type
    FROM pg_namespace n, aclexplode(n.nspacl) a WHERE n.nspname = 'public'
    UNION ALL
    SELECT 'database', d.datname, '', a.grantee, a.privilege_type
    FROM pg_database d, aclexplode(d.datacl) a WHERE d.datname = current_database()
    UNION ALL
    SELECT 'function', p.oid::regprocedure::text, '', a.grantee, a.privilege_type
    FROM pg_proc p, aclexplode(p.proacl) a WHERE p.pronamespace = 'public'::regnamespace
)
SELECT kind, object, col, r.rolname, privilege_type
FROM grants JOIN pg_roles r ON r.oid = grants.grantee
WHERE r.rolname = ANY($1)
ORDER BY 1, 2, 3, 4, 5
"""

# What an operator's freshly created roles hold before the function runs (CONNECT comes from
# the init script, which is not the function's job).
_REVOKE_ALL = """
REVOKE ALL ON ALL TABLES IN SCHEMA public FROM lifebox_app, lifebox_ingest;
REVOKE ALL ON ALL SEQUENCES IN SCHEMA public FROM lifebox_app, lifebox_ingest;
REVOKE ALL ON ALL FUNCTIONS IN SCHEMA public FROM lifebox_app, lifebox_ingest;
REVOKE ALL ON SCHEMA public FROM lifebox_app, lifebox_ingest;
DO $$ BEGIN
    EXECUTE format('REVOKE TEMPORARY ON DATABASE %I FROM lifebox_app, lifebox_ingest',
                   current_database());
END $$;
"""


async def _privileges(conn: asyncpg.Connection) -> list[tuple[str, ...]]:
    return [tuple(row) for row in await conn.fetch(_PRIVILEGES, RUNTIME_ROLES)]


async def test_the_function_rebuilds_every_grant_and_rerunning_widens_nothing(
    owner_conn: asyncpg.Connection,
) -> None:
    migrated = await _privileges(owner_conn)
    for expected in (
        ("column", "control_commands", "status", "lifebox_ingest", "SELECT"),
        ("relation", "device_latest_locations", "", "lifebox_app", "SELECT"),
        ("schema", "public", "", "lifebox_ingest", "USAGE"),
        ("database", "lifebox", "", "lifebox_ingest", "TEMPORARY"),
    ):
        assert expected in migrated
    # The ingest role reads only some columns of the commands it acknowledges.
    assert ("relation", "control_commands", "", "lifebox_ingest", "SELECT") not in migrated
    tx = owner_conn.transaction()
    await tx.start()
    try:
        await owner_conn.execute("SELECT lifebox_apply_grants()")
        assert await _privileges(owner_conn) == migrated  # re-run: nothing widened
        # As if the roles had been made after the migrations: nothing granted yet.
        await owner_conn.execute(_REVOKE_ALL)
        assert {p[0] for p in await _privileges(owner_conn)} <= {"database"}  # CONNECT
        await owner_conn.execute("SELECT lifebox_apply_grants()")
        assert await _privileges(owner_conn) == migrated
    finally:
        await tx.rollback()
