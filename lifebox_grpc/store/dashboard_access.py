"""The one read behind a quick-view page's access check: the page and the caller's share."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg


@dataclass(frozen=True)
class PageGrant:
    """A page as access sees it: its tenant and owner, and the caller's live share, if any
    (``share`` is 'view', 'edit' or None; an expired share reads as None)."""

    page_id: uuid.UUID
    client_id: uuid.UUID
    owner_id: uuid.UUID
    share: str | None


async def page_grant(
    conn: asyncpg.Connection,
    page_id: uuid.UUID,
    user_id: uuid.UUID,
    client_id: uuid.UUID | None,
) -> PageGrant | None:
    """The page with ``user_id``'s live share of it; None when there is no such page in
    ``client_id`` (None: any tenant, for staff; row-level security still applies)."""
    row = await conn.fetchrow(
        "SELECT p.id, p.client_id, p.owner_id, s.permission FROM quick_view_pages p "
        "LEFT JOIN quick_view_page_shares s ON s.page_id = p.id AND s.user_id = $2 "
        "AND (s.expires_at IS NULL OR s.expires_at > now()) "
        "WHERE p.id = $1 AND ($3::uuid IS NULL OR p.client_id = $3)",
        page_id,
        user_id,
        client_id,
    )
    if row is None:
        return None
    return PageGrant(row["id"], row["client_id"], row["owner_id"], row["permission"])
