"""Each process checks, at start, that the database role behind its DSN is the one it must be.

Row-level security is the second wall between tenants; a DSN that points `serve` at a
superuser, a BYPASSRLS role or a table owner (FORCE makes owners subject to policies, but an
owner can turn them off) silently removes it. The ingest role bypasses row-level security by
design (COPY cannot run under it) and is held to INSERT-only grants, which a superuser would
not be. Either mistake is refused with a message that says what to fix.
"""

from __future__ import annotations

from typing import Literal

import asyncpg

Process = Literal["serve", "ingest", "broker-sync"]  # broker-sync: issue 13

# The role's attributes, and the tenant tables it owns itself or through a role it belongs to.
_ROLE = """
SELECT r.rolname, r.rolsuper, r.rolbypassrls, r.rolcreaterole,
       array(
           SELECT c.relname::text FROM pg_class c
           WHERE c.relnamespace = 'public'::regnamespace AND c.relkind IN ('r', 'p')
             AND pg_has_role(current_user, c.relowner, 'USAGE')
             AND EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid
                         AND a.attname = 'client_id' AND NOT a.attisdropped)
           ORDER BY 1 LIMIT 5
       ) AS owned
FROM pg_roles r WHERE r.rolname = current_user
"""


class RoleCheckError(RuntimeError):
    """The process's database role has powers that would bypass tenant isolation."""


async def role_problems(conn: asyncpg.Connection, process: Process) -> list[str]:
    """What is wrong with the role ``conn`` is logged in as, for ``process``; empty when fine."""
    row = await conn.fetchrow(_ROLE)
    assert row is not None  # current_user always has a pg_roles row
    name = row["rolname"]
    problems = []
    if row["rolsuper"]:
        problems.append(f"role {name} is a superuser")
    if process in ("serve", "broker-sync"):  # broker-sync reads on the staff path (issue 13)
        if row["rolbypassrls"]:
            problems.append(f"role {name} has BYPASSRLS")
        if row["owned"]:
            problems.append(f"role {name} owns tenant tables ({', '.join(row['owned'])}, …)")
        if row["rolcreaterole"]:
            problems.append(f"role {name} has CREATEROLE")
    return problems


async def check_role(conn: asyncpg.Connection, process: Process) -> None:
    """Raise :class:`RoleCheckError` when the role is unfit for ``process``."""
    problems = await role_problems(conn, process)
    if problems:
        setting, role = {
            "serve": ("LIFEBOX_DATABASE_URL", "lifebox_app"),
            "ingest": ("LIFEBOX_INGEST_DATABASE_URL", "lifebox_ingest"),
            "broker-sync": ("LIFEBOX_BROKER_SYNC_DATABASE_URL", "lifebox_broker_sync"),  # issue 13
        }[process]
        raise RoleCheckError(
            f"{setting} logs in as a role `lifebox {process}` must not use: "
            f"{'; '.join(problems)}. Point it at {role} (deploy/postgres/init-lifebox.sh "
            "creates it)."
        )


async def checked_role(pool: asyncpg.Pool, process: Process) -> None:
    """:func:`check_role` on a connection of ``pool``; the pool is closed when it fails."""
    try:
        async with pool.acquire() as conn:
            await check_role(conn, process)
    except RoleCheckError:
        await pool.close()
        raise
