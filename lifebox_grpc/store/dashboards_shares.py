"""Shares of quick-view pages with users of the same tenant (0008, 0093: expiry)."""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class Share:
    """A share as stored; ``expired`` is computed by the database's clock."""

    id: uuid.UUID
    page_id: uuid.UUID
    user_id: uuid.UUID
    permission: str
    expires_at: datetime | None
    expired: bool
    shared_by: uuid.UUID | None
    shared_at: datetime


_COLUMNS = (
    "id, page_id, user_id, permission, expires_at, "
    "coalesce(expires_at <= now(), false) AS expired, shared_by, shared_at"
)


def _share(row: asyncpg.Record) -> Share:
    return Share(*(row[n] for n in Share.__dataclass_fields__))


async def tenant_user(conn: asyncpg.Connection, client_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    """Whether ``user_id`` is a user of ``client_id``."""
    found = await conn.fetchval(
        "SELECT 1 FROM users WHERE id = $1 AND client_id = $2", user_id, client_id
    )
    return found is not None


async def put_share(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    page_id: uuid.UUID,
    user_id: uuid.UUID,
    permission: str,
    expires_at: datetime | None,
    shared_by: uuid.UUID,
) -> Share:
    """Create the share or replace the user's existing one."""
    row = await conn.fetchrow(
        "INSERT INTO quick_view_page_shares (client_id, page_id, user_id, permission, "
        "expires_at, shared_by) VALUES ($1, $2, $3, $4, $5, $6) "
        "ON CONFLICT (page_id, user_id) DO UPDATE SET permission = excluded.permission, "
        "expires_at = excluded.expires_at, shared_by = excluded.shared_by, shared_at = now() "
        f"RETURNING {_COLUMNS}",
        client_id,
        page_id,
        user_id,
        permission,
        expires_at,
        shared_by,
    )
    return _share(row)


async def delete_share(conn: asyncpg.Connection, page_id: uuid.UUID, user_id: uuid.UUID) -> bool:
    status = await conn.execute(
        "DELETE FROM quick_view_page_shares WHERE page_id = $1 AND user_id = $2", page_id, user_id
    )
    return bool(status != "DELETE 0")


async def list_shares(
    conn: asyncpg.Connection, page_id: uuid.UUID, *, after: uuid.UUID | None, limit: int
) -> list[Share]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM quick_view_page_shares WHERE page_id = $1 "
        "AND ($2::uuid IS NULL OR user_id > $2) ORDER BY user_id LIMIT $3",
        page_id,
        after,
        limit,
    )
    return [_share(r) for r in rows]
