"""Device locations (a time series): all their SQL."""

from __future__ import annotations

import uuid
from datetime import datetime

import asyncpg

from lifebox_grpc.errors import AlreadyExists
from lifebox_grpc.store.devices import Location

_COLUMNS = "time, latitude, longitude, altitude_m, accuracy_m, source"


def _location(row: asyncpg.Record) -> Location:
    return Location(*(row[name] for name in Location.__dataclass_fields__))


async def record_location(
    conn: asyncpg.Connection,
    device_id: uuid.UUID,
    client_id: uuid.UUID,
    location: Location,
) -> Location:
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO device_locations
                (time, device_id, client_id, latitude, longitude, altitude_m, accuracy_m, source)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8)
            RETURNING {_COLUMNS}
            """,
            location.time,
            device_id,
            client_id,
            location.latitude,
            location.longitude,
            location.altitude_m,
            location.accuracy_m,
            location.source,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists("the device already has a location at this time") from exc
    assert row is not None
    return _location(row)


async def list_locations(
    conn: asyncpg.Connection,
    device_id: uuid.UUID,
    *,
    start: datetime | None,
    end: datetime | None,
    before: datetime | None,
    limit: int,
) -> list[Location]:
    """Locations in [start, end), newest first, older than ``before`` (the cursor)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM device_locations
        WHERE device_id = $1
          AND ($2::timestamptz IS NULL OR time >= $2)
          AND ($3::timestamptz IS NULL OR time < $3)
          AND ($4::timestamptz IS NULL OR time < $4)
        ORDER BY time DESC
        LIMIT $5
        """,
        device_id,
        start,
        end,
        before,
        limit,
    )
    return [_location(r) for r in rows]
