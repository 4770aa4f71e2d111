"""Device metadata snapshots: all their SQL."""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class Snapshot:
    """A saved copy of a device's metadata and firmware version."""

    id: uuid.UUID
    device_id: uuid.UUID
    reason: str
    metadata: dict[str, Any]
    firmware_version: str | None
    taken_by: uuid.UUID | None
    taken_at: datetime


_COLUMNS = "id, device_id, reason, metadata::text AS metadata, firmware_version, taken_by, taken_at"


def _snapshot(row: Mapping[str, Any]) -> Snapshot:
    return Snapshot(
        row["id"],
        row["device_id"],
        row["reason"],
        json.loads(row["metadata"]),
        row["firmware_version"],
        row["taken_by"],
        row["taken_at"],
    )


async def create_snapshot(
    conn: asyncpg.Connection, device_id: uuid.UUID, reason: str, actor: uuid.UUID | None
) -> Snapshot:
    """Copy the device's current metadata (the device must be visible in this transaction)."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO device_metadata_snapshots
            (client_id, device_id, taken_by, reason, metadata, firmware_version)
        SELECT client_id, id, $2, $3, metadata, firmware_version FROM devices WHERE id = $1
        RETURNING {_COLUMNS}
        """,
        device_id,
        actor,
        reason,
    )
    assert row is not None
    return _snapshot(row)


async def get_snapshot(
    conn: asyncpg.Connection, device_id: uuid.UUID, snapshot_id: uuid.UUID
) -> Snapshot | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM device_metadata_snapshots WHERE id = $1 AND device_id = $2",
        snapshot_id,
        device_id,
    )
    return _snapshot(row) if row else None


async def list_snapshots(
    conn: asyncpg.Connection,
    device_id: uuid.UUID,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Snapshot]:
    """A device's snapshots, newest first (keyset on taken_at, id)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM device_metadata_snapshots
        WHERE device_id = $1 AND ($2::timestamptz IS NULL OR (taken_at, id) < ($2, $3))
        ORDER BY taken_at DESC, id DESC
        LIMIT $4
        """,
        device_id,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_snapshot(r) for r in rows]
