"""SQL of certificate credentials (migration 0080): devices that sign in with an X.509
certificate, and what the broker's mutual-TLS listener and revocation list are made of."""

from __future__ import annotations

import uuid

import asyncpg

from lifebox_grpc.broker.tls import IssuedCertificate, Revocation

# A credential the broker lets in: not revoked, of a provisioned or active device (a
# provisioned one turns active with its first reading) of an active client.
_ADMITTED = "d.status IN ('provisioned', 'active') AND k.status = 'active'"
_JOINS = (
    "FROM device_credentials c "
    "JOIN devices d ON d.id = c.device_id AND d.client_id = c.client_id "
    "JOIN clients k ON k.id = c.client_id "
)


async def insert_certificate(
    conn: asyncpg.Connection,
    client_id: uuid.UUID,
    device_id: uuid.UUID,
    issued: IssuedCertificate,
    created_by: uuid.UUID | None,
) -> uuid.UUID | None:
    """A live certificate credential whose username is the device's serial (the CN the
    certificate was issued for); None when the device is not the client's."""
    credential_id: uuid.UUID | None = await conn.fetchval(
        "INSERT INTO device_credentials (client_id, device_id, username, kind, "
        "certificate_serial, certificate_fingerprint, certificate_not_after, created_by) "
        "SELECT client_id, id, serial, 'certificate', $3, $4, $5, $6 FROM devices "
        "WHERE id = $2 AND client_id = $1 RETURNING id",
        client_id,
        device_id,
        issued.serial_number,
        issued.fingerprint,
        issued.not_after,
        created_by,
    )
    return credential_id


async def admitted_certificate_users(conn: asyncpg.Connection) -> list[str]:
    """Serials the mutual-TLS listener's ACL names: live certificates the broker admits.
    Run by the owner (every tenant)."""
    rows = await conn.fetch(
        f"SELECT c.username {_JOINS}WHERE c.kind = 'certificate' AND c.revoked_at IS NULL "
        f"AND c.certificate_not_after > now() AND {_ADMITTED} ORDER BY c.username"
    )
    return [r["username"] for r in rows]


async def revocations(conn: asyncpg.Connection) -> list[Revocation]:
    """Every unexpired certificate the broker must refuse: revoked ones for good, and those
    of a device or client that is not active on hold (they leave the list on resumption).
    Run by the owner (every tenant)."""
    rows = await conn.fetch(
        f"SELECT c.certificate_serial, c.revoked_at IS NOT NULL AS revoked, "
        f"COALESCE(c.revoked_at, greatest(d.updated_at, k.updated_at)) AS since {_JOINS}"
        f"WHERE c.kind = 'certificate' AND c.certificate_not_after > now() "
        f"AND (c.revoked_at IS NOT NULL OR NOT ({_ADMITTED})) ORDER BY c.certificate_serial"
    )
    return [Revocation(r["certificate_serial"], r["since"], not r["revoked"]) for r in rows]
