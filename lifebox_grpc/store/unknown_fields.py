"""Unknown telemetry keys: the per-client catalogue and which devices sent each key.

``unknown_field_catalog`` counts every key per client (ingest upserts it with the other
post-commit facts). ``unknown_field_devices`` holds each (device, key) pair once, with that
device's first value, so that a caller who sees only some devices (operators and viewers)
is shown only what those devices sent (migration 0040).
"""

from __future__ import annotations

import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime

import asyncpg


@dataclass(frozen=True)
class UnknownField:
    """A catalogue entry, or what some devices of one client sent of one key.

    Over some devices, ``inferred_type`` and ``example_json`` are those of the devices'
    first values ('mixed' when they differ), ``first_seen_at`` the earliest, and the count and
    last-seen time are not known (0 and None).
    """

    client_id: uuid.UUID
    field_name: str
    inferred_type: str
    seen_count: int
    example_json: str | None
    first_seen_at: datetime
    last_seen_at: datetime | None


@dataclass(frozen=True)
class DeviceField:
    """A key a device sent, first seen at ``seen_at`` with a value of ``json_type``."""

    client_id: uuid.UUID
    device_id: uuid.UUID
    name: str
    json_type: str
    example: str
    seen_at: datetime


def _fields(rows: Sequence[asyncpg.Record]) -> list[UnknownField]:
    return [UnknownField(*(r[n] for n in UnknownField.__dataclass_fields__)) for r in rows]


async def list_unknown_fields(
    conn: asyncpg.Connection,
    client_filter: uuid.UUID | None,
    *,
    after: tuple[uuid.UUID, str] | None,
    limit: int,
) -> list[UnknownField]:
    """The catalogue of one client (None: every client), by (client, key)."""
    rows = await conn.fetch(
        """
        SELECT client_id, field_name, inferred_type, seen_count,
               example_value::text AS example_json, first_seen_at, last_seen_at
        FROM unknown_field_catalog
        WHERE ($1::uuid IS NULL OR client_id = $1)
          AND ($2::uuid IS NULL OR (client_id, field_name) > ($2, $3))
        ORDER BY client_id, field_name
        LIMIT $4
        """,
        client_filter,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return _fields(rows)


async def list_device_fields(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    device_ids: Sequence[uuid.UUID],
    *,
    after: tuple[uuid.UUID, str] | None,
    limit: int,
) -> list[UnknownField]:
    """The keys that any of ``device_ids`` (of ``client_id``) sent, by (client, key)."""
    rows = await conn.fetch(
        """
        SELECT client_id, field_name,
               CASE WHEN min(inferred_type) = max(inferred_type) THEN min(inferred_type)
                    ELSE 'mixed' END AS inferred_type,
               0::bigint AS seen_count,
               (array_agg(example_value::text ORDER BY first_seen_at, device_id))[1]
                   AS example_json,
               min(first_seen_at) AS first_seen_at,
               NULL::timestamptz AS last_seen_at
        FROM unknown_field_devices
        WHERE client_id = $1 AND device_id = ANY($2::uuid[])
          AND ($3::uuid IS NULL OR (client_id, field_name) > ($3, $4))
        GROUP BY client_id, field_name
        ORDER BY client_id, field_name
        LIMIT $5
        """,
        client_id,
        list(device_ids),
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return _fields(rows)


async def list_visible_fields(
    conn: asyncpg.Connection,
    client_filter: uuid.UUID | None,
    device_ids: Sequence[uuid.UUID] | None,
    *,
    after: tuple[uuid.UUID, str] | None,
    limit: int,
) -> list[UnknownField]:
    """What a caller who sees ``device_ids`` of ``client_filter`` (None: every device of it;
    a client None means every client) may know of unknown keys, by (client, key)."""
    if device_ids is None:
        return await list_unknown_fields(conn, client_filter, after=after, limit=limit)
    if client_filter is None or not device_ids:
        return []
    return await list_device_fields(conn, client_filter, device_ids, after=after, limit=limit)


async def record_device_fields(conn: asyncpg.Connection, rows: Sequence[DeviceField]) -> None:
    """Record (ingest) which devices sent which keys; a pair already recorded, or of a device
    deleted meanwhile, is skipped."""
    await conn.execute(
        """
        INSERT INTO unknown_field_devices
            (client_id, device_id, field_name, inferred_type, first_seen_at, example_value)
        SELECT r.client_id, r.device_id, r.name, r.json_type, r.seen_at, r.example
        FROM unnest($1::uuid[], $2::uuid[], $3::text[], $4::text[], $5::timestamptz[],
                    $6::jsonb[]) AS r(client_id, device_id, name, json_type, seen_at, example)
        JOIN devices d ON d.id = r.device_id AND d.client_id = r.client_id
        ON CONFLICT (device_id, field_name) DO NOTHING
        """,
        [r.client_id for r in rows],
        [r.device_id for r in rows],
        [r.name for r in rows],
        [r.json_type for r in rows],
        [r.seen_at for r in rows],
        [r.example for r in rows],
    )
