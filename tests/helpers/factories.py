"""Rows for tests: one small function per thing, inserted on the staff path.

Pass a connection of any role that may write the table (normally ``owner_conn``). Each call
makes fresh, unique names, so tests never collide; every function returns the new id.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta

import asyncpg

from lifebox_grpc.store.pool import tenant_transaction

STAFF_ROLES = ("super_user", "admin")


def unique(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:10]}"


async def make_client(conn: asyncpg.Connection, *, status: str = "active") -> uuid.UUID:
    """A tenant with a unique slug."""
    async with tenant_transaction(conn, None, staff=True):
        client_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO clients (name, slug, status) VALUES ($1, $1, $2) RETURNING id",
            unique("client"),
            status,
        )
    return client_id


async def make_user(
    conn: asyncpg.Connection,
    client_id: uuid.UUID | None,
    *,
    role: str = "client",
    email: str | None = None,
    password_hash: str = "not-a-real-hash",  # noqa: S107 - no password verifies against it
) -> uuid.UUID:
    """A user of ``client_id``; staff roles (super_user, admin) take ``client_id=None``."""
    async with tenant_transaction(conn, None, staff=True):
        user_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO users (client_id, email, password_hash, role) "
            "VALUES ($1, $2, $3, $4) RETURNING id",
            None if role in STAFF_ROLES else client_id,
            email or f"{unique('user')}@test.lifebox.local",
            password_hash,
            role,
        )
    return user_id


async def make_device(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    serial: str | None = None,
    status: str = "active",
    *,
    device_type: str = "generic",
) -> tuple[uuid.UUID, str]:
    """A device of ``client_id``; returns (id, serial)."""
    serial = serial or unique("SN").upper()
    async with tenant_transaction(conn, None, staff=True):
        device_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO devices (client_id, serial, name, status, device_type) "
            "VALUES ($1, $2, $2, $3, $4) RETURNING id",
            client_id,
            serial,
            status,
            device_type,
        )
    return device_id, serial


async def template_id(conn: asyncpg.Connection, code: str = "reboot") -> uuid.UUID:
    """A seeded global command template."""
    async with tenant_transaction(conn, None, staff=True):
        found: uuid.UUID = await conn.fetchval(
            "SELECT id FROM command_templates WHERE client_id IS NULL AND code = $1", code
        )
    return found


async def make_command(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    device_id: uuid.UUID,
    *,
    code: str = "reboot",
    status: str = "pending",
) -> uuid.UUID:
    """A control command for a device, from a seeded template, expiring in an hour.

    Born pending with its trail row and, for another ``status``, moved there along a defined
    transition with its own (the database refuses any status change without one)."""
    template = await template_id(conn, code)
    async with tenant_transaction(conn, None, staff=True):
        command_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO control_commands (client_id, device_id, template_id, command_type, "
            "expires_at) VALUES ($1, $2, $3, $4, $5) RETURNING id",
            client_id,
            device_id,
            template,
            code,
            datetime.now(UTC) + timedelta(hours=1),
        )
        await conn.execute(
            "INSERT INTO command_executions (client_id, command_id, from_status, to_status, "
            "actor_kind) VALUES ($1, $2, NULL, 'pending', 'system')",
            client_id,
            command_id,
        )
        if status != "pending":
            await conn.execute(
                "UPDATE control_commands SET status = $2 WHERE id = $1", command_id, status
            )
            await conn.execute(
                "INSERT INTO command_executions (client_id, command_id, from_status, "
                "to_status, actor_kind) VALUES ($1, $2, 'pending', $3, 'system')",
                client_id,
                command_id,
                status,
            )
    return command_id


async def make_reading(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    device_id: uuid.UUID,
    time: datetime | None = None,
    **fields: object,
) -> datetime:
    """One telemetry row (known fields by keyword); returns its time."""
    time = time or datetime.now(UTC)
    names = ", ".join(["time", "device_id", "client_id", *fields])
    values = ", ".join(f"${i}" for i in range(1, 4 + len(fields)))
    async with tenant_transaction(conn, None, staff=True):
        await conn.execute(
            f"INSERT INTO telemetry_events ({names}) VALUES ({values})",
            time,
            device_id,
            client_id,
            *fields.values(),
        )
    return time
