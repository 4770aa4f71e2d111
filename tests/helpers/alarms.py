"""Alarm factories and probes: rules inserted as the owner, events and watermarks read back."""

from __future__ import annotations

import json
import uuid
from datetime import datetime
from typing import Any

import asyncpg

from lifebox_grpc.store.pool import tenant_transaction

_RULE_COLUMNS = (
    "name", "kind", "device_id", "device_type", "device_filter", "field", "condition",
    "threshold_low", "threshold_high", "expression", "clear_expression", "hysteresis",
    "duration_s", "clear_after_s", "window_s", "severity", "message_template", "enabled",
)  # fmt: skip


async def make_rule(conn: asyncpg.Connection, client_id: uuid.UUID, **values: Any) -> uuid.UUID:
    """A rule of ``client_id`` (threshold ``temperature_c > 30`` unless told otherwise)."""
    values = {
        "name": f"rule-{uuid.uuid4().hex[:6]}",
        "kind": "threshold",
        "field": "temperature_c",
        "condition": "gt",
        "threshold_high": 30.0,
        **values,
    }
    if "device_filter" in values and values["device_filter"] is not None:
        values["device_filter"] = json.dumps(values["device_filter"])
    names = [n for n in _RULE_COLUMNS if n in values]
    placeholders = ", ".join(
        f"${i + 2}::jsonb" if n == "device_filter" else f"${i + 2}" for i, n in enumerate(names)
    )
    async with tenant_transaction(conn, None, staff=True):
        rule_id: uuid.UUID = await conn.fetchval(
            f"INSERT INTO alarm_rules (client_id, {', '.join(names)}) "
            f"VALUES ($1, {placeholders}) RETURNING id",
            client_id,
            *[values[n] for n in names],
        )
    return rule_id


async def events_of(
    conn: asyncpg.Connection, rule_id: uuid.UUID, device_id: uuid.UUID | None = None
) -> list[asyncpg.Record]:
    """A rule's events (on one device, if named), in raise order."""
    async with tenant_transaction(conn, None, staff=True):
        return list(
            await conn.fetch(
                "SELECT id, device_id, status, raised_at, cleared_at, trigger_value, clear_value, "
                "message FROM alarm_events WHERE rule_id = $1 AND ($2::uuid IS NULL "
                "OR device_id = $2) ORDER BY raised_at, id",
                rule_id,
                device_id,
            )
        )


async def watermark(conn: asyncpg.Connection, device_id: uuid.UUID) -> datetime | None:
    async with tenant_transaction(conn, None, staff=True):
        value: datetime | None = await conn.fetchval(
            "SELECT evaluated_through FROM alarm_device_cursors WHERE device_id = $1", device_id
        )
    return value


async def make_event(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    rule_id: uuid.UUID,
    device_id: uuid.UUID,
    raised_at: datetime,
) -> uuid.UUID:
    """An open event of the rule on the device, with its 'raised' change."""
    async with tenant_transaction(conn, None, staff=True):
        event_id: uuid.UUID = await conn.fetchval(
            "INSERT INTO alarm_events (client_id, rule_id, device_id, severity, raised_at, "
            "trigger_value) VALUES ($1, $2, $3, 'major', $4, 42) RETURNING id",
            client_id,
            rule_id,
            device_id,
            raised_at,
        )
        await conn.execute(
            "INSERT INTO alarm_event_changes (client_id, event_id, rule_id, device_id, change, "
            "status, changed_at) VALUES ($1, $2, $3, $4, 'raised', 'active_unack', $5)",
            client_id,
            event_id,
            rule_id,
            device_id,
            raised_at,
        )
    return event_id
