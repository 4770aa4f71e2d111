"""Bulk registration of a tenant's devices (load tests, demos). Runs on the staff path."""

from __future__ import annotations

import uuid
from dataclasses import dataclass

import asyncpg

from lifebox_grpc.store.pool import tenant_transaction


@dataclass(frozen=True)
class Fleet:
    client_id: uuid.UUID
    devices: list[tuple[uuid.UUID, str]]  # (device id, serial), ordered by serial


_CLIENT = """
INSERT INTO clients (name, slug) VALUES ($1, $2)
ON CONFLICT (slug) DO UPDATE SET name = EXCLUDED.name
RETURNING id
"""

_DEVICES = """
INSERT INTO devices (client_id, serial, name, status)
SELECT $1, $2 || lpad(i::text, 6, '0'), 'device ' || i, $4 FROM generate_series(1, $3) i
ON CONFLICT (serial) DO NOTHING
"""

_LIST = """
SELECT id, serial FROM devices
WHERE client_id = $1 AND serial LIKE $2 || '%' AND serial ~ ('^' || $2 || '[0-9]{6}$')
ORDER BY serial
"""


async def register_fleet(
    conn: asyncpg.Connection,
    *,
    name: str,
    slug: str,
    serial_prefix: str,
    count: int,
    status: str = "active",
) -> Fleet:
    """A tenant (made or reused by slug) with devices ``<prefix>000001`` … (idempotent)."""
    async with tenant_transaction(conn, None, staff=True):
        client_id = await conn.fetchval(_CLIENT, name, slug)
        await conn.execute(_DEVICES, client_id, serial_prefix, count, status)
        rows = await conn.fetch(_LIST, client_id, serial_prefix)
    return Fleet(client_id, [(r["id"], r["serial"]) for r in rows])
