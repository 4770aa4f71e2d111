"""SQL of certificate credentials (migrations 0080, 0081): devices that sign in with an X.509
certificate, and what the broker's mutual-TLS listener and revocation list are made of (the
broker_device_credentials rule of 0046, so one definition says who the broker admits)."""

from __future__ import annotations

import uuid

import asyncpg

from lifebox_grpc.broker.tls import IssuedCertificate, Revocation


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
    """Serials the mutual-TLS listener's ACL names: the unexpired certificates the broker
    admits. Run on the staff path (every tenant)."""
    rows = await conn.fetch(
        "SELECT username FROM broker_device_credentials WHERE kind = 'certificate' "
        "AND certificate_not_after > now() ORDER BY username"
    )
    return [r["username"] for r in rows]


async def revocations(conn: asyncpg.Connection) -> list[Revocation]:
    """Every unexpired certificate the broker must refuse (0081). Staff path."""
    rows = await conn.fetch(
        "SELECT certificate_serial, revoked, since FROM broker_refused_certificates "
        "ORDER BY certificate_serial"
    )
    return [Revocation(r["certificate_serial"], r["since"], not r["revoked"]) for r in rows]
