"""Subscriptions and their audit trail: all their SQL.

The database enforces the lifecycle (migration 0085: only the defined transitions, an audit
row by trigger with every change); :func:`set_actor` names who acts and why for those rows.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from lifebox_grpc.errors import AlreadyExists, FailedPrecondition, ResourceExhausted
from lifebox_grpc.store.billing_plans import Plan

LIVE = ("trialing", "active", "past_due")
_COLUMNS = (
    "id, client_id, plan, plan_id, status, billing_interval, current_period_start, "
    "current_period_end, device_quota, price, currency, auto_renew, cancel_at_period_end, "
    "past_due_since, cancelled_at, ended_at, created_at, updated_at"
)


@dataclass(frozen=True)
class Subscription:
    id: uuid.UUID
    client_id: uuid.UUID
    plan: str
    plan_id: uuid.UUID | None
    status: str
    billing_interval: str
    current_period_start: datetime
    current_period_end: datetime
    device_quota: int
    price: Decimal
    currency: str
    auto_renew: bool
    cancel_at_period_end: bool
    past_due_since: datetime | None
    cancelled_at: datetime | None
    ended_at: datetime | None
    created_at: datetime
    updated_at: datetime


def _subscription(row: Mapping[str, Any]) -> Subscription:
    return Subscription(**{name: row[name] for name in Subscription.__dataclass_fields__})


@dataclass(frozen=True)
class Event:
    id: int
    subscription_id: uuid.UUID
    kind: str
    from_status: str | None
    to_status: str
    from_plan: str | None
    to_plan: str
    period_start: datetime
    period_end: datetime
    actor: uuid.UUID | None
    reason: str | None
    at: datetime


async def set_actor(conn: asyncpg.Connection, actor: uuid.UUID | None, reason: str | None) -> None:
    """Who acts in this transaction and why, for the audit rows the triggers write."""
    await conn.execute(
        "SELECT set_config('lifebox.actor', $1, true), set_config('lifebox.reason', $2, true)",
        str(actor) if actor else "",
        (reason or "")[:500],
    )


async def period_end(conn: asyncpg.Connection, start: datetime, interval: str) -> datetime:
    """The end of a period of one ``interval`` ('month' or 'year') from ``start`` (UTC
    calendar arithmetic: Jan 31 + 1 month is Feb 28/29)."""
    value: datetime = await conn.fetchval(
        "SELECT $1::timestamptz + ('1 ' || $2)::interval", start, interval
    )
    return value


async def create_subscription(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    plan: Plan,
    *,
    status: str,
    start: datetime,
    end: datetime,
    auto_renew: bool,
) -> Subscription:
    try:
        row = await conn.fetchrow(
            f"""
            INSERT INTO subscriptions (client_id, plan, plan_id, status, billing_interval,
                current_period_start, current_period_end, device_quota, price, currency,
                auto_renew)
            VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING {_COLUMNS}
            """,
            client_id,
            plan.code,
            plan.id,
            status,
            plan.billing_interval,
            start,
            end,
            plan.device_quota,
            plan.price,
            plan.currency,
            auto_renew,
        )
    except asyncpg.UniqueViolationError as exc:
        raise AlreadyExists("this client already has a live subscription") from exc
    assert row is not None
    return _subscription(row)


async def get_subscription(
    conn: asyncpg.Connection,
    subscription_id: uuid.UUID,
    client_filter: uuid.UUID | None,
    *,
    lock: bool = False,
) -> Subscription | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM subscriptions "
        f"WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2){' FOR UPDATE' if lock else ''}",
        subscription_id,
        client_filter,
    )
    return _subscription(row) if row else None


async def live_subscription(
    conn: asyncpg.Connection, client_id: uuid.UUID, *, lock: bool = False
) -> Subscription | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM subscriptions WHERE client_id = $1 "
        f"AND status = ANY($2::text[]){' FOR UPDATE' if lock else ''}",
        client_id,
        list(LIVE),
    )
    return _subscription(row) if row else None


async def list_subscriptions(
    conn: asyncpg.Connection,
    client_filter: uuid.UUID | None,
    *,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Subscription]:
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM subscriptions
        WHERE ($1::uuid IS NULL OR client_id = $1)
          AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
        ORDER BY created_at DESC, id DESC LIMIT $4
        """,
        client_filter,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [_subscription(r) for r in rows]


_UPDATABLE = frozenset(
    {
        "status",
        "plan",
        "plan_id",
        "device_quota",
        "price",
        "currency",
        "billing_interval",
        "current_period_start",
        "current_period_end",
        "auto_renew",
        "cancel_at_period_end",
        "past_due_since",
        "cancelled_at",
        "ended_at",
    }
)


async def update_subscription(
    conn: asyncpg.Connection, subscription_id: uuid.UUID, changes: Mapping[str, object]
) -> Subscription:
    """Apply ``changes``; the lifecycle trigger refuses an undefined transition, which is a
    bug of the caller (it checks first), so it surfaces as FailedPrecondition."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    names = sorted(changes)
    sets = ", ".join(f"{n} = ${i + 2}" for i, n in enumerate(names))
    try:
        row = await conn.fetchrow(
            f"UPDATE subscriptions SET {sets} WHERE id = $1 RETURNING {_COLUMNS}",
            subscription_id,
            *(changes[n] for n in names),
        )
    except asyncpg.CheckViolationError as exc:
        raise FailedPrecondition("this subscription cannot make that change") from exc
    assert row is not None
    return _subscription(row)


async def list_events(conn: asyncpg.Connection, subscription_id: uuid.UUID) -> list[Event]:
    rows = await conn.fetch(
        "SELECT id, subscription_id, kind, from_status, to_status, from_plan, to_plan, "
        "period_start, period_end, actor, reason, at FROM subscription_events "
        "WHERE subscription_id = $1 ORDER BY id",
        subscription_id,
    )
    return [Event(**dict(r)) for r in rows]


async def latest_event_id(conn: asyncpg.Connection, subscription_id: uuid.UUID) -> int:
    value: int = await conn.fetchval(
        "SELECT max(id) FROM subscription_events WHERE subscription_id = $1", subscription_id
    )
    return value


async def due_subscriptions(conn: asyncpg.Connection, now: datetime) -> list[uuid.UUID]:
    """Live subscriptions whose period has ended (renew, expire or cancel them)."""
    rows = await conn.fetch(
        "SELECT id FROM subscriptions WHERE status = ANY($1::text[]) "
        "AND current_period_end <= $2 ORDER BY current_period_end",
        list(LIVE),
        now,
    )
    return [r["id"] for r in rows]


async def past_due_subscriptions(conn: asyncpg.Connection) -> list[Subscription]:
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM subscriptions WHERE status = 'past_due'")
    return [_subscription(r) for r in rows]


# -- the device quota ----------------------------------------------------------------------


async def check_device_quota(conn: asyncpg.Connection, client_id: uuid.UUID, adding: int) -> None:
    """RESOURCE_EXHAUSTED (QuotaFailure ``billing:device_quota``) when ``adding`` more devices
    would take the client past its live subscription's quota. Locks the subscription row, so
    concurrent creations on one client count one after the other. A client without a live
    subscription has no quota (billing not set up for it)."""
    quota = await conn.fetchval(
        "SELECT device_quota FROM subscriptions WHERE client_id = $1 "
        "AND status = ANY($2::text[]) FOR UPDATE",
        client_id,
        list(LIVE),
    )
    if quota is None:
        return
    used = await conn.fetchval(
        "SELECT count(*) FROM devices WHERE client_id = $1 AND status <> 'decommissioned'",
        client_id,
    )
    if used + adding > quota:
        raise ResourceExhausted(
            f"the subscription allows {quota} devices; {used} exist and {adding} more were asked "
            "for: change to a larger plan or remove devices",
            retry_after=0.0,
            subject="billing:device_quota",
            reason="ERROR_REASON_QUOTA_EXCEEDED",
        )
