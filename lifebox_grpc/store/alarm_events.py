"""Alarm events (alarm_events), their changes and acknowledgments: the API's SQL.

Ingest raises and clears events (store/alarm_evaluation.py); the API lists them,
acknowledges them and follows their changes. ``visible`` is the caller's device filter:
the client (None: every tenant, staff) and, for operators and viewers, their devices.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

from lifebox_grpc.store.devices import DeviceFilter


@dataclass(frozen=True)
class Event:
    id: uuid.UUID
    client_id: uuid.UUID
    rule_id: uuid.UUID
    device_id: uuid.UUID
    severity: str
    status: str
    raised_at: datetime
    cleared_at: datetime | None
    acknowledged_at: datetime | None
    trigger_value: float | None
    clear_value: float | None
    message: str | None
    details: dict[str, Any]


@dataclass(frozen=True)
class Acknowledgment:
    id: uuid.UUID
    user_id: uuid.UUID | None
    acknowledged_at: datetime
    note: str | None


@dataclass(frozen=True)
class Change:
    event_id: uuid.UUID
    change: str
    status: str
    changed_at: datetime
    recorded_at: datetime
    id: uuid.UUID


_COLUMNS = (
    "id, client_id, rule_id, device_id, severity, status, raised_at, cleared_at, "
    "acknowledged_at, trigger_value, clear_value, message, details::text AS details"
)


def _event(row: asyncpg.Record) -> Event:
    values = dict(row)
    return Event(**{**values, "details": json.loads(values["details"])})


def _visible(first: int) -> str:
    """The SQL condition of a device filter at parameters $first (client), $first+1 (devices)."""
    return (
        f"(${first}::uuid IS NULL OR client_id = ${first}) "
        f"AND (${first + 1}::uuid[] IS NULL OR device_id = ANY(${first + 1}))"
    )


def _filter_args(visible: DeviceFilter) -> list[Any]:
    devices = visible.device_ids
    return [visible.client_id, None if devices is None else list(devices)]


@dataclass(frozen=True)
class EventQuery:
    device_id: uuid.UUID | None = None
    rule_id: uuid.UUID | None = None
    severities: Sequence[str] = ()
    statuses: Sequence[str] = ()
    start: datetime | None = None
    end: datetime | None = None


async def list_events(
    conn: asyncpg.Connection,
    visible: DeviceFilter,
    query: EventQuery,
    *,
    after: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Event]:
    """Events newest raise first (keyset on raised_at, id)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM alarm_events
        WHERE {_visible(1)}
          AND ($3::uuid IS NULL OR device_id = $3) AND ($4::uuid IS NULL OR rule_id = $4)
          AND (cardinality($5::text[]) = 0 OR severity = ANY($5))
          AND (cardinality($6::text[]) = 0 OR status = ANY($6))
          AND ($7::timestamptz IS NULL OR raised_at >= $7)
          AND ($8::timestamptz IS NULL OR raised_at < $8)
          AND ($9::timestamptz IS NULL OR (raised_at, id) < ($9, $10))
        ORDER BY raised_at DESC, id DESC
        LIMIT $11
        """,
        *_filter_args(visible),
        query.device_id,
        query.rule_id,
        list(query.severities),
        list(query.statuses),
        query.start,
        query.end,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [_event(r) for r in rows]


async def get_event(
    conn: asyncpg.Connection, visible: DeviceFilter, event_id: uuid.UUID, *, lock: bool = False
) -> Event | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM alarm_events WHERE id = $3 AND {_visible(1)}"
        + (" FOR UPDATE" if lock else ""),
        *_filter_args(visible),
        event_id,
    )
    return None if row is None else _event(row)


async def acknowledgments(conn: asyncpg.Connection, event_id: uuid.UUID) -> list[Acknowledgment]:
    rows = await conn.fetch(
        "SELECT id, user_id, acknowledged_at, note FROM alarm_acknowledgments "
        "WHERE event_id = $1 ORDER BY acknowledged_at, id",
        event_id,
    )
    return [Acknowledgment(*r.values()) for r in rows]


async def changes(conn: asyncpg.Connection, event_id: uuid.UUID) -> list[Change]:
    rows = await conn.fetch(
        "SELECT event_id, change, status, changed_at, recorded_at, id FROM alarm_event_changes "
        "WHERE event_id = $1 ORDER BY recorded_at, id",
        event_id,
    )
    return [Change(*r.values()) for r in rows]


ACK_TO = {"active_unack": "active_ack", "cleared_unack": "cleared_ack"}


async def acknowledge(
    conn: asyncpg.Connection, event: Event, user_id: uuid.UUID | None, note: str | None
) -> Event:
    """Acknowledge an unacknowledged event (locked by the caller): its status, the
    acknowledgment and the change, in the caller's transaction."""
    status = ACK_TO[event.status]
    row = await conn.fetchrow(
        f"""
        UPDATE alarm_events SET status = $3, acknowledged_at = now()
        WHERE id = $1 AND client_id = $2 RETURNING {_COLUMNS}
        """,
        event.id,
        event.client_id,
        status,
    )
    assert row is not None
    await conn.execute(
        "INSERT INTO alarm_acknowledgments (client_id, event_id, user_id, note) "
        "VALUES ($1, $2, $3, $4)",
        event.client_id,
        event.id,
        user_id,
        note,
    )
    await conn.execute(
        "INSERT INTO alarm_event_changes (client_id, event_id, rule_id, device_id, change, "
        "status, changed_at) VALUES ($1, $2, $3, $4, 'acknowledged', $5, now())",
        event.client_id,
        event.id,
        event.rule_id,
        event.device_id,
        status,
    )
    return _event(row)


async def changes_since(
    conn: asyncpg.Connection,
    visible: DeviceFilter,
    device_ids: Sequence[uuid.UUID] | None,
    since: datetime,
    limit: int,
) -> list[tuple[Change, Event]]:
    """Changes recorded at or after ``since``, oldest first, with their events as now."""
    rows = await conn.fetch(
        f"""
        SELECT c.event_id, c.change, c.status AS change_status, c.changed_at, c.recorded_at,
               c.id AS change_id,
               {", ".join("e." + c.strip() for c in _COLUMNS.split(","))}
        FROM alarm_event_changes c JOIN alarm_events e ON e.id = c.event_id
        WHERE c.recorded_at >= $3 AND ($4::uuid[] IS NULL OR c.device_id = ANY($4))
          AND (($1::uuid IS NULL OR c.client_id = $1)
               AND ($2::uuid[] IS NULL OR c.device_id = ANY($2)))
        ORDER BY c.recorded_at, c.id
        LIMIT $5
        """,
        *_filter_args(visible),
        since,
        None if device_ids is None else list(device_ids),
        limit,
    )
    out = []
    for r in rows:
        change = Change(
            r["event_id"],
            r["change"],
            r["change_status"],
            r["changed_at"],
            r["recorded_at"],
            r["change_id"],
        )
        event = Event(
            r["id"], r["client_id"], r["rule_id"], r["device_id"], r["severity"], r["status"],
            r["raised_at"], r["cleared_at"], r["acknowledged_at"], r["trigger_value"],
            r["clear_value"], r["message"], json.loads(r["details"]),
        )  # fmt: skip
        out.append((change, event))
    return out
