"""Billing plans (a catalogue shared by every tenant): all their SQL.

Global row-level security: everyone reads, only the staff path writes.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from lifebox_grpc.errors import AlreadyExists

_COLUMNS = (
    "id, code, name, billing_interval, price, currency, device_quota, included_usage, active, "
    "created_at, updated_at, tax_rate"
)


@dataclass(frozen=True)
class Plan:
    id: uuid.UUID
    code: str
    name: str
    billing_interval: str
    price: Decimal
    currency: str
    device_quota: int
    included_usage: dict[str, Decimal]
    active: bool
    created_at: datetime
    updated_at: datetime
    tax_rate: Decimal = Decimal(0)  # VAT charged on top (0092)


def _plan(row: Mapping[str, Any]) -> Plan:
    values = {name: row[name] for name in Plan.__dataclass_fields__}
    raw = row["included_usage"]
    included = json.loads(raw) if isinstance(raw, str) else raw
    values["included_usage"] = {k: Decimal(str(v)) for k, v in included.items()}
    return Plan(**values)


@dataclass(frozen=True)
class NewPlan:
    code: str
    name: str
    billing_interval: str
    price: Decimal
    currency: str
    device_quota: int
    included_usage: Mapping[str, Decimal]
    tax_rate: Decimal = Decimal(0)


async def create_plan(conn: asyncpg.Connection, new: NewPlan) -> Plan:
    try:
        row = await conn.fetchrow(
            f"INSERT INTO plans (code, name, billing_interval, price, currency, device_quota, "
            f"included_usage, tax_rate) VALUES ($1, $2, $3, $4, $5, $6, $7::jsonb, $8) "
            f"RETURNING {_COLUMNS}",
            new.code,
            new.name,
            new.billing_interval,
            new.price,
            new.currency,
            new.device_quota,
            json.dumps({k: f"{v:f}" for k, v in new.included_usage.items()}),
            new.tax_rate,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists("a plan with this code already exists") from exc
    assert row is not None
    return _plan(row)


async def get_plan(conn: asyncpg.Connection, plan_id: uuid.UUID) -> Plan | None:
    row = await conn.fetchrow(f"SELECT {_COLUMNS} FROM plans WHERE id = $1", plan_id)
    return _plan(row) if row else None


async def list_plans(
    conn: asyncpg.Connection, *, include_retired: bool, after: str | None, limit: int
) -> list[Plan]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM plans WHERE ($1 OR active) AND ($2::text IS NULL OR code > $2) "
        "ORDER BY code LIMIT $3",
        include_retired,
        after,
        limit,
    )
    return [_plan(r) for r in rows]


_UPDATABLE = frozenset({"name", "price", "device_quota", "included_usage", "active", "tax_rate"})


async def update_plan(
    conn: asyncpg.Connection, plan_id: uuid.UUID, changes: Mapping[str, object]
) -> Plan | None:
    """Apply ``changes``; running subscriptions keep the terms they copied."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    values = dict(changes)
    if "included_usage" in values:
        usage = values["included_usage"]
        assert isinstance(usage, Mapping)
        values["included_usage"] = json.dumps({k: f"{v:f}" for k, v in usage.items()})
    names = sorted(values)
    sets = ", ".join(
        f"{n} = ${i + 2}{'::jsonb' if n == 'included_usage' else ''}" for i, n in enumerate(names)
    )
    row = await conn.fetchrow(
        f"UPDATE plans SET {sets} WHERE id = $1 RETURNING {_COLUMNS}",
        plan_id,
        *(values[n] for n in names),
    )
    return _plan(row) if row else None
