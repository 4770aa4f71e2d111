"""Fawry charges and payment notifications: all their SQL.

A notification is stored before anything else happens to it; among verified notifications
(fawry_ref_number, order_status) is unique (migration 0087), so a retried one finds its
first copy, while a forged one (signature invalid) never blocks the genuine one.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from lifebox_grpc.store.billing_cards import Card

_CHARGE_COLUMNS = (
    "id, client_id, merchant_ref_number, fawry_ref_number, payment_method, amount, currency, "
    "status, paid_amount, refunded_amount, customer_profile_id, description, expires_at, "
    "credit_transaction_id, created_by, created_at, updated_at, card_id, card_last_four, "
    "card_brand, redirect_url, checkout"
)


@dataclass(frozen=True)
class Charge:
    id: uuid.UUID
    client_id: uuid.UUID
    merchant_ref_number: str
    fawry_ref_number: str | None
    payment_method: str
    amount: Decimal
    currency: str
    status: str
    paid_amount: Decimal | None
    refunded_amount: Decimal
    customer_profile_id: str
    description: str | None
    expires_at: datetime | None
    credit_transaction_id: uuid.UUID | None
    created_by: uuid.UUID | None
    created_at: datetime
    updated_at: datetime
    card_id: uuid.UUID | None = None
    card_last_four: str | None = None
    card_brand: str | None = None
    redirect_url: str | None = None
    checkout: bool = False


def _charge(row: Mapping[str, Any]) -> Charge:
    return Charge(**{name: row[name] for name in Charge.__dataclass_fields__})


async def create_charge(
    conn: asyncpg.Connection,
    *,
    client_id: uuid.UUID,
    merchant_ref_number: str,
    payment_method: str,
    amount: Decimal,
    currency: str,
    customer_profile_id: str,
    description: str,
    expires_at: datetime | None,
    created_by: uuid.UUID | None,
    card: Card | None = None,
    checkout: bool = False,
) -> Charge:
    row = await conn.fetchrow(
        f"""
        INSERT INTO fawry_charges (client_id, merchant_ref_number, payment_method, amount,
            currency, customer_profile_id, description, expires_at, created_by, card_id,
            card_last_four, card_brand, checkout)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13)
        RETURNING {_CHARGE_COLUMNS}
        """,
        client_id,
        merchant_ref_number,
        payment_method,
        amount,
        currency,
        customer_profile_id,
        description,
        expires_at,
        created_by,
        card.id if card else None,
        card.last_four if card else None,
        card.brand if card else None,
        checkout,
    )
    assert row is not None
    return _charge(row)


async def set_reference(
    conn: asyncpg.Connection,
    charge_id: uuid.UUID,
    fawry_ref_number: str | None,
    redirect_url: str | None = None,
) -> Charge:
    """Record what Fawry answered the charge with: its reference number (the outlet number;
    none yet for a hosted checkout) and where the payer must go, if anywhere."""
    row = await conn.fetchrow(
        "UPDATE fawry_charges SET fawry_ref_number = coalesce($2, fawry_ref_number), "
        f"redirect_url = $3 WHERE id = $1 RETURNING {_CHARGE_COLUMNS}",
        charge_id,
        fawry_ref_number,
        redirect_url,
    )
    assert row is not None
    return _charge(row)


async def get_charge(
    conn: asyncpg.Connection,
    charge_id: uuid.UUID,
    client_filter: uuid.UUID | None,
    *,
    lock: bool = False,
) -> Charge | None:
    row = await conn.fetchrow(
        f"SELECT {_CHARGE_COLUMNS} FROM fawry_charges "
        f"WHERE id = $1 AND ($2::uuid IS NULL OR client_id = $2){' FOR UPDATE' if lock else ''}",
        charge_id,
        client_filter,
    )
    return _charge(row) if row else None


async def charge_by_merchant_ref(
    conn: asyncpg.Connection, merchant_ref_number: str, *, lock: bool = False
) -> Charge | None:
    row = await conn.fetchrow(
        f"SELECT {_CHARGE_COLUMNS} FROM fawry_charges WHERE merchant_ref_number = $1"
        f"{' FOR UPDATE' if lock else ''}",
        merchant_ref_number,
    )
    return _charge(row) if row else None


async def list_charges(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    *,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Charge]:
    rows = await conn.fetch(
        f"""
        SELECT {_CHARGE_COLUMNS} FROM fawry_charges WHERE client_id = $1
          AND ($2::timestamptz IS NULL OR (created_at, id) < ($2, $3::uuid))
        ORDER BY created_at DESC, id DESC LIMIT $4
        """,
        client_id,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [_charge(r) for r in rows]


async def update_charge(
    conn: asyncpg.Connection, charge_id: uuid.UUID, changes: Mapping[str, object]
) -> Charge:
    allowed = {
        "status",
        "paid_amount",
        "refunded_amount",
        "credit_transaction_id",
        "fawry_ref_number",
    }
    assert set(changes) <= allowed, set(changes) - allowed
    names = sorted(changes)
    sets = ", ".join(f"{n} = ${i + 2}" for i, n in enumerate(names))
    row = await conn.fetchrow(
        f"UPDATE fawry_charges SET {sets} WHERE id = $1 RETURNING {_CHARGE_COLUMNS}",
        charge_id,
        *(changes[n] for n in names),
    )
    assert row is not None
    return _charge(row)


# -- notifications ---------------------------------------------------------------------------


@dataclass(frozen=True)
class StoredNotification:
    id: uuid.UUID
    duplicate: bool  # a verified copy was stored before
    processed: bool  # ... and has been processed


async def record_notification(
    conn: asyncpg.Connection,
    *,
    raw_body: str,
    fawry_ref_number: str,
    merchant_ref_number: str | None,
    order_status: str,
    order_amount: Decimal | None,
    payment_amount: Decimal | None,
    fawry_fees: Decimal | None,
    payment_method: str | None,
    signature_valid: bool,
    outcome: str | None = None,
) -> StoredNotification:
    """Store a notification as received (its own transaction: a forged or broken one stays
    stored whatever happens next)."""
    row = await conn.fetchrow(
        """
        INSERT INTO fawry_payment_notifications (raw_body, fawry_ref_number, merchant_ref_number,
            order_status, order_amount, payment_amount, fawry_fees, payment_method,
            signature_valid, outcome, processed_at)
        VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                CASE WHEN $9 THEN NULL ELSE now() END)
        ON CONFLICT (fawry_ref_number, order_status) WHERE signature_valid DO NOTHING
        RETURNING id
        """,
        raw_body,
        fawry_ref_number,
        merchant_ref_number,
        order_status,
        order_amount,
        payment_amount,
        fawry_fees,
        payment_method,
        signature_valid,
        outcome,
    )
    if row is not None:
        return StoredNotification(row["id"], False, not signature_valid)
    first = await conn.fetchrow(
        "SELECT id, processed_at FROM fawry_payment_notifications "
        "WHERE fawry_ref_number = $1 AND order_status = $2 AND signature_valid",
        fawry_ref_number,
        order_status,
    )
    assert first is not None
    return StoredNotification(first["id"], True, first["processed_at"] is not None)


async def lock_notification(conn: asyncpg.Connection, notification_id: uuid.UUID) -> bool:
    """Lock a notification for processing; False when it is processed already."""
    processed = await conn.fetchval(
        "SELECT processed_at IS NOT NULL FROM fawry_payment_notifications WHERE id = $1 FOR UPDATE",
        notification_id,
    )
    return not processed


async def finish_notification(
    conn: asyncpg.Connection,
    notification_id: uuid.UUID,
    *,
    client_id: uuid.UUID | None,
    charge_id: uuid.UUID | None,
    outcome: str,
    error: str | None,
) -> None:
    await conn.execute(
        "UPDATE fawry_payment_notifications SET processed_at = now(), client_id = $2, "
        "charge_id = $3, outcome = $4, processing_error = $5 WHERE id = $1",
        notification_id,
        client_id,
        charge_id,
        outcome,
        error,
    )


async def note_failure(conn: asyncpg.Connection, notification_id: uuid.UUID, error: str) -> None:
    """Record why processing has not happened yet (Fawry will retry)."""
    await conn.execute(
        "UPDATE fawry_payment_notifications SET processing_error = $2 WHERE id = $1",
        notification_id,
        error[:500],
    )


@dataclass(frozen=True)
class Notification:
    id: uuid.UUID
    client_id: uuid.UUID | None
    charge_id: uuid.UUID | None
    fawry_ref_number: str
    merchant_ref_number: str | None
    order_status: str
    payment_amount: Decimal | None
    signature_valid: bool
    received_at: datetime
    processed_at: datetime | None
    outcome: str | None
    processing_error: str | None


async def list_notifications(
    conn: asyncpg.Connection,
    client_filter: uuid.UUID | None,
    *,
    before: tuple[datetime, uuid.UUID] | None,
    limit: int,
) -> list[Notification]:
    rows = await conn.fetch(
        """
        SELECT id, client_id, charge_id, fawry_ref_number, merchant_ref_number, order_status,
               payment_amount, signature_valid, received_at, processed_at, outcome,
               processing_error
        FROM fawry_payment_notifications
        WHERE ($1::uuid IS NULL OR client_id = $1)
          AND ($2::timestamptz IS NULL OR (received_at, id) < ($2, $3::uuid))
        ORDER BY received_at DESC, id DESC LIMIT $4
        """,
        client_filter,
        before[0] if before else None,
        before[1] if before else None,
        limit,
    )
    return [Notification(**dict(r)) for r in rows]
