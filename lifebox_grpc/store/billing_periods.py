"""Postpaid periods and their frozen usage lines: all their SQL.

The lifecycle (open -> closed -> invoiced -> paid | void, invoiced -> overdue -> paid | void)
and the freeze of a closed period's totals are enforced by the database (migration 0088).
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

_COLUMNS = (
    "id, client_id, period_start, period_end, status, subtotal, tax, total, currency, "
    "invoice_ref, closed_at, due_at, invoiced_at, settled_at, created_at, updated_at"
)


@dataclass(frozen=True)
class Period:
    id: uuid.UUID
    client_id: uuid.UUID
    period_start: datetime
    period_end: datetime
    status: str
    subtotal: Decimal
    tax: Decimal
    total: Decimal
    currency: str
    invoice_ref: str | None
    closed_at: datetime | None
    due_at: datetime | None
    invoiced_at: datetime | None
    settled_at: datetime | None
    created_at: datetime
    updated_at: datetime


def _period(row: Mapping[str, Any]) -> Period:
    return Period(**{name: row[name] for name in Period.__dataclass_fields__})


@dataclass(frozen=True)
class PeriodLine:
    item: str
    quantity: Decimal
    included: Decimal
    unit_price: Decimal
    amount: Decimal
    currency: str


async def open_period(
    conn: asyncpg.Connection, client_id: uuid.UUID, start: datetime, end: datetime, currency: str
) -> Period:
    """The period starting at ``start`` (made once: a second call returns the first)."""
    row = await conn.fetchrow(
        f"""
        INSERT INTO postpaid_periods (client_id, period_start, period_end, currency)
        VALUES ($1, $2, $3, $4) ON CONFLICT (client_id, period_start) DO NOTHING
        RETURNING {_COLUMNS}
        """,
        client_id,
        start,
        end,
        currency,
    )
    if row is None:
        row = await conn.fetchrow(
            f"SELECT {_COLUMNS} FROM postpaid_periods WHERE client_id = $1 AND period_start = $2",
            client_id,
            start,
        )
    assert row is not None
    return _period(row)


async def close_and_invoice(
    conn: asyncpg.Connection,
    period: Period,
    lines: Sequence[PeriodLine],
    *,
    due_at: datetime,
    invoice_ref: str,
    tax_rate: Decimal = Decimal(0),
    tax: Decimal = Decimal(0),
) -> Period:
    """Freeze ``lines``, the rate and the totals (total = sum of the lines + ``tax``), then
    invoice (open -> closed -> invoiced)."""
    await conn.executemany(
        "INSERT INTO postpaid_period_lines (client_id, period_id, item, quantity, included, "
        "unit_price, amount, currency) VALUES ($1, $2, $3, $4, $5, $6, $7, $8)",
        [
            (
                period.client_id,
                period.id,
                ln.item,
                ln.quantity,
                ln.included,
                ln.unit_price,
                ln.amount,
                ln.currency,
            )
            for ln in lines
        ],
    )
    subtotal = sum((ln.amount for ln in lines), Decimal(0))
    await conn.execute(
        "UPDATE postpaid_periods SET subtotal = $2, tax_rate = $3, tax = $4, "
        "total = $2::numeric + $4::numeric, "
        "status = 'closed', closed_at = now() WHERE id = $1",
        period.id,
        subtotal,
        tax_rate,
        tax,
    )
    row = await conn.fetchrow(
        f"UPDATE postpaid_periods SET status = 'invoiced', invoiced_at = now(), due_at = $2, "
        f"invoice_ref = $3 WHERE id = $1 RETURNING {_COLUMNS}",
        period.id,
        due_at,
        invoice_ref,
    )
    assert row is not None
    return _period(row)


async def mark_overdue(conn: asyncpg.Connection, now: datetime) -> list[Period]:
    rows = await conn.fetch(
        f"UPDATE postpaid_periods SET status = 'overdue' WHERE status = 'invoiced' "
        f"AND due_at <= $1 RETURNING {_COLUMNS}",
        now,
    )
    return [_period(r) for r in rows]


async def settle_periods(conn: asyncpg.Connection, client_id: uuid.UUID) -> int:
    """Invoiced and overdue periods of a client whose balance covers them become paid."""
    status = await conn.execute(
        "UPDATE postpaid_periods SET status = 'paid', settled_at = now() "
        "WHERE client_id = $1 AND status IN ('invoiced', 'overdue')",
        client_id,
    )
    return int(status.split()[-1])


async def overdue_clients(conn: asyncpg.Connection, before: datetime) -> list[uuid.UUID]:
    rows = await conn.fetch(
        "SELECT DISTINCT client_id FROM postpaid_periods WHERE status = 'overdue' AND due_at <= $1",
        before,
    )
    return [r["client_id"] for r in rows]


async def list_periods(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    *,
    before: datetime | None,
    limit: int,
) -> list[Period]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM postpaid_periods WHERE client_id = $1 "
        "AND ($2::timestamptz IS NULL OR period_start < $2) ORDER BY period_start DESC LIMIT $3",
        client_id,
        before,
        limit,
    )
    return [_period(r) for r in rows]


async def period_lines(conn: asyncpg.Connection, period_id: uuid.UUID) -> list[PeriodLine]:
    rows = await conn.fetch(
        "SELECT item, quantity, included, unit_price, amount, currency "
        "FROM postpaid_period_lines WHERE period_id = $1 ORDER BY item",
        period_id,
    )
    return [PeriodLine(**dict(r)) for r in rows]


async def get_period(
    conn: asyncpg.Connection,
    period_id: uuid.UUID,
    client_filter: uuid.UUID | None,
    *,
    lock: bool = False,
) -> Period | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM postpaid_periods WHERE id = $1 "
        f"AND ($2::uuid IS NULL OR client_id = $2){' FOR UPDATE' if lock else ''}",
        period_id,
        client_filter,
    )
    return _period(row) if row else None


async def void_period(conn: asyncpg.Connection, period_id: uuid.UUID) -> Period:
    """invoiced | overdue -> void (the trigger refuses any other move and audits this one)."""
    row = await conn.fetchrow(
        f"UPDATE postpaid_periods SET status = 'void', settled_at = now() WHERE id = $1 "
        f"RETURNING {_COLUMNS}",
        period_id,
    )
    assert row is not None
    return _period(row)


@dataclass(frozen=True)
class PeriodEvent:
    from_status: str | None
    to_status: str
    actor: uuid.UUID | None
    reason: str | None
    created_at: datetime


async def period_events(conn: asyncpg.Connection, period_id: uuid.UUID) -> list[PeriodEvent]:
    """A period's status changes, oldest first (migration 0090's trail)."""
    rows = await conn.fetch(
        "SELECT from_status, to_status, actor, reason, created_at FROM postpaid_period_events "
        "WHERE period_id = $1 ORDER BY id",
        period_id,
    )
    return [PeriodEvent(**dict(r)) for r in rows]
