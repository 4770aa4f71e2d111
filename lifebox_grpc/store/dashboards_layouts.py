"""Each user's own arrangement of a quick-view page: the dashboard_layouts row for (user,
page) (0093), its ``layout`` holding ``{"positions": {widget id: position}}``."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Layout:
    page_id: uuid.UUID
    user_id: uuid.UUID
    positions: dict[str, Any]
    version: int
    updated_at: datetime


_COLUMNS = "page_id, user_id, layout::text AS layout, version, updated_at"


def _layout(row: asyncpg.Record) -> Layout:
    positions = json.loads(row["layout"]).get("positions", {})
    return Layout(row["page_id"], row["user_id"], positions, row["version"], row["updated_at"])


async def get_layout(
    conn: asyncpg.Connection, user_id: uuid.UUID, page_id: uuid.UUID, *, lock: bool = False
) -> Layout | None:
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM dashboard_layouts WHERE user_id = $1 AND page_id = $2{suffix}",
        user_id,
        page_id,
    )
    return _layout(row) if row else None


async def put_layout(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    user_id: uuid.UUID,
    page_id: uuid.UUID,
    positions: dict[str, Any],
) -> Layout:
    """Create or replace the user's arrangement of the page."""
    row = await conn.fetchrow(
        "INSERT INTO dashboard_layouts (client_id, user_id, page_id, name, layout) "
        "VALUES ($1, $2, $3, 'page', $4::jsonb) "
        "ON CONFLICT (user_id, page_id) WHERE page_id IS NOT NULL "
        "DO UPDATE SET layout = excluded.layout, updated_at = now() "
        f"RETURNING {_COLUMNS}",
        client_id,
        user_id,
        page_id,
        json.dumps({"positions": positions}),
    )
    return _layout(row)


async def delete_layout(conn: asyncpg.Connection, user_id: uuid.UUID, page_id: uuid.UUID) -> None:
    await conn.execute(
        "DELETE FROM dashboard_layouts WHERE user_id = $1 AND page_id = $2", user_id, page_id
    )
