"""The credit ledger (credit_transactions) and exchange rates: all their SQL.

A row is booked by the database (migration 0086): the insert locks the client, moves
``clients.balance`` by a completed amount and stamps ``balance_after``. This module only
inserts; it never writes a balance. Rows are never updated or deleted: a correction or a
refund is a new row whose ``reverses_id`` points at the original.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

import asyncpg

from lifebox_grpc.errors import FailedPrecondition, NotFound

CENT = Decimal("0.01")
_COLUMNS = (
    "id, client_id, amount, currency, kind, status, external_ref, balance_after, description, "
    "reverses_id, postpaid_period_id, fawry_notification_id, original_amount, original_currency, "
    "exchange_rate_id, exchange_rate, created_by, created_at"
)


@dataclass(frozen=True)
class Entry:
    id: uuid.UUID
    client_id: uuid.UUID
    amount: Decimal
    currency: str
    kind: str
    status: str
    external_ref: str | None
    balance_after: Decimal
    description: str | None
    reverses_id: uuid.UUID | None
    postpaid_period_id: uuid.UUID | None
    fawry_notification_id: uuid.UUID | None
    original_amount: Decimal | None
    original_currency: str | None
    exchange_rate_id: uuid.UUID | None
    exchange_rate: Decimal | None
    created_by: uuid.UUID | None
    created_at: datetime


def _entry(row: Mapping[str, Any]) -> Entry:
    return Entry(**{name: row[name] for name in Entry.__dataclass_fields__})


@dataclass(frozen=True)
class Conversion:
    """What was paid, and the rate that turned it into the client's currency."""

    original_amount: Decimal
    original_currency: str
    rate_id: uuid.UUID
    rate: Decimal
    converted: Decimal


@dataclass(frozen=True)
class Booking:
    client_id: uuid.UUID
    amount: Decimal
    currency: str
    kind: str
    description: str | None = None
    external_ref: str | None = None
    status: str = "completed"
    reverses_id: uuid.UUID | None = None
    postpaid_period_id: uuid.UUID | None = None
    fawry_notification_id: uuid.UUID | None = None
    conversion: Conversion | None = None
    created_by: uuid.UUID | None = None


async def book(conn: asyncpg.Connection, booking: Booking) -> Entry:
    """Insert one ledger row (in the caller's transaction); the database books it."""
    c = booking.conversion
    row = await conn.fetchrow(
        f"""
        INSERT INTO credit_transactions (
            client_id, amount, currency, kind, status, external_ref, description, reverses_id,
            postpaid_period_id, fawry_notification_id, original_amount, original_currency,
            exchange_rate_id, exchange_rate, created_by)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15)
        RETURNING {_COLUMNS}
        """,
        booking.client_id,
        booking.amount,
        booking.currency,
        booking.kind,
        booking.status,
        booking.external_ref,
        booking.description,
        booking.reverses_id,
        booking.postpaid_period_id,
        booking.fawry_notification_id,
        c.original_amount if c else None,
        c.original_currency if c else None,
        c.rate_id if c else None,
        c.rate if c else None,
        booking.created_by,
    )
    assert row is not None
    return _entry(row)


async def book_once(conn: asyncpg.Connection, booking: Booking) -> tuple[Entry, bool]:
    """Book a row with an external reference unless it is booked already; (row, new?).

    The check and the insert run under the client's row lock, so two concurrent attempts
    book it once."""
    assert booking.external_ref is not None
    await conn.execute("SELECT 1 FROM clients WHERE id = $1 FOR UPDATE", booking.client_id)
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM credit_transactions "
        "WHERE client_id = $1 AND kind = $2 AND external_ref = $3",
        booking.client_id,
        booking.kind,
        booking.external_ref,
    )
    if row is not None:
        return _entry(row), False
    return await book(conn, booking), True


async def entry_by_ref(
    conn: asyncpg.Connection, client_id: uuid.UUID, kind: str, external_ref: str
) -> Entry | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM credit_transactions "
        "WHERE client_id = $1 AND kind = $2 AND external_ref = $3",
        client_id,
        kind,
        external_ref,
    )
    return _entry(row) if row else None


async def get_entry(
    conn: asyncpg.Connection, entry_id: uuid.UUID, client_filter: uuid.UUID | None
) -> Entry | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM credit_transactions "
        "WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2)",
        entry_id,
        client_filter,
    )
    return _entry(row) if row else None


async def reversed_total(conn: asyncpg.Connection, entry_id: uuid.UUID) -> Decimal:
    value = await conn.fetchval(
        "SELECT coalesce(sum(amount), 0) FROM credit_transactions "
        "WHERE reverses_id = $1 AND status = 'completed'",
        entry_id,
    )
    return Decimal(value)


async def list_entries(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    *,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Entry]:
    """Newest first, keyset-paged on (created_at, id)."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM credit_transactions
        WHERE client_id = $1
          AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
        ORDER BY created_at DESC, id DESC LIMIT $4
        """,
        client_id,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [_entry(r) for r in rows]


@dataclass(frozen=True)
class Balance:
    client_id: uuid.UUID
    currency: str
    balance: Decimal
    credit_limit: Decimal
    billing_mode: str
    status: str
    suspension_reason: str | None


async def client_balance(
    conn: asyncpg.Connection, client_id: uuid.UUID, *, lock: bool = False
) -> Balance | None:
    row = await conn.fetchrow(
        "SELECT id, currency, balance, credit_limit, billing_mode, status, suspension_reason "
        f"FROM clients WHERE id = $1{' FOR UPDATE' if lock else ''}",
        client_id,
    )
    if row is None:
        return None
    return Balance(
        row["id"],
        row["currency"],
        row["balance"],
        row["credit_limit"],
        row["billing_mode"],
        row["status"],
        row["suspension_reason"],
    )


# -- exchange rates ---------------------------------------------------------------------------

_RATE_COLUMNS = "id, base, quote, rate, as_of, source, created_at"


@dataclass(frozen=True)
class Rate:
    id: uuid.UUID
    base: str
    quote: str
    rate: Decimal
    as_of: datetime
    source: str
    created_at: datetime


def _rate(row: Mapping[str, Any]) -> Rate:
    return Rate(**{name: row[name] for name in Rate.__dataclass_fields__})


async def create_rate(
    conn: asyncpg.Connection, base: str, quote: str, rate: Decimal, as_of: datetime, source: str
) -> Rate:
    try:
        row = await conn.fetchrow(
            f"INSERT INTO exchange_rates (base, quote, rate, as_of, source) "
            f"VALUES ($1, $2, $3, $4, $5) RETURNING {_RATE_COLUMNS}",
            base,
            quote,
            rate,
            as_of,
            source,
        )
    except asyncpg.UniqueViolationError as exc:
        from lifebox_grpc.errors import AlreadyExists

        raise AlreadyExists("this source already has a rate for that pair at that time") from exc
    assert row is not None
    return _rate(row)


async def list_rates(
    conn: asyncpg.Connection,
    *,
    base: str | None,
    quote: str | None,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Rate]:
    rows = await conn.fetch(
        f"""
        SELECT {_RATE_COLUMNS} FROM exchange_rates
        WHERE ($1::text IS NULL OR base = $1) AND ($2::text IS NULL OR quote = $2)
          AND ($3::timestamptz IS NULL OR (as_of, id) < ($3, $4::uuid))
        ORDER BY as_of DESC, id DESC LIMIT $5
        """,
        base,
        quote,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [_rate(r) for r in rows]


async def convert(
    conn: asyncpg.Connection, amount: Decimal, from_currency: str, to_currency: str, at: datetime
) -> Conversion:
    """``amount`` in ``to_currency`` at the rate in force at ``at`` (the latest ``as_of`` not
    after it; a rate quoted the other way round is inverted), rounded half up to the cent.
    FailedPrecondition when no rate was in force."""
    row = await conn.fetchrow(
        """
        SELECT id, rate, base = $1 AS direct FROM exchange_rates
        WHERE ((base = $1 AND quote = $2) OR (base = $2 AND quote = $1)) AND as_of <= $3
        ORDER BY as_of DESC, (base = $1) DESC, created_at DESC LIMIT 1
        """,
        from_currency,
        to_currency,
        at,
    )
    if row is None:
        raise FailedPrecondition(
            f"no {from_currency}/{to_currency} exchange rate was in force at {at.isoformat()}",
            reason="ERROR_REASON_FAILED_PRECONDITION",
        )
    rate = Decimal(row["rate"]) if row["direct"] else Decimal(1) / Decimal(row["rate"])
    converted = (amount * rate).quantize(CENT, rounding=ROUND_HALF_UP)
    return Conversion(amount, from_currency, row["id"], rate.quantize(Decimal("1e-10")), converted)


def ensure_found(entry: Entry | None) -> Entry:
    if entry is None:
        raise NotFound("credit transaction not found")
    return entry


# -- billing suspension ------------------------------------------------------------------------


async def suspend_for_billing(conn: asyncpg.Connection, client_id: uuid.UUID) -> bool:
    """Suspend an active client with reason billing; False when it was not active (already
    suspended, for whatever reason, or closed)."""
    status: str = await conn.execute(
        "UPDATE clients SET status = 'suspended', suspension_reason = 'billing' "
        "WHERE id = $1 AND status = 'active'",
        client_id,
    )
    return status.endswith(" 1")


async def lift_billing_suspension(conn: asyncpg.Connection, client_id: uuid.UUID) -> bool:
    """Restore a client suspended with reason billing; a staff suspension is left alone."""
    status: str = await conn.execute(
        "UPDATE clients SET status = 'active' "
        "WHERE id = $1 AND status = 'suspended' AND suspension_reason = 'billing'",
        client_id,
    )
    return status.endswith(" 1")


@dataclass(frozen=True)
class StatusEvent:
    id: int
    client_id: uuid.UUID
    from_status: str
    to_status: str
    reason: str | None
    actor: uuid.UUID | None
    note: str | None
    at: datetime


async def list_status_events(
    conn: asyncpg.Connection, client_id: uuid.UUID, *, limit: int = 100
) -> list[StatusEvent]:
    rows = await conn.fetch(
        "SELECT id, client_id, from_status, to_status, reason, actor, note, at "
        "FROM client_status_events WHERE client_id = $1 ORDER BY id DESC LIMIT $2",
        client_id,
        limit,
    )
    return [StatusEvent(**dict(r)) for r in rows]
