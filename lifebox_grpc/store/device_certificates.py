"""What the broker's mutual-TLS listener and revocation list are made of (migration 0081, on
0046's broker_device_credentials rule, so one definition says who the broker admits).
Certificate credentials themselves are made in store/device_credentials.py."""

from __future__ import annotations

import asyncpg

from lifebox_grpc.broker.tls import Revocation


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
