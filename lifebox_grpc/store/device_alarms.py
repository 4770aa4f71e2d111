"""Hardware alarms devices report over MQTT (device_alarms): the API's SQL, and what
DEVICE_ALARM rules read of them (ingest's sweeper).

Ingest writes the rows; the API lists them and clears them.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg


@dataclass(frozen=True)
class DeviceAlarm:
    """A hardware alarm as stored."""

    id: uuid.UUID
    device_id: uuid.UUID
    code: str
    severity: str
    message: str | None
    raised_at: datetime
    cleared_at: datetime | None
    payload: Any


_COLUMNS = "id, device_id, code, severity, message, raised_at, cleared_at, payload::text AS payload"


def _alarm(row: asyncpg.Record) -> DeviceAlarm:
    payload = row["payload"]
    return DeviceAlarm(
        row["id"],
        row["device_id"],
        row["code"],
        row["severity"],
        row["message"],
        row["raised_at"],
        row["cleared_at"],
        None if payload is None else json.loads(payload),
    )


async def list_alarms(
    conn: asyncpg.Connection,
    device_id: uuid.UUID,
    *,
    open_only: bool,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[DeviceAlarm]:
    """A device's alarms, newest first (keyset on raised_at, id)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM device_alarms
        WHERE device_id = $1 AND (NOT $2 OR cleared_at IS NULL)
          AND ($3::timestamptz IS NULL OR (raised_at, id) < ($3, $4))
        ORDER BY raised_at DESC, id DESC
        LIMIT $5
        """,
        device_id,
        open_only,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_alarm(r) for r in rows]


async def clear_alarm(
    conn: asyncpg.Connection, device_id: uuid.UUID, alarm_id: uuid.UUID
) -> DeviceAlarm | None:
    """Clear an open alarm (an already cleared one is returned as it is)."""
    row = await conn.fetchrow(
        f"""
        UPDATE device_alarms SET cleared_at = greatest(now(), raised_at)
        WHERE id = $1 AND device_id = $2 AND cleared_at IS NULL
        RETURNING {_COLUMNS}
        """,
        alarm_id,
        device_id,
    )
    if row is None:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM device_alarms WHERE id = $1 AND device_id = $2",
            alarm_id,
            device_id,
        )
    return _alarm(row) if row else None


@dataclass(frozen=True)
class AlarmMark:
    """What a DEVICE_ALARM rule reads of one hardware alarm (0073 grants ingest these)."""

    code: str
    severity: str
    raised_at: datetime
    cleared_at: datetime | None


async def alarm_marks(
    conn: asyncpg.Connection, device_id: uuid.UUID, limit: int
) -> list[AlarmMark]:
    """The device's latest ``limit`` hardware alarms, oldest first."""
    rows = await conn.fetch(
        """
        SELECT code, severity, raised_at, cleared_at FROM (
            SELECT code, severity, raised_at, cleared_at FROM device_alarms
            WHERE device_id = $1 ORDER BY raised_at DESC LIMIT $2
        ) a ORDER BY raised_at
        """,
        device_id,
        limit,
    )
    return [AlarmMark(r["code"], r["severity"], r["raised_at"], r["cleared_at"]) for r in rows]


async def walked_through(
    conn: asyncpg.Connection, rule_id: uuid.UUID, device_id: uuid.UUID
) -> datetime | None:
    """How far the rule's walk over the device's alarms has gone (the locked state row's
    ``last_time``)."""
    value: datetime | None = await conn.fetchval(
        "SELECT last_time FROM alarm_rule_states WHERE rule_id = $1 AND device_id = $2",
        rule_id,
        device_id,
    )
    return value


async def set_walked_through(
    conn: asyncpg.Connection, rule_id: uuid.UUID, device_id: uuid.UUID, through: datetime
) -> None:
    await conn.execute(
        "UPDATE alarm_rule_states SET last_time = $3, updated_at = now() "
        "WHERE rule_id = $1 AND device_id = $2",
        rule_id,
        device_id,
        through,
    )
