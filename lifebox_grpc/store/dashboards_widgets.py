"""Widgets of quick-view pages (0008; 0093: version). ``config`` and ``position`` are JSON
objects the service builds from its typed messages."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Widget:
    id: uuid.UUID
    client_id: uuid.UUID
    page_id: uuid.UUID
    kind: str
    title: str
    config: dict[str, Any]
    position: dict[str, Any]
    version: int
    created_at: datetime
    updated_at: datetime


_COLUMNS = (
    "id, client_id, page_id, kind, title, config::text AS config, position::text AS position, "
    "version, created_at, updated_at"
)


def _widget(row: asyncpg.Record) -> Widget:
    return Widget(
        row["id"], row["client_id"], row["page_id"], row["kind"], row["title"],
        json.loads(row["config"]), json.loads(row["position"]), row["version"],
        row["created_at"], row["updated_at"],
    )  # fmt: skip


async def create_widget(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    page_id: uuid.UUID,
    kind: str,
    title: str,
    config: dict[str, Any],
    position: dict[str, Any],
) -> Widget:
    row = await conn.fetchrow(
        "INSERT INTO widgets (client_id, page_id, kind, title, config, position) "
        f"VALUES ($1, $2, $3, $4, $5::jsonb, $6::jsonb) RETURNING {_COLUMNS}",
        client_id,
        page_id,
        kind,
        title,
        json.dumps(config),
        json.dumps(position),
    )
    return _widget(row)


async def get_widget(
    conn: asyncpg.Connection, widget_id: uuid.UUID, *, lock: bool = False
) -> Widget | None:
    suffix = " FOR UPDATE" if lock else ""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM widgets WHERE id = $1 AND page_id IS NOT NULL{suffix}", widget_id
    )
    return _widget(row) if row else None


async def page_widgets(
    conn: asyncpg.Connection,
    page_id: uuid.UUID,
    *,
    after: tuple[datetime, uuid.UUID] | None = None,
    limit: int | None = None,
) -> list[Widget]:
    """The page's widgets, oldest first."""
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM widgets WHERE page_id = $1 "
        "AND ($2::timestamptz IS NULL OR (created_at, id) > ($2, $3::uuid)) "
        "ORDER BY created_at, id LIMIT $4",
        page_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_widget(r) for r in rows]


async def count_widgets(conn: asyncpg.Connection, page_id: uuid.UUID) -> int:
    return int(await conn.fetchval("SELECT count(*) FROM widgets WHERE page_id = $1", page_id))


async def update_widget(
    conn: asyncpg.Connection, widget_id: uuid.UUID, values: dict[str, Any]
) -> Widget:
    """Set title (text), config and position (JSON objects) named in ``values``."""
    sets, args = [], []
    for name, value in values.items():
        json_value = name in ("config", "position")
        args.append(json.dumps(value) if json_value else value)
        sets.append(f"{name} = ${len(args) + 1}{'::jsonb' if json_value else ''}")
    row = await conn.fetchrow(
        f"UPDATE widgets SET {', '.join(sets)}, updated_at = now() WHERE id = $1 "
        f"RETURNING {_COLUMNS}",
        widget_id,
        *args,
    )
    return _widget(row)


async def delete_widget(conn: asyncpg.Connection, widget_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM widgets WHERE id = $1", widget_id)
