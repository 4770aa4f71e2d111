"""Alarm rules (alarm_rules): the API's CRUD and the rules ingest evaluates.

Every query names its client: the API's store calls take the tenant scope as a parameter
(None: the staff path), and row-level security checks the same.
"""

from __future__ import annotations

import json
import uuid
from dataclasses import asdict, dataclass
from typing import Any

import asyncpg

from lifebox_grpc.alarms.conditions import Rule
from lifebox_grpc.errors import NotFound

COLUMNS = (
    "id, client_id, name, description, kind, device_id, device_type, "
    "device_filter::text AS device_filter, field, condition, threshold_low, threshold_high, "
    "expression, clear_expression, hysteresis, duration_s, clear_after_s, window_s, "
    "device_alarm_severity, severity, message_template, enabled, created_by, created_at, "
    "updated_at"
)
# What a create or an update writes (everything but id, client, enabled and the stamps).
WRITABLE = (
    "name", "description", "kind", "device_id", "device_type", "device_filter", "field",
    "condition", "threshold_low", "threshold_high", "expression", "clear_expression",
    "hysteresis", "duration_s", "clear_after_s", "window_s", "device_alarm_severity",
    "severity", "message_template",
)  # fmt: skip


@dataclass(frozen=True)
class RuleFields:
    """The writable part of a rule, validated by the service."""

    name: str
    description: str
    kind: str
    device_id: uuid.UUID | None
    device_type: str | None
    device_filter: dict[str, Any] | None
    field: str | None
    condition: str | None
    threshold_low: float | None
    threshold_high: float | None
    expression: str | None
    clear_expression: str | None
    hysteresis: float
    duration_s: int
    clear_after_s: int
    window_s: int | None
    device_alarm_severity: str | None
    severity: str
    message_template: str | None


def rule_of(row: asyncpg.Record) -> Rule:
    values = dict(row)
    raw = values.pop("device_filter")
    return Rule(device_filter=None if raw is None else json.loads(raw), **values)


def fields_of(rule: Rule) -> RuleFields:
    """A stored rule's writable part (to apply an update mask over)."""
    return RuleFields(**{name: getattr(rule, name) for name in WRITABLE})


def _values(fields: RuleFields) -> list[Any]:
    values = asdict(fields)
    if values["device_filter"] is not None:
        values["device_filter"] = json.dumps(values["device_filter"])
    return [values[name] for name in WRITABLE]


_PLACEHOLDERS = ", ".join(
    f"${i + 3}::jsonb" if name == "device_filter" else f"${i + 3}"
    for i, name in enumerate(WRITABLE)
)


async def create_rule(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    fields: RuleFields,
    *,
    enabled: bool,
    created_by: uuid.UUID | None,
) -> Rule:
    n = len(WRITABLE) + 3
    row = await conn.fetchrow(
        f"""
        INSERT INTO alarm_rules (client_id, created_by, {", ".join(WRITABLE)}, enabled)
        VALUES ($1, $2, {_PLACEHOLDERS}, ${n})
        RETURNING {COLUMNS}
        """,
        client_id,
        created_by,
        *_values(fields),
        enabled,
    )
    assert row is not None
    return rule_of(row)


async def get_rule(
    conn: asyncpg.Connection, client_id: uuid.UUID | None, rule_id: uuid.UUID, *, lock: bool = False
) -> Rule | None:
    """A rule in scope (``client_id`` None: any tenant's, on the staff path)."""
    row = await conn.fetchrow(
        f"""
        SELECT {COLUMNS} FROM alarm_rules
        WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)
        {"FOR UPDATE" if lock else ""}
        """,
        rule_id,
        client_id,
    )
    return None if row is None else rule_of(row)


async def list_rules(
    conn: asyncpg.Connection,
    client_id: uuid.UUID | None,
    *,
    device: tuple[uuid.UUID, str, str] | None,
    after: tuple[str, uuid.UUID] | None,
    limit: int,
) -> list[Rule]:
    """Rules by name then id; ``device`` (id, type, metadata JSON): only rules scoping it."""
    rows = await conn.fetch(
        f"""
        SELECT {COLUMNS} FROM alarm_rules
        WHERE ($1::uuid IS NULL OR client_id = $1)
          AND ($2::uuid IS NULL OR (
                device_id = $2 OR device_type = $3 OR $4::jsonb @> device_filter
                OR (device_id IS NULL AND device_type IS NULL AND device_filter IS NULL)))
          AND ($5::text IS NULL OR (name, id) > ($5, $6))
        ORDER BY name, id
        LIMIT $7
        """,
        client_id,
        device[0] if device else None,
        device[1] if device else None,
        device[2] if device else None,
        after[0] if after else None,
        after[1] if after else None,
        limit,
    )
    return [rule_of(r) for r in rows]


async def update_rule(conn: asyncpg.Connection, rule: Rule, fields: RuleFields) -> Rule:
    sets = ", ".join(
        f"{name} = ${i + 3}::jsonb" if name == "device_filter" else f"{name} = ${i + 3}"
        for i, name in enumerate(WRITABLE)
    )
    row = await conn.fetchrow(
        f"UPDATE alarm_rules SET {sets} WHERE id = $1 AND client_id = $2 RETURNING {COLUMNS}",
        rule.id,
        rule.client_id,
        *_values(fields),
    )
    if row is None:
        raise NotFound("alarm rule not found")
    return rule_of(row)


async def set_enabled(conn: asyncpg.Connection, rule: Rule, enabled: bool) -> Rule:
    row = await conn.fetchrow(
        f"UPDATE alarm_rules SET enabled = $3 WHERE id = $1 AND client_id = $2 RETURNING {COLUMNS}",
        rule.id,
        rule.client_id,
        enabled,
    )
    if row is None:
        raise NotFound("alarm rule not found")
    return rule_of(row)


async def delete_rule(conn: asyncpg.Connection, rule: Rule) -> None:
    await conn.execute(
        "DELETE FROM alarm_rules WHERE id = $1 AND client_id = $2", rule.id, rule.client_id
    )


async def enabled_rules(conn: asyncpg.Connection, client_id: uuid.UUID) -> list[Rule]:
    """A tenant's enabled rules (ingest evaluates them)."""
    rows = await conn.fetch(
        f"SELECT {COLUMNS} FROM alarm_rules WHERE client_id = $1 AND enabled ORDER BY id",
        client_id,
    )
    return [rule_of(r) for r in rows]


async def device_exists(
    conn: asyncpg.Connection, client_id: uuid.UUID, device_id: uuid.UUID
) -> bool:
    """Whether the tenant has this device (a device-scoped rule names one of its own)."""
    return bool(
        await conn.fetchval(
            "SELECT EXISTS (SELECT 1 FROM devices WHERE id = $1 AND client_id = $2)",
            device_id,
            client_id,
        )
    )
