"""Which users a device is assigned to: all the SQL of user_device_assignments."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from lifebox_grpc.errors import NotFound


@dataclass(frozen=True)
class Assignment:
    """A user's assignment to a device."""

    device_id: uuid.UUID
    user_id: uuid.UUID
    user_email: str
    access_level: str
    assigned_by: uuid.UUID | None
    assigned_at: datetime


_SELECT = """
SELECT a.device_id, a.user_id, u.email AS user_email, a.access_level, a.assigned_by,
       a.assigned_at
FROM user_device_assignments a JOIN users u ON u.id = a.user_id
"""


def _assignment(row: asyncpg.Record) -> Assignment:
    return Assignment(*(row[name] for name in Assignment.__dataclass_fields__))


async def assign(
    conn: asyncpg.Connection,
    device_id: uuid.UUID,
    client_id: uuid.UUID,
    user_id: uuid.UUID,
    access_level: str,
    actor: uuid.UUID | None,
) -> Assignment:
    """Assign (or change the access level); a user of another client reads as NOT_FOUND."""
    try:
        await conn.execute(
            """
            INSERT INTO user_device_assignments
                (client_id, user_id, device_id, access_level, assigned_by)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT (user_id, device_id) DO UPDATE
                SET access_level = EXCLUDED.access_level, assigned_by = EXCLUDED.assigned_by,
                    assigned_at = now()
            """,
            client_id,
            user_id,
            device_id,
            access_level,
            actor,
        )
    except asyncpg.ForeignKeyViolationError as exc:
        # The composite key (user_id, client_id) fails for a user of another tenant too.
        raise NotFound("user not found") from exc
    row = await conn.fetchrow(
        f"{_SELECT} WHERE a.device_id = $1 AND a.user_id = $2", device_id, user_id
    )
    assert row is not None
    return _assignment(row)


async def unassign(conn: asyncpg.Connection, device_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Remove the assignment; False when there was none."""
    deleted = await conn.fetchval(
        "DELETE FROM user_device_assignments WHERE device_id = $1 AND user_id = $2 "
        "RETURNING user_id",
        device_id,
        user_id,
    )
    return deleted is not None


async def list_assignments(
    conn: asyncpg.Connection, device_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[Assignment]:
    rows = await conn.fetch(
        f"""
        {_SELECT}
        WHERE a.device_id = $1 AND ($2::uuid IS NULL OR a.user_id > $2)
        ORDER BY a.user_id
        LIMIT $3
        """,
        device_id,
        after,
        limit,
    )
    return [_assignment(r) for r in rows]


async def access_levels(
    conn: asyncpg.Connection, user_id: uuid.UUID, device_ids: Sequence[uuid.UUID]
) -> dict[uuid.UUID, str]:
    """The user's access level on each of ``device_ids`` assigned to them (others absent)."""
    rows = await conn.fetch(
        "SELECT device_id, access_level FROM user_device_assignments "
        "WHERE user_id = $1 AND device_id = ANY($2::uuid[])",
        user_id,
        list(device_ids),
    )
    return {row["device_id"]: row["access_level"] for row in rows}
