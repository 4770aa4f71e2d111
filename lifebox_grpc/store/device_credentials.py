"""SQL of device_credentials (migration 0043): a device's own MQTT credential."""

from __future__ import annotations

import uuid

import asyncpg

from lifebox_grpc.broker.passwords import PasswordHash


async def insert_credential(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    device_id: uuid.UUID,
    hashed: PasswordHash,
    created_by: uuid.UUID | None,
) -> uuid.UUID:
    """A live credential whose username is the device's serial (one live per device)."""
    credential_id: uuid.UUID = await conn.fetchval(
        "INSERT INTO device_credentials (client_id, device_id, username, password_hash, "
        "hash_iterations, hash_salt, hash_digest, created_by) "
        "SELECT client_id, id, serial, $3, $4, $5, $6, $7 FROM devices "
        "WHERE id = $2 AND client_id = $1 RETURNING id",
        client_id,
        device_id,
        hashed.encoded,
        hashed.iterations,
        hashed.salt,
        hashed.digest,
        created_by,
    )
    return credential_id


async def revoke_credential(
    conn: asyncpg.Connection, credential_id: uuid.UUID, revoked_by: uuid.UUID | None
) -> bool:
    status: str = await conn.execute(
        "UPDATE device_credentials SET revoked_at = now(), revoked_by = $2 "
        "WHERE id = $1 AND revoked_at IS NULL",
        credential_id,
        revoked_by,
    )
    return status == "UPDATE 1"


async def broker_entries(conn: asyncpg.Connection) -> list[tuple[str, str]]:
    """(username, $7$ hash) of every credential the broker must accept: not revoked, of a
    provisioned or active device (a provisioned one turns active with its first reading) of
    an active client. Run by the owner (every tenant)."""
    rows = await conn.fetch(
        "SELECT c.username, c.password_hash FROM device_credentials c "
        "JOIN devices d ON d.id = c.device_id AND d.client_id = c.client_id "
        "JOIN clients k ON k.id = c.client_id "
        "WHERE c.kind = 'password' AND c.revoked_at IS NULL "
        "AND d.status IN ('provisioned', 'active') "
        "AND k.status = 'active' ORDER BY c.username"
    )
    return [(r["username"], r["password_hash"]) for r in rows]
