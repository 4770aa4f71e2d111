"""Cards saved at Fawry (fawry_customer_data): all their SQL.

LifeBox never sees a card number: a row holds the token Fawry issued, the last four digits
and the brand, as Fawry's List Card Tokens API reports them for the client's customer
profile. :func:`sync_cards` makes the rows of a profile match Fawry's list.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

import asyncpg

_COLUMNS = "id, client_id, customer_profile_id, card_token, card_last_four, card_brand, created_at"


@dataclass(frozen=True)
class Card:
    id: uuid.UUID
    client_id: uuid.UUID
    customer_profile_id: str
    token: str
    last_four: str
    brand: str
    created_at: datetime


def _card(row: Mapping[str, Any]) -> Card:
    return Card(
        row["id"],
        row["client_id"],
        row["customer_profile_id"],
        row["card_token"],
        row["card_last_four"],
        row["card_brand"] or "",
        row["created_at"],
    )


async def sync_cards(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    profile_id: str,
    cards: Sequence[tuple[str, str, str]],
) -> list[Card]:
    """Make the client's saved cards under ``profile_id`` be ``cards`` (token, last four,
    brand): new ones added, last four and brand refreshed, ones Fawry no longer lists gone."""
    tokens = [c[0] for c in cards]
    await conn.execute(
        "DELETE FROM fawry_customer_data WHERE client_id = $1 AND customer_profile_id = $2 "
        "AND card_token IS NOT NULL AND NOT (card_token = ANY($3::text[]))",
        client_id,
        profile_id,
        tokens,
    )
    for token, last_four, brand in cards:
        await conn.execute(
            """
            INSERT INTO fawry_customer_data (client_id, customer_profile_id, card_token,
                card_last_four, card_brand)
            VALUES ($1, $2, $3, $4, $5)
            ON CONFLICT ON CONSTRAINT fawry_customer_data_card_key DO UPDATE
              SET card_last_four = EXCLUDED.card_last_four, card_brand = EXCLUDED.card_brand
            """,
            client_id,
            profile_id,
            token,
            last_four,
            brand or None,
        )
    return await list_cards(conn, client_id)


async def list_cards(conn: asyncpg.Connection, client_id: uuid.UUID) -> list[Card]:
    rows = await conn.fetch(
        f"SELECT {_COLUMNS} FROM fawry_customer_data WHERE client_id = $1 "
        "AND card_token IS NOT NULL ORDER BY created_at, id",
        client_id,
    )
    return [_card(r) for r in rows]


async def get_card(
    conn: asyncpg.Connection, card_id: uuid.UUID, client_filter: uuid.UUID | None
) -> Card | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM fawry_customer_data WHERE id = $1 AND card_token IS NOT NULL "
        "AND ($2::uuid IS NULL OR client_id = $2)",
        card_id,
        client_filter,
    )
    return _card(row) if row else None


async def delete_card(conn: asyncpg.Connection, card_id: uuid.UUID) -> None:
    await conn.execute("DELETE FROM fawry_customer_data WHERE id = $1", card_id)
