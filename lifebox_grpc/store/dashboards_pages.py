"""Quick-view pages with their ordered devices and command templates (0008, 0093)."""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from lifebox_grpc.store.command_grants import LIVE


@dataclass(frozen=True)
class Page:
    """A page as stored, its links in order, and the reader's live share (None: none)."""

    id: uuid.UUID
    client_id: uuid.UUID
    owner_id: uuid.UUID
    title: str
    description: str
    device_ids: tuple[uuid.UUID, ...]
    template_ids: tuple[uuid.UUID, ...]
    version: int
    created_at: datetime
    updated_at: datetime
    share: str | None = None


_LIVE_SHARE = (
    "s.page_id = p.id AND s.user_id = $1 AND (s.expires_at IS NULL OR s.expires_at > now())"
)
_SELECT = (
    "SELECT p.id, p.client_id, p.owner_id, p.title, p.description, "
    "ARRAY(SELECT d.device_id FROM quick_view_page_devices d WHERE d.page_id = p.id "
    "ORDER BY d.position) AS device_ids, "
    "ARRAY(SELECT t.template_id FROM quick_view_page_command_templates t "
    "WHERE t.page_id = p.id ORDER BY t.position) AS template_ids, "
    "p.version, p.created_at, p.updated_at, "
    f"(SELECT s.permission FROM quick_view_page_shares s WHERE {_LIVE_SHARE}) AS share "
    "FROM quick_view_pages p"
)


def _page(row: asyncpg.Record) -> Page:
    return Page(
        row["id"], row["client_id"], row["owner_id"], row["title"], row["description"],
        tuple(row["device_ids"]), tuple(row["template_ids"]), row["version"],
        row["created_at"], row["updated_at"], row["share"],
    )  # fmt: skip


async def get_page(
    conn: asyncpg.Connection, page_id: uuid.UUID, reader: uuid.UUID, *, lock: bool = False
) -> Page | None:
    """The page (row-level security scopes it to the transaction's tenant); ``lock`` holds
    it for update, so an etag compared with it stays true until commit."""
    suffix = " FOR UPDATE OF p" if lock else ""
    row = await conn.fetchrow(f"{_SELECT} WHERE p.id = $2{suffix}", reader, page_id)
    return _page(row) if row else None


async def list_pages(
    conn: asyncpg.Connection,
    reader: uuid.UUID,
    client_id: uuid.UUID | None,
    *,
    every: bool,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Page]:
    """Pages ``reader`` owns or holds a live share of, newest first; ``every``: all pages of
    ``client_id`` (None: every tenant), for administrators."""
    rows = await conn.fetch(
        f"{_SELECT} WHERE ($2::uuid IS NULL OR p.client_id = $2) "
        f"AND ($3 OR p.owner_id = $1 OR EXISTS (SELECT 1 FROM quick_view_page_shares s "
        f"WHERE {_LIVE_SHARE})) "
        "AND ($4::timestamptz IS NULL OR (p.created_at, p.id) < ($4, $5::uuid)) "
        "ORDER BY p.created_at DESC, p.id DESC LIMIT $6",
        reader,
        client_id,
        every,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_page(r) for r in rows]


async def create_page(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    owner_id: uuid.UUID,
    title: str,
    description: str,
) -> uuid.UUID:
    page_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO quick_view_pages (client_id, owner_id, title, description) "
        "VALUES ($1, $2, $3, $4) RETURNING id",
        client_id,
        owner_id,
        title,
        description,
    )
    return page_id


async def update_page(conn: asyncpg.Connection, page_id: uuid.UUID, values: dict[str, Any]) -> None:
    """Set title/description (keys of ``values``); the version always moves (the trigger),
    also when only the links changed, so the etag covers them too."""
    sets = [f"{name} = ${i + 2}" for i, name in enumerate(values)]
    sets.append("updated_at = now()")
    await conn.execute(
        f"UPDATE quick_view_pages SET {', '.join(sets)} WHERE id = $1", page_id, *values.values()
    )


async def set_devices(
    conn: asyncpg.Connection, client_id: uuid.UUID, page_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> None:
    """Replace the page's devices by ``ids``, in that order."""
    await conn.execute("DELETE FROM quick_view_page_devices WHERE page_id = $1", page_id)
    await conn.execute(
        "INSERT INTO quick_view_page_devices (client_id, page_id, device_id, position) "
        "SELECT $1, $2, d.id, d.n FROM unnest($3::uuid[]) WITH ORDINALITY AS d(id, n)",
        client_id,
        page_id,
        list(ids),
    )


async def set_templates(
    conn: asyncpg.Connection, client_id: uuid.UUID, page_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> None:
    """Replace the page's command templates by ``ids``, in that order."""
    await conn.execute("DELETE FROM quick_view_page_command_templates WHERE page_id = $1", page_id)
    await conn.execute(
        "INSERT INTO quick_view_page_command_templates (client_id, page_id, template_id, "
        "position) SELECT $1, $2, t.id, t.n FROM unnest($3::uuid[]) WITH ORDINALITY AS t(id, n)",
        client_id,
        page_id,
        list(ids),
    )


async def delete_page(conn: asyncpg.Connection, page_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM quick_view_pages WHERE id = $1", page_id)


async def tenant_devices(
    conn: asyncpg.Connection, client_id: uuid.UUID, ids: Sequence[uuid.UUID]
) -> set[uuid.UUID]:
    """Those of ``ids`` that are devices of ``client_id``."""
    rows = await conn.fetch(
        "SELECT id FROM devices WHERE client_id = $1 AND id = ANY($2::uuid[])", client_id, list(ids)
    )
    return {r["id"] for r in rows}


async def holds_any_grant(conn: asyncpg.Connection, user_id: uuid.UUID, permission: str) -> bool:
    """Whether the user holds a live grant of ``permission`` on some device or on all."""
    found = await conn.fetchval(
        f"SELECT 1 FROM user_command_permissions g WHERE g.user_id = $1 "
        f"AND g.command_permission = $2 AND {LIVE} LIMIT 1",
        user_id,
        permission,
    )
    return found is not None
