"""Files' metadata (0008, 0095: page link, store) and each tenant's byte usage and quota.

The bytes themselves are kept by a file store (:mod:`lifebox_grpc.files`). Who may see which
file is decided by :mod:`lifebox_grpc.services.files.access`; :data:`_VISIBLE` is the same
rule as one SQL condition for listing (a page-attached file follows the page's grant, as
:func:`lifebox_grpc.store.dashboard_access.page_grant` reads it: owner or a live share).
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class File:
    id: uuid.UUID
    client_id: uuid.UUID
    owner_id: uuid.UUID | None
    device_id: uuid.UUID | None
    page_id: uuid.UUID | None
    name: str
    content_type: str
    size_bytes: int
    sha256: bytes
    storage_key: str
    store: str
    access_level: str  # private | client | shared (attached to page_id)
    created_at: datetime


@dataclass(frozen=True)
class NewFile:
    client_id: uuid.UUID
    owner_id: uuid.UUID
    device_id: uuid.UUID | None
    page_id: uuid.UUID | None
    name: str
    content_type: str
    size_bytes: int
    sha256: bytes
    storage_key: str
    store: str
    access_level: str


@dataclass(frozen=True)
class Usage:
    """A tenant's bytes in use, and its own quota (None: the server's default)."""

    used_bytes: int
    quota_bytes: int | None


@dataclass(frozen=True)
class FileFilter:
    device_id: uuid.UUID | None = None
    page_id: uuid.UUID | None = None
    owner_id: uuid.UUID | None = None
    content_type: str | None = None


_COLUMNS = (
    "id, client_id, owner_id, device_id, page_id, name, content_type, size_bytes, sha256, "
    "storage_key, store, access_level, created_at"
)

# Visible to user $n: their own, the tenant's, or attached to a page they own or hold a live
# share of.
_VISIBLE = (
    "(f.owner_id = {u} OR f.access_level = 'client' OR (f.access_level = 'shared' AND "
    "EXISTS (SELECT 1 FROM quick_view_pages p WHERE p.id = f.page_id AND (p.owner_id = {u} "
    "OR EXISTS (SELECT 1 FROM quick_view_page_shares s WHERE s.page_id = p.id "
    "AND s.user_id = {u} AND (s.expires_at IS NULL OR s.expires_at > now()))))))"
)


def _file(row: asyncpg.Record) -> File:
    return File(**dict(row))


async def insert_file(conn: asyncpg.Connection, new: NewFile) -> File:
    row = await conn.fetchrow(
        "INSERT INTO files (client_id, owner_id, device_id, page_id, name, content_type, "
        "size_bytes, sha256, storage_key, store, access_level) "
        f"VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {_COLUMNS}",
        new.client_id,
        new.owner_id,
        new.device_id,
        new.page_id,
        new.name,
        new.content_type,
        new.size_bytes,
        new.sha256,
        new.storage_key,
        new.store,
        new.access_level,
    )
    assert row is not None
    return _file(row)


async def get_file(
    conn: asyncpg.Connection, file_id: uuid.UUID, client_id: uuid.UUID | None
) -> File | None:
    """The file in ``client_id`` (None: any tenant, for staff)."""
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM files WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)",
        file_id,
        client_id,
    )
    return _file(row) if row else None


async def list_files(
    conn: asyncpg.Connection,
    client_id: uuid.UUID | None,
    viewer: uuid.UUID | None,
    where: FileFilter,
    *,
    devices: list[uuid.UUID] | None = None,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[File]:
    """Files of ``client_id`` (None: every tenant) newest first; only those ``viewer`` may
    see unless None (administrators see every file of their scope); files about a device
    only when it is in ``devices`` (None: any) or ``viewer`` uploaded them."""
    visible = f"($2::uuid IS NULL OR {_VISIBLE.format(u='$2')})"
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM files f WHERE ($1::uuid IS NULL OR f.client_id = $1) "
        f"AND {visible} "
        "AND ($3::uuid IS NULL OR f.device_id = $3) AND ($4::uuid IS NULL OR f.page_id = $4) "
        "AND ($5::uuid IS NULL OR f.owner_id = $5) AND ($6::text IS NULL OR f.content_type = $6) "
        "AND ($7::timestamptz IS NULL OR (f.created_at, f.id) < ($7, $8::uuid)) "
        "AND ($10::uuid[] IS NULL OR f.device_id IS NULL OR f.device_id = ANY($10) "
        "OR f.owner_id = $2) "
        "ORDER BY f.created_at DESC, f.id DESC LIMIT $9",
        client_id,
        viewer,
        where.device_id,
        where.page_id,
        where.owner_id,
        where.content_type,
        after[0] if after else None,
        after[1] if after else None,
        limit,
        devices,
    )
    return [_file(r) for r in rows]


async def delete_file(conn: asyncpg.Connection, file_id: uuid.UUID) -> File | None:
    """Delete the row (its chunks in the database go with it); the deleted file."""
    row = await conn.fetchrow(f"DELETE FROM files WHERE id = $1 RETURNING {_COLUMNS}", file_id)
    return _file(row) if row else None


async def usage(conn: asyncpg.Connection, client_id: uuid.UUID) -> Usage:
    row = await conn.fetchrow(
        "SELECT used_bytes, quota_bytes FROM client_file_usage WHERE client_id = $1", client_id
    )
    return Usage(row["used_bytes"], row["quota_bytes"]) if row else Usage(0, None)


async def lock_usage(conn: asyncpg.Connection, client_id: uuid.UUID) -> Usage:
    """The tenant's usage, its row locked until the transaction ends: uploads of one tenant
    check the quota and insert their file one after the other."""
    await conn.execute(
        "INSERT INTO client_file_usage (client_id) VALUES ($1) ON CONFLICT DO NOTHING", client_id
    )
    row = await conn.fetchrow(
        "SELECT used_bytes, quota_bytes FROM client_file_usage WHERE client_id = $1 FOR UPDATE",
        client_id,
    )
    assert row is not None
    return Usage(row["used_bytes"], row["quota_bytes"])
