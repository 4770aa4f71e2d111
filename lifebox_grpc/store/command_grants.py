"""Users' command grants (user_command_permissions) with hierarchical delegation.

A grant is live while it is neither revoked nor expired. Revoking one revokes everything
delegated from it in the same statement and keeps every row (revoked_at, revoked_by).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg

from lifebox_grpc.errors import AlreadyExists


@dataclass(frozen=True)
class Grant:
    """A command grant as stored."""

    id: uuid.UUID
    client_id: uuid.UUID
    user_id: uuid.UUID
    command_permission: str
    device_id: uuid.UUID | None
    can_delegate: bool
    granted_by: uuid.UUID | None
    parent_grant_id: uuid.UUID | None
    granted_at: datetime
    expires_at: datetime | None
    revoked_at: datetime | None
    revoked_by: uuid.UUID | None


_COLUMNS = (
    "g.id, g.client_id, g.user_id, g.command_permission, g.device_id, g.can_delegate, "
    "g.granted_by, g.parent_grant_id, g.granted_at, g.expires_at, g.revoked_at, g.revoked_by"
)
LIVE = "g.revoked_at IS NULL AND (g.expires_at IS NULL OR g.expires_at > now())"


def _grant(row: asyncpg.Record) -> Grant:
    return Grant(*(row[k] for k in Grant.__dataclass_fields__))


async def holds_grant(
    conn: asyncpg.Connection, user_id: uuid.UUID, permission: str, device_id: uuid.UUID
) -> bool:
    """Whether the user holds a live grant of ``permission`` on the device or on every device."""
    found = await conn.fetchval(
        f"SELECT 1 FROM user_command_permissions g WHERE g.user_id = $1 "
        f"AND g.command_permission = $2 AND (g.device_id IS NULL OR g.device_id = $3) AND {LIVE} "
        "LIMIT 1",
        user_id,
        permission,
        device_id,
    )
    return found is not None


async def delegable_grant(
    conn: asyncpg.Connection,
    user_id: uuid.UUID,
    permission: str,
    device_id: uuid.UUID | None,
    expires_at: datetime | None,
) -> Grant | None:
    """A live grant of the user's with can_delegate that covers (``permission``, device
    scope, expiry): same or wider scope, expiring no earlier. Prefer the narrowest."""
    row = await conn.fetchrow(
        f"""
        SELECT {_COLUMNS} FROM user_command_permissions g
        WHERE g.user_id = $1 AND g.command_permission = $2 AND g.can_delegate AND {LIVE}
          AND (g.device_id IS NULL OR g.device_id = $3)
          AND (g.expires_at IS NULL OR ($4::timestamptz IS NOT NULL AND $4 <= g.expires_at))
        ORDER BY g.device_id IS NULL, g.expires_at NULLS LAST
        LIMIT 1
        """,
        user_id,
        permission,
        device_id,
        expires_at,
    )
    return _grant(row) if row else None


@dataclass(frozen=True)
class NewGrant:
    client_id: uuid.UUID
    user_id: uuid.UUID
    command_permission: str
    device_id: uuid.UUID | None
    can_delegate: bool
    granted_by: uuid.UUID
    parent_grant_id: uuid.UUID | None
    expires_at: datetime | None


async def create_grant(conn: asyncpg.Connection, new: NewGrant) -> Grant:
    """Insert a grant; ALREADY_EXISTS while a live one holds the same (user, permission,
    device scope). An expired one in that slot is revoked first (history kept)."""
    await conn.execute(
        "UPDATE user_command_permissions g SET revoked_at = now(), revoked_by = $4 "
        "WHERE g.user_id = $1 AND g.command_permission = $2 "
        "AND g.device_id IS NOT DISTINCT FROM $3 AND g.revoked_at IS NULL "
        "AND g.expires_at <= now()",
        new.user_id,
        new.command_permission,
        new.device_id,
        new.granted_by,
    )
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO user_command_permissions AS g (client_id, user_id, command_permission,
                device_id, can_delegate, granted_by, parent_grant_id, expires_at)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            RETURNING {_COLUMNS}
            """,
            new.client_id,
            new.user_id,
            new.command_permission,
            new.device_id,
            new.can_delegate,
            new.granted_by,
            new.parent_grant_id,
            new.expires_at,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists(
            "this user already holds a live grant of this permission on this device scope"
        ) from exc
    return _grant(row)


async def get_grant(
    conn: asyncpg.Connection, grant_id: uuid.UUID, client_id: uuid.UUID | None
) -> Grant | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM user_command_permissions g "
        "WHERE g.id = $1 AND ($2::uuid IS NULL OR g.client_id = $2)",
        grant_id,
        client_id,
    )
    return _grant(row) if row else None


async def list_grants(
    conn: asyncpg.Connection,
    client_id: uuid.UUID | None,
    *,
    involving: uuid.UUID | None,
    user_id: uuid.UUID | None,
    device_id: uuid.UUID | None,
    show_revoked: bool,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Grant]:
    """Newest first. ``involving``: only grants that user holds or made."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM user_command_permissions g
        WHERE ($1::uuid IS NULL OR g.client_id = $1)
          AND ($2::uuid IS NULL OR g.user_id = $2 OR g.granted_by = $2)
          AND ($3::uuid IS NULL OR g.user_id = $3)
          AND ($4::uuid IS NULL OR g.device_id = $4)
          AND ($5 OR g.revoked_at IS NULL)
          AND ($6::timestamptz IS NULL OR (g.granted_at, g.id) < ($6, $7))
        ORDER BY g.granted_at DESC, g.id DESC
        LIMIT $8
        """,
        client_id,
        involving,
        user_id,
        device_id,
        show_revoked,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_grant(r) for r in rows]


async def in_chain_above(conn: asyncpg.Connection, grant_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Whether ``user_id`` made the grant or holds or made one it was delegated from."""
    found = await conn.fetchval(
        """
        WITH RECURSIVE up AS (
            SELECT id, parent_grant_id, user_id, granted_by, 0 AS depth
            FROM user_command_permissions WHERE id = $1
            UNION ALL
            SELECT p.id, p.parent_grant_id, p.user_id, p.granted_by, up.depth + 1
            FROM user_command_permissions p JOIN up ON p.id = up.parent_grant_id
            WHERE up.depth < 64
        )
        SELECT 1 FROM up WHERE granted_by = $2 OR (depth > 0 AND user_id = $2) LIMIT 1
        """,
        grant_id,
        user_id,
    )
    return found is not None


async def revoke_grant(conn: asyncpg.Connection, grant_id: uuid.UUID, revoked_by: uuid.UUID) -> int:
    """Revoke the grant and every live grant delegated from it, at once; how many."""
    status = await conn.execute(
        """
        WITH RECURSIVE chain AS (
            SELECT id, 0 AS depth FROM user_command_permissions WHERE id = $1
            UNION ALL
            SELECT c.id, chain.depth + 1 FROM user_command_permissions c
            JOIN chain ON c.parent_grant_id = chain.id
            WHERE chain.depth < 64
        )
        UPDATE user_command_permissions g SET revoked_at = now(), revoked_by = $2
        FROM chain WHERE g.id = chain.id AND g.revoked_at IS NULL
        """,
        grant_id,
        revoked_by,
    )
    return int(status.split()[-1])
