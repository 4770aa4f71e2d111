"""Clients (tenants): all their SQL.

A ``clients`` row is its own tenant for row-level security (policy on ``id``), so a tenant
principal sees only its own client even through a query that forgets ``client_filter``.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from decimal import Decimal
from typing import Any

import asyncpg

from lifebox_grpc.errors import AlreadyExists

_COLUMNS = "id, name, slug, status, billing_mode, currency, balance, created_at, updated_at"


@dataclass(frozen=True)
class Client:
    """A tenant as stored."""

    id: uuid.UUID
    name: str
    slug: str
    status: str
    billing_mode: str
    currency: str
    balance: Decimal
    created_at: datetime
    updated_at: datetime


def _client(row: Mapping[str, Any]) -> Client:
    return Client(**{name: row[name] for name in Client.__dataclass_fields__})


def _slug_taken(exc: asyncpg.UniqueViolationError) -> AlreadyExists:
    return AlreadyExists("a client with this slug already exists")


async def create_client(
    conn: asyncpg.Connection, *, name: str, slug: str, billing_mode: str, currency: str
) -> Client:
    try:
        row = await conn.fetchrow(
            f"INSERT INTO clients (name, slug, billing_mode, currency) VALUES ($1, $2, $3, $4) "
            f"RETURNING {_COLUMNS}",
            name,
            slug,
            billing_mode,
            currency,
        )
    except asyncpg.UniqueViolationError as exc:
        raise _slug_taken(exc) from exc
    assert row is not None
    return _client(row)


async def get_client(
    conn: asyncpg.Connection, client_id: uuid.UUID, client_filter: uuid.UUID | None
) -> Client | None:
    row = await conn.fetchrow(
        f"SELECT {_COLUMNS} FROM clients WHERE id = $1 AND ($2::uuid IS NULL OR id = $2)",
        client_id,
        client_filter,
    )
    return _client(row) if row else None


async def list_clients(
    conn: asyncpg.Connection, client_filter: uuid.UUID | None, *, after: str | None, limit: int
) -> list[Client]:
    """Clients ordered by slug, starting after slug ``after``."""
    rows = await conn.fetch(
        f"""
        SELECT {_COLUMNS} FROM clients
        WHERE ($1::uuid IS NULL OR id = $1) AND ($2::text IS NULL OR slug > $2)
        ORDER BY slug LIMIT $3
        """,
        client_filter,
        after,
        limit,
    )
    return [_client(row) for row in rows]


_UPDATABLE = frozenset({"name", "slug", "billing_mode", "currency", "status"})


async def update_client(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    client_filter: uuid.UUID | None,
    changes: Mapping[str, object],
) -> Client | None:
    """Apply ``changes`` (column → value); None when the client is not in scope."""
    unknown = set(changes) - _UPDATABLE
    if unknown:
        raise ValueError(f"not updatable: {sorted(unknown)}")
    if not changes:
        return await get_client(conn, client_id, client_filter)
    names = sorted(changes)
    sets = ", ".join(f"{name} = ${i + 3}" for i, name in enumerate(names))
    try:
        row = await conn.fetchrow(
            f"UPDATE clients SET {sets} WHERE id = $1 AND ($2::uuid IS NULL OR id = $2) "
            f"RETURNING {_COLUMNS}",
            client_id,
            client_filter,
            *(changes[name] for name in names),
        )
    except asyncpg.UniqueViolationError as exc:
        raise _slug_taken(exc) from exc
    return _client(row) if row else None


async def client_status(conn: asyncpg.Connection, client_id: uuid.UUID) -> str | None:
    """The client's status as this transaction's scope sees it (None: not visible)."""
    value = await conn.fetchval("SELECT status FROM clients WHERE id = $1", client_id)
    return str(value) if value is not None else None


async def list_all_clients_unscoped(conn: asyncpg.Connection) -> list[Client]:
    """Every client row the transaction can see, with no scope filter at all.

    Exists for the isolation test: it proves row-level security alone keeps a tenant
    to itself when a query forgets its scope. Never call it from a handler.
    """
    rows = await conn.fetch(f"SELECT {_COLUMNS} FROM clients ORDER BY slug")
    return [_client(row) for row in rows]
