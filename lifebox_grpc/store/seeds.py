"""Reference data (`lifebox seed`) and the demo tenant (`lifebox seed --demo`). Idempotent."""

from __future__ import annotations

import asyncpg


async def seed_reference(conn: asyncpg.Connection) -> str:
    """Roles, permissions, command permissions and templates. Returns a one-line report."""
    # Filled in by the data-model issue (#3) together with the tables it seeds.
    return "reference data: nothing to seed yet"


async def seed_demo(conn: asyncpg.Connection, password_hash: str) -> str:
    """A demo client with one user per role and a handful of devices."""
    return "demo data: nothing to seed yet"


async def ensure_platform_admin(conn: asyncpg.Connection, email: str, password_hash: str) -> bool:
    """Create the first super_user if no platform staff exists; True when it was created."""
    return False
